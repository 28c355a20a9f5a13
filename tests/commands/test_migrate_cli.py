"""`flowsd migrate` from the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowsd.cli import main


def test_migrate_then_up_to_date(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate", "--database-url", database_url]) == 0
    assert "migrated" in capsys.readouterr().out
    assert main(["migrate", "--database-url", database_url]) == 0
    assert "is up to date" in capsys.readouterr().out


def test_unreachable_database_is_one_line_and_status_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = "postgresql://flowsd:secret@127.0.0.1:9/flows"
    assert main(["migrate", "--database-url", url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flowsd migrate: cannot connect to postgresql://flowsd:***@127.0.0.1:9")
    assert err.count("\n") == 1
    assert "secret" not in err


def test_config_file_and_environment_select_the_database(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "flowsd.toml"
    config.write_text('[database]\nurl = "postgresql://nobody@127.0.0.1:9/none"\n')
    monkeypatch.setenv("FLOWSD_DATABASE_URL", database_url)
    assert main(["migrate", "--config", str(config)]) == 0
    assert "migrated" in capsys.readouterr().out


@pytest.mark.parametrize(
    "command",
    [["migrate"], ["status"], ["replay"], ["verify"], ["projections", "status"]],
)
def test_without_a_url_only_demo_may_start_the_embedded_server(
    command: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("FLOWSD_DATABASE_URL", raising=False)
    monkeypatch.delenv("FLOWSD_CONFIG", raising=False)
    config = tmp_path / "flowsd.toml"
    config.write_text(f'[state]\ndirectory = "{tmp_path / "state"}"\n')
    assert main([*command, "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--database-url" in err and "FLOWSD_DATABASE_URL" in err and "[database] url" in err
    assert not (tmp_path / "state" / "pg").exists()
