"""EMOP codec throughput on one core: frames decoded and encoded per second.

The mix is one frame of each common kind: a prepay-balance read answer, a serial answer,
a profile-log-1 answer (98 bytes) and an event-log answer (78 bytes).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bench.common import Result, rate
from flowsd.emop import (
    Address,
    EventLogRequest,
    FrameParser,
    ProfileLogRequest,
    ReadRequest,
    Request,
    build_request,
    decode_frame,
    decode_response,
    encode_request,
    encode_response,
    object_id,
)
from flowsd.emop.records import (
    Event,
    EventId,
    EventLog,
    PrepayBalance,
    ProfileLog1,
    ProfileLog1Record,
    Record,
    Serial,
)
from flowsd.emop.records.profile import VALID

METER = Address(0x00, 0x002F41)
START = 803_088_000


def _mix() -> list[tuple[Request, Record]]:
    records = tuple(
        ProfileLog1Record(START + 1800 * i, VALID, 5_533_955 + i, 2_388_505) for i in range(4)
    )
    log1 = ProfileLog1.padded(START, records)
    events = EventLog(
        b"\xff\xff\x49",
        0,
        tuple(Event(START - 43_517 * i, EventId.DAILY_LOG_SNAPSHOT, 4) for i in range(10)),
    )
    return [
        (ReadRequest(object_id("prepay_balance")), PrepayBalance(1_523_456)),
        (ReadRequest(object_id("serial")), Serial("EML2137580826   ")),
        (ProfileLogRequest(1, START), log1),
        (EventLogRequest(0), events),
    ]


def _per_second(fn: Callable[[], int], seconds: float) -> tuple[float, int]:
    """Run ``fn`` (returns how many frames it handled) until ``seconds`` have passed."""
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        done += fn()
    return rate(done, time.perf_counter() - start), done


def run(quick: bool) -> list[Result]:
    seconds = 0.3 if quick else 2.0
    mix = _mix()
    request_frames = [build_request(request) for request, _ in mix]
    answers = [
        encode_response(frame, record, meter=METER)
        for frame, (_, record) in zip(request_frames, mix, strict=True)
    ]
    requests = [request for request, _ in mix]
    stream = b"".join(answers) * 50

    def decode_frames() -> int:
        for raw in answers:
            decode_frame(raw)
        return len(answers)

    def decode_records() -> int:
        for raw, request in zip(answers, requests, strict=True):
            decode_response(raw, request)
        return len(answers)

    def parse_stream() -> int:
        parser = FrameParser()
        count = 0
        for offset in range(0, len(stream), 1460):  # one TCP segment at a time
            count += len(parser.feed(stream[offset : offset + 1460]))
        return count

    def encode_requests() -> int:
        for request in requests:
            encode_request(request)
        return len(requests)

    def encode_answers() -> int:
        for frame, (_, record) in zip(request_frames, mix, strict=True):
            encode_response(frame, record, meter=METER)
        return len(mix)

    detail = {"mix": [type(r).__name__ for _, r in mix], "seconds_per_figure": seconds}
    results = []
    for name, fn in (
        ("frames decoded (CRC + header)", decode_frames),
        ("responses decoded to records", decode_records),
        ("frames parsed from a byte stream", parse_stream),
        ("requests encoded", encode_requests),
        ("responses encoded from records", encode_answers),
    ):
        per_second, count = _per_second(fn, seconds)
        results.append(Result("emop", name, per_second, "frames/s", {**detail, "frames": count}))
    return results
