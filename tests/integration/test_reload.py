"""SIGHUP's reload, in-process: a new poll plan applies to running sessions without resetting
the schedule slots of unchanged cadences; an invalid file changes nothing."""

from __future__ import annotations

from pathlib import Path

from flowsd.app import Daemon
from flowsd.config import load_config, with_database_url
from flowsd.events import types
from tests.integration.daemon import (
    fetchval,
    registered_fleet,
    run_config,
    running_daemon,
)
from tests.support import wait_until


async def test_reload_keeps_schedules_and_applies_the_new_plan(
    migrated_url: str, tmp_path: Path
) -> None:
    async with registered_fleet(migrated_url, 4, hardware=("EMA1.w",)) as fleet:
        path = tmp_path / "flowsd.toml"
        path.write_text(run_config(tmp_path / "state", fleet.port))
        config = with_database_url(load_config(path), migrated_url)
        async with running_daemon(config, migrated_url) as daemon:
            daemon.config_path = str(path)
            await wait_until(lambda: daemon.supervisor.statistics().polls >= 8)
            slots = _slots(daemon)
            path.write_text("[poll]\ncadences = 3\n")
            assert not daemon.reload()
            assert _slots(daemon) == slots  # a refused file changes nothing
            fresh = run_config(
                tmp_path / "state",
                fleet.port,
                single_phase=["csq_net_op", "prepay_balance"],
                daemon={"registry_reload_seconds": 1800.0},
            )
            path.write_text(fresh)
            assert daemon.reload()
            # What reload applies live is what the daemon's config says is in force.
            assert daemon.meter_list.registry.reload_seconds == 1800.0
            assert daemon.config.daemon.registry_reload_seconds == 1800.0
            assert daemon.config.daemon.drain_seconds == config.daemon.drain_seconds
            after = _slots(daemon)
            for meter_id, (phase, first_due, last_done) in slots.items():
                # The slots kept, not made again: a cadence made at the reload would have a
                # new first run pending (brought forward from the reload's time).
                assert after[meter_id][0] == phase
                assert after[meter_id][1] in (None, first_due)
                assert after[meter_id][2] >= last_done
            balance = types.BalanceRead.TYPE_ID
            count = "SELECT count(*) FROM flows.meter_event_log WHERE event_type = $1"
            await wait_until(lambda: fetchval(migrated_url, count, balance))


def _slots(daemon: Daemon) -> dict[object, tuple[float, float | None, int]]:
    """Per meter, the "fast" cadence's phase, pending first run and last serviced slot."""
    cadences = {
        meter_id: session.schedule.cadence("fast")
        for meter_id, session in daemon.supervisor.sessions.items()
    }
    return {meter_id: (c.phase, c.first_due, c.last_done) for meter_id, c in cadences.items()}
