"""Event codes: which codes exist, which belong to the system, and deposit ordinals.

The system codes are `install` (every device has it from its first postback), `reg` and `dep`.
Every deposit is numbered: the first is `dep`, the n-th (n >= 2) also sets `dep_<n>`. The
processor derives `dep_<n>`; nobody may post one or name a custom event like one.
"""

from __future__ import annotations

import re

# Event codes: 1-64 of [A-Za-z0-9_]. Install ids and tids: 1-128 printable ASCII without spaces.
# The *_RE are matched whole (fullmatch: `$` would also pass a trailing newline); the anchored
# *_PATTERN spell the same for JSON Schema / OpenAPI (pydantic).
EVENT_CODE_RE = re.compile(r"[A-Za-z0-9_]{1,64}")
TOKEN_RE = re.compile(r"[\x21-\x7e]{1,128}")  # install ids and tids
EVENT_CODE_PATTERN = f"^{EVENT_CODE_RE.pattern}$"
INSTALL_ID_PATTERN = f"^{TOKEN_RE.pattern}$"
MAX_CODE_CHARS = 64
MAX_TID_CHARS = 128

INSTALL, REG, DEP = "install", "reg", "dep"
SYSTEM_EVENTS: tuple[str, ...] = (INSTALL, REG, DEP)
# System events have the fixed ids 1, 2, 3; custom event ids start at FIRST_CUSTOM_ID.
SYSTEM_EVENT_IDS: dict[str, int] = {INSTALL: 1, REG: 2, DEP: 3}
FIRST_CUSTOM_ID = 101

_DEPOSIT_LIKE = re.compile(r"dep_[0-9]+", re.IGNORECASE)
_ORDINAL = re.compile(r"dep_([2-9]|[1-9][0-9]{1,8})")


def is_event_code(code: str) -> bool:
    """The shape every event code has (system, ordinal or custom)."""
    return EVENT_CODE_RE.fullmatch(code) is not None


def is_reserved_code(code: str) -> bool:
    """The one reserved-code rule: install, reg, dep and dep_<digits> belong to the system, in
    any case (`Dep_2` too). A custom event may not take one; a posted record may carry only the
    system codes themselves, never a `dep_<digits>` (see `is_postable`)."""
    return code.lower() in SYSTEM_EVENTS or _DEPOSIT_LIKE.fullmatch(code) is not None


def is_postable(code: str) -> bool:
    """Whether a postback record may carry this code as far as the system is concerned: any
    code that is not reserved, and the three system codes spelled exactly. (Which custom codes
    an account has is the catalog's business.)"""
    return code in SYSTEM_EVENTS or not is_reserved_code(code)


def deposit_code(ordinal: int) -> str:
    """The code of the n-th deposit: `dep` for the first, `dep_<n>` after."""
    if ordinal < 1:
        raise ValueError(f"a deposit ordinal starts at 1, not {ordinal}")
    return DEP if ordinal == 1 else f"{DEP}_{ordinal}"


def deposit_ordinal(code: str) -> int | None:
    """n for the derived code `dep_<n>` (n >= 2, canonical digits, at most 9 of them), else None. `dep` itself is the first deposit but not a derived code: None."""
    m = _ORDINAL.fullmatch(code)
    return int(m.group(1)) if m else None


def is_known_code(code: str, custom_codes: set[str] | frozenset[str]) -> bool:
    """A code a filter may name: a system code, a deposit ordinal or one of the account's
    custom codes (active or not)."""
    return code in SYSTEM_EVENTS or deposit_ordinal(code) is not None or code in custom_codes


def display_order(code: str) -> tuple:
    """Sort key: system codes in their order, deposit ordinals by n, then custom codes A-Z."""
    if code in SYSTEM_EVENTS:
        return (0, SYSTEM_EVENTS.index(code), "")
    n = deposit_ordinal(code)
    if n is not None:
        return (1, n, "")
    return (2, 0, code)
