"""Building one record from another that holds some of the same fields under the same names
(a snapshot of live counters, an observation of a result)."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec


def field_names(record: Any) -> tuple[str, ...]:
    """The fields of a msgspec struct or a dataclass (an instance or the class)."""
    if isinstance(record, msgspec.Struct) or (
        isinstance(record, type) and issubclass(record, msgspec.Struct)
    ):
        return record.__struct_fields__
    return tuple(field.name for field in dataclasses.fields(record))


def same_named(source: Any, target: type) -> dict[str, Any]:
    """The fields of ``source`` that ``target`` also declares, as keyword arguments for
    ``target``; dicts (counters included) are copied into plain dicts, so that what is built
    does not change with ``source``."""
    wanted = set(field_names(target))
    copied: dict[str, Any] = {}
    for name in field_names(source):
        if name in wanted:
            value = getattr(source, name)
            copied[name] = dict(value) if isinstance(value, dict) else value
    return copied
