"""The typed configuration: defaults, the shipped files, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowsd.config import Config, decode_config, load_config, with_database_url
from flowsd.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def test_defaults_need_no_file() -> None:
    config = load_config(None, environ={})
    assert config == Config()
    assert config.database.url is None
    assert config.state_directory == Path(".state")


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "config").glob("*.toml")))
def test_shipped_config_files_decode(name: str) -> None:
    load_config(REPO / "config" / name, environ={})


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    file = tmp_path / "bad.toml"
    file.write_text("[database]\npool_max = 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(file, environ={})
    message = str(info.value)
    assert str(file) in message
    assert "pool_max" in message


def test_wrong_type_names_key_and_file(tmp_path: Path) -> None:
    file = tmp_path / "bad.toml"
    file.write_text('[database]\npool_max_size = "eight"\n')
    with pytest.raises(ConfigError, match=r"bad\.toml: key 'database\.pool_max_size'"):
        load_config(file, environ={})


def test_out_of_range_value_is_rejected() -> None:
    with pytest.raises(ConfigError, match="pool_min_size"):
        decode_config("[database]\npool_min_size = 0\n", source="x.toml")


def test_projection_merge_window() -> None:
    shipped = load_config(REPO / "config" / "flowsd.toml", environ={})
    assert shipped.projections.merge_seconds == Config().projections.merge_seconds == 1.0
    off = decode_config("[projections]\nmerge_seconds = 0\n", source="x.toml")
    assert off.projections.merge_seconds == 0
    with pytest.raises(ConfigError, match="merge_seconds"):
        decode_config("[projections]\nmerge_seconds = -1\n", source="x.toml")


def test_invalid_toml_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        decode_config("[database\n", source="x.toml")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml", environ={})


def test_environment_overrides_database_url(tmp_path: Path) -> None:
    file = tmp_path / "c.toml"
    file.write_text('[database]\nurl = "postgresql://file/db"\n')
    config = load_config(file, environ={"FLOWSD_DATABASE_URL": "postgresql://env/db"})
    assert config.database.url == "postgresql://env/db"
    assert with_database_url(config, "postgresql://flag/db").database.url == "postgresql://flag/db"
    assert with_database_url(config, None).database.url == "postgresql://env/db"


def test_environment_names_the_instance(tmp_path: Path) -> None:
    # systemd/flowsd@.service sets FLOWSD_INSTANCE so that instances keep separate heartbeats.
    file = tmp_path / "c.toml"
    file.write_text('[daemon]\ninstance = "from-file"\n')
    assert load_config(file, environ={}).daemon.instance == "from-file"
    assert load_config(file, environ={"FLOWSD_INSTANCE": "north@h1"}).daemon.instance == "north@h1"


def test_config_path_from_environment(tmp_path: Path) -> None:
    file = tmp_path / "c.toml"
    file.write_text('[logging]\nlevel = "debug"\n')
    assert load_config(None, environ={"FLOWSD_CONFIG": str(file)}).logging.level == "debug"


def test_state_directory_from_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/flowsd")
    assert Config().state_directory == Path("/var/lib/flowsd")
