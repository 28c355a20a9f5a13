"""Top-up tokens as the simulator understands them.

Real tokens are encrypted; the simulator accepts any 20 ASCII digits whose first four
digits give the amount in pence (so ``make_token(2500, n)`` credits £25.00) and refuses a
token it has already applied, or one worth nothing.
"""

from __future__ import annotations

TOKEN_LENGTH = 20
_PENCE_DIGITS = 4
UNITS_PER_PENNY = 1_000  # balances are in 1e-5 GBP


def make_token(pence: int, nonce: int) -> str:
    """A token the simulator credits with ``pence`` (1..9999); ``nonce`` keeps it unique."""
    if not 1 <= pence <= 9_999 or not 0 <= nonce < 10**16:
        raise ValueError("pence must be 1..9999 and nonce 0..10^16-1")
    return f"{pence:04d}{nonce:016d}"


def token_value(payload: bytes) -> int | None:
    """The credit (1e-5 GBP) a token payload is worth, or None when it is not a token."""
    if len(payload) != TOKEN_LENGTH or not payload.isdigit():
        return None
    pence = int(payload[:_PENCE_DIGITS])
    return pence * UNITS_PER_PENNY if pence > 0 else None
