"""``flowsd emop decode|encode`` through the real command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flowsd.cli import main
from tests.emop import vectors

BALANCE_ANSWER = "7e150021ae4200002f410501ffc80200003f1700801c"
FLOWSD = Path(sys.executable).parent / "flowsd"
RECORD_EXCHANGES = [(n, e) for n, e in vectors.exchanges() if vectors.has_record(e.get("decoded"))]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(["emop", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _decode_ok(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    status, out, err = _run(capsys, "decode", *argv)
    assert (status, err) == (0, "")
    document: dict[str, Any] = json.loads(out)
    return document


def test_decode_prints_one_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    document = _decode_ok(capsys, BALANCE_ANSWER)
    assert document["object"] == "prepay_balance"
    assert document["format"] == "default"
    assert document["read_write"] == {"name": "read", "value": 0}
    assert document["fields"] == {"balance": 1523456}
    assert (document["value"], document["unit"]) == ("15.23456", "GBP")
    frame = document["frame"]
    assert (frame["source_address"], frame["destination_address"]) == ("002f41", "21ae42")
    assert (frame["sequence"], frame["nak_code"], frame["frame_length"]) == (5, 0, 21)


@pytest.mark.parametrize(
    ("name", "exchange"), RECORD_EXCHANGES, ids=[n for n, _ in RECORD_EXCHANGES]
)
def test_decode_every_vector_response(
    capsys: pytest.CaptureFixture[str], name: str, exchange: dict[str, Any]
) -> None:
    decoded = exchange["decoded"]
    twin = ["--twin"] if vectors.is_twin(decoded) else []
    document = _decode_ok(capsys, exchange["response_frame_hex"], *twin)
    assert document["fields"] == vectors.expected_fields(decoded)


def test_twin_flag_selects_the_profile_log_2_layout(capsys: pytest.CaptureFixture[str]) -> None:
    (_, twin_exchange) = next(
        (n, e) for n, e in vectors.exchanges() if n.startswith("pub-profile_log_2-20250613T0000#")
    )
    raw = twin_exchange["response_frame_hex"]
    twin = _decode_ok(capsys, raw, "--twin")
    single = _decode_ok(capsys, raw)
    assert twin["object"] == single["object"] == "profile_log_2"
    assert len(twin["fields"]["records"]) == 2 and twin["fields"]["is_twin_element"] is True
    assert len(single["fields"]["records"]) == 3 and single["fields"]["is_twin_element"] is False


def test_decode_requests_and_write_acknowledgements(capsys: pytest.CaptureFixture[str]) -> None:
    request = _decode_ok(capsys, "7e11000000000021ae4205032fde26804ab3")
    assert request["object"] == "profile_log_1"
    assert request["fields"]["datetime"] == "2025-06-13T00:00:00+00:00"
    write = _decode_ok(capsys, "7e18000000000021ae4205018008000119060e0d2d2806fcdb")
    assert write["read_write"]["name"] == "write"
    assert write["value"] == "2025-06-14T13:45:40+00:00"
    ack = _decode_ok(capsys, "7e110021ae4200002f410501ffff0d013a85")
    assert ack["fields"] is None


def test_trailing_bytes_are_ignored(capsys: pytest.CaptureFixture[str]) -> None:
    assert _decode_ok(capsys, BALANCE_ANSWER + "7e0000")["fields"] == {"balance": 1523456}


@pytest.mark.parametrize(
    ("hex_frame", "problem"),
    [
        ("7e150021ae4200002f410501ffc80200003f17007f1c", "CRC mismatch"),
        ("7e150021ae4200002f410501ffc80200003f17", "truncated"),
        ("", "truncated"),
        ("7e1d0021ae4200002f410501ffc80200003f1700801c", "truncated: frame length 29"),
        ("7f150021ae4200002f410501ffc80200003f1700801c", "bad delimiter"),
        ("7e0b0021ae4200002f4105c02f", "bad frame length"),
        ("7e110021ae4200002f412d01ffc8020042e5", "NAK code 5"),
        ("7e130021ae4200002f410501ffc8020001029120", "prepay balance: needs 4 payload bytes"),
    ],
)
def test_invalid_frames_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], hex_frame: str, problem: str
) -> None:
    status, out, err = _run(capsys, "decode", hex_frame)
    assert status == 2
    assert out == ""
    assert err.count("\n") == 1
    assert problem in err


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = _run(capsys, "decode", "7e1z")
    assert status == 2 and "not hexadecimal" in err
    status, _, err = _run(capsys)
    assert status == 2 and "decode or encode" in err
    status, _, err = _run(capsys, "encode", "no_such_object")
    assert status == 2 and "no_such_object" in err
    status, _, err = _run(capsys, "encode", "--profile-log", "1")
    assert status == 2 and "--at" in err
    with pytest.raises(SystemExit) as exited:
        main(["emop", "decode"])
    assert exited.value.code == 2


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["serial"], "7e11000000000021ae42050160010000c02f"),
        (["255.200.2"], "7e11000000000021ae420501ffc802000c5a"),
        (["prepay_enabled_flag", "--write", "01"], "7e12000000000021ae420501ffff0d01010124"),
        (
            ["--profile-log", "1", "--at", "2025-06-13T00:00:00Z"],
            "7e11000000000021ae4205032fde26804ab3",
        ),
        (["--event-log", "0"], "7e11000000000021ae420505ffff4900145f"),
        (
            ["--intervals", "2025-06-12T00:00", "2025-06-12T04:00"],
            "7e1a000000000021ae420514002fdcd5002fdd0d40ffffffff9e29",
        ),
        (
            ["firmware_version", "--source", "c0/6f0093", "--sequence", "1"],
            "7e1100000000c06f0093010100020100ae4a",
        ),
    ],
)
def test_encode_builds_reference_frames(
    capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    status, out, err = _run(capsys, "encode", *argv)
    assert (status, out, err) == (0, expected + "\n", "")


def test_encode_json(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _run(capsys, "encode", "serial", "--json")
    document = json.loads(out)
    assert status == 0
    assert document["hex"] == "7e11000000000021ae42050160010000c02f"
    assert document["object"] == "serial"


def test_installed_command_line() -> None:
    assert FLOWSD.exists(), "the flowsd entry point is installed in the venv"
    ok = subprocess.run(
        [str(FLOWSD), "emop", "decode", BALANCE_ANSWER], capture_output=True, text=True, check=False
    )
    assert ok.returncode == 0
    assert json.loads(ok.stdout)["fields"] == {"balance": 1523456}
    bad = subprocess.run(
        [str(FLOWSD), "emop", "decode", BALANCE_ANSWER[:-2] + "00"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stdout == ""
    # Only the last line: an unrelated import may warn on stderr in some environments.
    assert bad.stderr.splitlines()[-1].startswith("flowsd emop decode: CRC mismatch")
