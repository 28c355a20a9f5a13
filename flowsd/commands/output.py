"""Machine-readable output shared by the commands: one JSON document per line on stdout.

Every ``--json`` of flowsd writes through :func:`print_json`, so the documents share their
conventions: snake_case keys, times as ISO 8601 with offset, ids as strings, decimals as
strings (no float rounding), and anything else (e.g. a PostgreSQL range) as its text.
"""

from __future__ import annotations

import sys
from typing import Any

import msgspec

_ENCODER = msgspec.json.Encoder(enc_hook=str, decimal_format="string")


def to_json(document: Any) -> str:
    return _ENCODER.encode(document).decode()


def print_json(document: Any) -> None:
    sys.stdout.write(to_json(document) + "\n")
    sys.stdout.flush()
