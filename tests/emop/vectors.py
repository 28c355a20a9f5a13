"""The reference vectors (a copy of the SPEC's ``vectors.json``) and helpers to read them."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from flowsd.emop import (
    Address,
    EventLogRequest,
    ProfileLogRequest,
    ReadRequest,
    Request,
    ThreePhaseIntervalsRequest,
    WriteRequest,
)

VECTORS_PATH = Path(__file__).parent / "data" / "vectors.json"


@functools.cache
def document() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(VECTORS_PATH.read_text())
    return data


def exchanges() -> list[tuple[str, dict[str, Any]]]:
    """(test id, exchange) for every request/response pair of every vector."""
    out = []
    for vector in document()["vectors"]:
        for index, exchange in enumerate(vector["exchanges"]):
            out.append((f"{vector['id']}#{index}", exchange))
    return out


def real_exchanges() -> list[tuple[str, dict[str, Any]]]:
    return [(f"real#{i}", e) for i, e in enumerate(document()["real_captures"]["exchanges"])]


def invalid_frames() -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = document()["invalid_frames"]
    return frames


def request_of(breakdown: dict[str, Any]) -> Request:
    """The typed request a vector's request breakdown describes."""
    name = breakdown["format_name"]
    if name == "default":
        oid = int(breakdown["object_id"], 16)
        if breakdown["read_write"] == 1:
            return WriteRequest(oid, bytes.fromhex(breakdown["payload_hex"]))
        return ReadRequest(oid)
    if name in ("profile_log_1", "profile_log_2"):
        return ProfileLogRequest(1 if name == "profile_log_1" else 2, breakdown["timestamp_u4be"])
    if name == "event_log":
        return EventLogRequest(breakdown["log_idx_byte"])
    assert name == "three_phase_profile_intervals"
    payload = bytes.fromhex(breakdown["payload_hex"])
    start, end = int.from_bytes(payload[1:5], "big"), int.from_bytes(payload[5:9], "big")
    return ThreePhaseIntervalsRequest(start, end, payload[0])


def source_of(breakdown: dict[str, Any]) -> Address:
    return Address(int(breakdown["source_device_type"], 16), int(breakdown["source_address"], 16))


def destination_of(breakdown: dict[str, Any]) -> Address:
    return Address(
        int(breakdown["destination_device_type"], 16), int(breakdown["destination_address"], 16)
    )


def expected_fields(decoded: dict[str, Any]) -> Any:
    """What ``describe_frame(...)['fields']`` must equal for a vector's ``decoded``."""
    return decoded["fields"] if "record_type" in decoded else decoded


def is_twin(decoded: dict[str, Any]) -> bool:
    return bool(decoded.get("is_twin_element", False))


def has_record(decoded: dict[str, Any] | None) -> bool:
    return decoded is not None and "note" not in decoded and "error" not in decoded
