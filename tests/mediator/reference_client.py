"""Run by the reference client's own interpreter (simt-emlite 1.2.12, Python 3.12/3.13), not
by the test suite: drives flowsd's mediator API through the public client, unchanged, and
prints what it saw as JSON on a ``RESULT`` line of stdout.

    python reference_client.py ADDRESS SERIAL TOKEN
"""

import json
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal

import grpc
from simt_emlite.mediator.api_prepay import EmlitePrepayAPI


def main() -> None:
    address, serial, token = sys.argv[1:4]
    api = EmlitePrepayAPI(mediator_address=address)
    seen: dict[str, object] = {}
    started = time.monotonic()
    seen["serial"] = api.serial_read(serial)
    seen["read_seconds"] = time.monotonic() - started
    seen["hardware"] = api.hardware(serial)
    seen["csq"] = api.csq(serial)
    seen["balance_before"] = str(api.prepay_balance(serial))
    api.prepay_send_token(serial, token)
    seen["balance_after"] = str(api.prepay_balance(serial))
    try:
        api.prepay_send_token(serial, token)
        seen["second_token"] = "accepted"
    except Exception as exc:  # the client wraps the gRPC error (MediatorClientException)
        cause = exc if isinstance(exc, grpc.RpcError) else exc.__context__
        code = cause.code().name if isinstance(cause, grpc.RpcError) else "?"
        seen["second_token"] = f"{code}: {type(exc).__name__}: {exc}"
    seen["balance_after_second"] = str(api.prepay_balance(serial))
    api.clock_time_write(serial)
    seen["clock"] = api.clock_time_read(serial).isoformat()
    started = time.monotonic()
    api.tariffs_future_write(
        serial,
        datetime(2026, 7, 1, tzinfo=UTC),
        Decimal("0.61234"),
        Decimal("0.24681"),
        Decimal("12.5"),
        Decimal("7.25"),
        Decimal("0.45"),
    )
    seen["tariff_write_seconds"] = time.monotonic() - started
    future = api.tariffs_future_read(serial)
    seen["future"] = (
        {k: str(v) for k, v in vars(future).items()} if hasattr(future, "__dict__") else str(future)
    )
    print("RESULT " + json.dumps(seen), flush=True)  # the client logs to stdout too


if __name__ == "__main__":
    main()
