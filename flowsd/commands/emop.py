"""``flowsd emop``: decode a frame given in hex, or build a request frame by hand.

``flowsd emop decode HEX [--twin]`` prints one JSON object on stdout. An invalid frame or a
NAK prints one line on stderr and exits with status 2.
``flowsd emop encode OBJECT [--write HEX]`` (plus ``--profile-log``, ``--event-log``,
``--intervals`` for the other formats) prints the request frame in hex.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import UTC, datetime
from typing import Any

from flowsd.emop import (
    ANY_METER,
    REFERENCE_CLIENT,
    Address,
    EmopError,
    EventLogRequest,
    NakError,
    ProfileLogRequest,
    ReadRequest,
    Request,
    ThreePhaseIntervalsRequest,
    WriteRequest,
    build_request,
    decode_frame,
    encode_frame,
)
from flowsd.emop.frame import REFERENCE_SEQUENCE
from flowsd.emop.objects import parse_object_ref
from flowsd.emop.units import to_emop_seconds
from flowsd.emop.view import describe_frame
from flowsd.errors import UserError

_HEX_SEPARATORS = re.compile(r"[\s:_-]")
_ADDRESS = re.compile(r"([0-9a-fA-F]{2})/([0-9a-fA-F]{6})")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "emop",
        help="decode or build EMOP frames",
        description="Decode an EMOP frame given in hex, or build a request frame by hand.",
    )
    commands = parser.add_subparsers(dest="emop_command", metavar="{decode,encode}")
    parser.set_defaults(handler=_missing_subcommand)

    decode = commands.add_parser("decode", help="decode one frame given in hex; JSON on stdout")
    decode.add_argument("hex", metavar="HEX", help="the frame, hex (spaces and colons allowed)")
    decode.add_argument(
        "--twin", action="store_true", help="profile log 2 in the twin-element layout (C1.w)"
    )
    decode.set_defaults(handler=_decode)

    encode = commands.add_parser("encode", help="build a request frame; hex on stdout")
    encode.add_argument(
        "object",
        metavar="OBJECT",
        nargs="?",
        help="object name (SPEC appendix), 6 hex digits or a.b.c; a read unless --write",
    )
    kind = encode.add_mutually_exclusive_group()
    kind.add_argument("--write", metavar="HEX", help="write OBJECT with this payload")
    kind.add_argument(
        "--profile-log", type=int, choices=(1, 2), help="profile log request (needs --at)"
    )
    kind.add_argument("--event-log", type=int, metavar="INDEX", help="event log block 0..9")
    kind.add_argument(
        "--intervals",
        nargs=2,
        metavar=("START", "END"),
        help="three-phase interval request between two ISO times",
    )
    encode.add_argument("--at", metavar="TIME", help="profile log start, ISO time (UTC if naive)")
    encode.add_argument("--profile", type=int, default=0, help="three-phase profile number")
    encode.add_argument("--source", default=str(REFERENCE_CLIENT), help="TT/AAAAAA")
    encode.add_argument("--destination", default=str(ANY_METER), help="TT/AAAAAA")
    encode.add_argument("--sequence", type=int, default=REFERENCE_SEQUENCE, help="0..7")
    encode.add_argument("--json", action="store_true", help="print the frame decoded, as JSON")
    encode.set_defaults(handler=_encode)


def _missing_subcommand(args: argparse.Namespace) -> int:
    raise UserError("give a sub-command: decode or encode (see flowsd emop --help)")


def _hex_bytes(text: str, what: str) -> bytes:
    cleaned = _HEX_SEPARATORS.sub("", text)
    if cleaned.lower().startswith("0x"):
        cleaned = cleaned[2:]
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        raise UserError(f"{what} is not hexadecimal: {text!r}") from None


def _print_json(document: dict[str, Any]) -> None:
    print(json.dumps(document, ensure_ascii=False))


def _decode(args: argparse.Namespace) -> int:
    raw = _hex_bytes(args.hex, "HEX")
    try:
        frame = decode_frame(raw)
        if frame.nak_code:
            oid = None
            if len(frame.data) >= 4:
                oid = int.from_bytes(frame.data[1:4], "big")
            raise NakError(frame.nak_code, oid)
        document = describe_frame(frame, twin=args.twin)
    except EmopError as exc:
        print(f"flowsd emop decode: {exc}", file=sys.stderr)
        return 2
    _print_json(document)
    return 0


def _address(text: str, what: str) -> Address:
    match = _ADDRESS.fullmatch(text)
    if not match:
        raise UserError(f"{what} must look like 00/21ae42 (type/address in hex): {text!r}")
    return Address(int(match.group(1), 16), int(match.group(2), 16))


def _moment(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(f"not an ISO date/time: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return to_emop_seconds(moment)


def _request(args: argparse.Namespace) -> Request:
    if args.profile_log is not None:
        if args.at is None:
            raise UserError("--profile-log needs --at TIME")
        return ProfileLogRequest(args.profile_log, _moment(args.at))
    if args.event_log is not None:
        return EventLogRequest(args.event_log)
    if args.intervals is not None:
        start, end = (_moment(t) for t in args.intervals)
        return ThreePhaseIntervalsRequest(start, end, args.profile)
    if args.object is None:
        raise UserError("give OBJECT, or one of --profile-log, --event-log, --intervals")
    oid = parse_object_ref(args.object)
    if args.write is not None:
        return WriteRequest(oid, _hex_bytes(args.write, "--write payload"))
    return ReadRequest(oid)


def _encode(args: argparse.Namespace) -> int:
    try:
        request = _request(args)
        frame = build_request(
            request,
            source=_address(args.source, "--source"),
            destination=_address(args.destination, "--destination"),
            sequence=args.sequence,
        )
        wire = encode_frame(frame)
    except EmopError as exc:
        raise UserError(str(exc)) from None
    if args.json:
        _print_json({"hex": wire.hex(), **describe_frame(frame)})
    else:
        print(wire.hex())
    return 0
