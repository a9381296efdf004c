"""Settings: frozen dataclasses from TOML, with errors that name the file and the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from vledger.config.settings import Limits, Settings, StoreSettings, load_settings, settings_from_mapping
from vledger.node.errors import SettingsError


def test_defaults_match_the_protocol() -> None:
    limits = Limits()
    assert (limits.max_content_bytes, limits.max_record_bytes, limits.max_depth) == (65_536, 81_920, 16)
    assert settings_from_mapping({}) == Settings()


def test_settings_from_mapping_builds_each_table() -> None:
    settings = settings_from_mapping(
        {"limits": {"max_content_bytes": 100, "max_depth": 4}, "store": {"read_page_size": 7}}
    )
    assert settings.limits == Limits(max_content_bytes=100, max_depth=4)
    assert settings.store == StoreSettings(read_page_size=7)


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.limits.max_depth = 3  # type: ignore[misc]


def test_an_unknown_table_is_named() -> None:
    with pytest.raises(SettingsError, match=r"node.toml: \[limitz\]: unknown table") as info:
        settings_from_mapping({"limitz": {}}, "node.toml")
    assert info.value.code == "bad_settings"


def test_an_unknown_key_is_named() -> None:
    with pytest.raises(SettingsError, match=r"node.toml: limits.max_payload: unknown key") as info:
        settings_from_mapping({"limits": {"max_payload": 1}}, "node.toml")
    assert "max_content_bytes" in str(info.value)  # the message lists the known keys


@pytest.mark.parametrize("value", [0, -1, True, False, "10", 1.5, None, [1]])
def test_a_setting_must_be_a_positive_integer(value: Any) -> None:
    with pytest.raises(SettingsError, match=r"store.group_commit_max: expected a positive integer"):
        settings_from_mapping({"store": {"group_commit_max": value}})


def test_a_broker_cap_per_address_over_the_cap_in_all_is_refused() -> None:
    """One that could never be reached: every connection would meet the cap in all first."""
    with pytest.raises(SettingsError, match=r"broker.max_connections_per_address: 9 is over max_connections \(8\)"):
        settings_from_mapping({"broker": {"max_connections": 8, "max_connections_per_address": 9}}, "node.toml")
    broker = settings_from_mapping({"broker": {"max_connections": 8, "max_connections_per_address": 8}}).broker
    assert (broker.max_connections, broker.max_connections_per_address) == (8, 8)


def test_a_broker_cap_in_all_under_the_default_per_address_cap_lowers_that_one() -> None:
    """A file that lowered only the cap in all below the default per address (256), written
    before the two were checked, still loads: the default is what could never be reached."""
    broker = settings_from_mapping({"broker": {"max_connections": 100}}, "node.toml").broker
    assert (broker.max_connections, broker.max_connections_per_address) == (100, 100)


def test_a_table_must_be_a_table() -> None:
    with pytest.raises(SettingsError, match="limits: expected a table"):
        settings_from_mapping({"limits": 5})


def test_load_settings_reads_toml(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text("[limits]\nmax_name_length = 32\n\n[store]\ngroup_commit_max = 50\n", encoding="utf-8")
    settings = load_settings(path)
    assert settings.limits == Limits(max_name_length=32)
    assert settings.store == StoreSettings(group_commit_max=50)


def test_load_settings_names_the_file_in_a_value_error(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text("[store]\nread_page_size = 0\n", encoding="utf-8")
    with pytest.raises(SettingsError, match="read_page_size") as info:
        load_settings(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "[limits\nmax_depth = ",
        "[limits]\nmax_depth = " + "9" * 5000,  # int() refuses over 4,300 digits with a bare ValueError
        "x = " + "[" * 100_000 + "]" * 100_000,  # tomllib's RecursionError
    ],
)
def test_load_settings_refuses_invalid_toml(tmp_path: Path, text: str) -> None:
    path = tmp_path / "node.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SettingsError, match="invalid TOML") as info:
        load_settings(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("name", ["missing.toml", "."])
def test_load_settings_refuses_an_unreadable_path(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    with pytest.raises(SettingsError, match="cannot read") as info:
        load_settings(path)
    assert str(path) in str(info.value)


def test_load_settings_refuses_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    """BUG (config/settings.py, ``load_settings``): tomllib.load decodes the bytes before it
    parses them, so invalid UTF-8 raises UnicodeDecodeError, which is neither OSError nor
    TOMLDecodeError and escapes as a bare traceback without the file's name."""
    path = tmp_path / "node.toml"
    path.write_bytes(b"[limits]\n# \xff\xfe\n")
    with pytest.raises(SettingsError) as info:
        load_settings(path)
    assert str(path) in str(info.value)
