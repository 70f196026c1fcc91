"""Splitting a raw query string into parameters: pure, no HTTP framework.

Faster than `urllib.parse.parse_qs` on the hot path (values are only percent-decoded when
they contain `%` or `+`) and stricter where it matters: a parameter we use that appears
twice is reported, because silently taking one of two different `id`s could record the
event on the wrong device.
"""

from __future__ import annotations

from urllib.parse import unquote_plus

# The parameters the ingress reads; every other name is ignored (PushExpress senders
# often append their own macros).
KNOWN_PARAMS = frozenset({"id", "status", "tid", "amount", "currency", "ts", "key"})


class DuplicateParameter(ValueError):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def _decode(text: str) -> str:
    if "%" in text or "+" in text:
        # errors="strict": an invalid UTF-8 escape is malformed input, not U+FFFD.
        return unquote_plus(text, errors="strict")
    return text


def split_query(query: str) -> dict[str, str]:
    """Known parameters of `query` (already str, e.g. bytes decoded as latin-1).

    Raises DuplicateParameter when a known parameter occurs more than once and
    UnicodeDecodeError when a percent-escape is not valid UTF-8. Pairs without `=` count as
    a parameter with an empty value; unknown names are dropped without decoding them.
    """
    params: dict[str, str] = {}
    for pair in query.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        if name not in KNOWN_PARAMS:
            name = _decode(name)
            if name not in KNOWN_PARAMS:
                continue
        if name in params:
            raise DuplicateParameter(name)
        params[name] = _decode(value)
    return params
