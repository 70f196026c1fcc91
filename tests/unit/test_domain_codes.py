"""Event-code rules (services/domain/codes.py): shapes are matched whole."""

from services.domain.codes import TOKEN_RE, deposit_ordinal, is_event_code, is_reserved_code


def test_a_trailing_newline_is_not_part_of_any_shape():
    assert is_event_code("promo") and not is_event_code("promo\n") and not is_event_code("")
    assert deposit_ordinal("dep_2\n") is None and not is_reserved_code("promo\n")
    assert TOKEN_RE.fullmatch("a:b{c}%") and not TOKEN_RE.fullmatch("a b") and not TOKEN_RE.fullmatch("x" * 129)

