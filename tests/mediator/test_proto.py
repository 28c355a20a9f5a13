"""The committed generated module matches mediator.proto, and the contract is the reference's."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from flowsd.mediator.proto import mediator_pb2 as pb

PROTO_DIR = Path(__file__).parents[2] / "flowsd" / "mediator" / "proto"


@pytest.mark.skipif(
    importlib.util.find_spec("grpc_tools") is None, reason="grpcio-tools is not installed"
)
def test_the_generated_module_is_current(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}", f"--python_out={tmp_path}",
         f"--pyi_out={tmp_path}", str(PROTO_DIR / "mediator.proto")],
        check=True,
    )  # fmt: skip
    for name in ("mediator_pb2.py", "mediator_pb2.pyi"):
        fresh = (tmp_path / name).read_text()
        assert fresh == (PROTO_DIR / name).read_text(), f"{name} is stale: run `make proto`"


def test_services_messages_and_field_numbers_are_the_references() -> None:
    file = pb.DESCRIPTOR
    assert file.package == "simt_emlite.mediator.grpc"
    services = {
        s.name: {m.name: (m.input_type.name, m.output_type.name) for m in s.methods}
        for s in file.services_by_name.values()
    }
    assert services == {
        "EmliteMediatorService": {
            "sendRawMessage": ("SendRawMessageRequest", "SendRawMessageReply"),
            "readElement": ("ReadElementRequest", "ReadElementReply"),
            "writeElement": ("WriteElementRequest", "WriteElementReply"),
        },
        "InfoService": {
            "GetInfo": ("GetInfoRequest", "GetInfoReply"),
            "GetMeters": ("GetMetersRequest", "GetMetersReply"),
        },
    }
    fields = {
        m.name: {(f.name, f.number, f.type) for f in m.fields}
        for m in file.message_types_by_name.values()
    }
    string, bytes_, int32 = 9, 12, 5
    assert fields == {
        "SendRawMessageRequest": {("serial", 1, string), ("dataField", 2, bytes_)},
        "SendRawMessageReply": {("response", 1, bytes_)},
        "ReadElementRequest": {("serial", 1, string), ("objectId", 2, int32)},
        "ReadElementReply": {("response", 1, bytes_)},
        "WriteElementRequest": {
            ("serial", 1, string),
            ("objectId", 2, int32),
            ("payload", 3, bytes_),
        },
        "WriteElementReply": set(),
        "GetInfoRequest": {("serial", 1, string)},
        "GetInfoReply": {("json_data", 1, string)},
        "GetMetersRequest": {("esco", 1, string)},
        "GetMetersReply": {("json_meters", 1, string)},
    }
