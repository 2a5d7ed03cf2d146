"""Settings are read once from the environment and a bad value stops the start with a clear message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from session_server.settings import SettingsError, known_variables, load_settings


def test_defaults_listen_on_loopback_with_embedded_redis() -> None:
    s = load_settings({})
    assert (s.host, s.port, s.redis_url) == ("127.0.0.1", 8000, None)
    assert s.base_url == "http://127.0.0.1:8000"


def test_values_are_parsed_into_typed_fields() -> None:
    s = load_settings({
        "SESSION_SERVER_PORT": "9001",
        "SESSION_SERVER_API_KEYS": "a:" + "x" * 32 + ",b:" + "y" * 40,
        "SESSION_SERVER_MEDIA_ANNOUNCE_ADDRESSES": "203.0.113.7, 127.0.0.1",
        "SESSION_SERVER_ICE_SERVERS": '[{"urls": "stun:stun.example.org:3478"},'
                                      ' {"urls": ["turn:t.example.org"], "username": "u", "credential": "c"}]',
        "REDIS_URL": "redis://127.0.0.1:6379/3",
        "SESSION_SERVER_DEMO": "yes",
        "SESSION_SERVER_SUSPENSION_CHECK_INTERVAL_S": "600",
        "SESSION_SERVER_RESCHEDULE_WINDOW_DAYS": "7",
        "SESSION_SERVER_RESCHEDULE_REMINDER_S": "3600",
    })
    assert s.port == 9001 and s.demo is True
    assert (s.reschedule_window_days, s.reschedule_reminder_s) == (7, 3600)
    assert s.suspension_check_interval_s == 600.0
    assert set(s.api_keys) == {"a", "b"}
    assert s.media_announce_addresses == ("203.0.113.7", "127.0.0.1")
    assert s.ice_servers[1].as_json() == {"urls": ["turn:t.example.org"], "username": "u", "credential": "c"}
    assert s.redis_url == "redis://127.0.0.1:6379/3"


@pytest.mark.parametrize(("variable", "value", "accepts"), [
    ("SESSION_SERVER_PORT", "eighty", "an integer between 0 and 65535"),
    ("SESSION_SERVER_PORT", "70000", "an integer between 0 and 65535"),
    ("SESSION_SERVER_HOST", "my host", "an IP address"),
    ("REDIS_URL", "http://example.org", "a URL with scheme redis"),
    ("SESSION_SERVER_API_KEYS", "nocolon", "key_id:secret pairs"),
    ("SESSION_SERVER_API_KEYS", "k:short", "at least 32 characters"),
    ("SESSION_SERVER_MASTER_KEYS", "k:bm90MzJieXRlcw==", "32-byte keys"),
    ("SESSION_SERVER_ICE_SERVERS", "stun:x", "a JSON list"),
    ("SESSION_SERVER_ICE_SERVERS", '[{"urls": ["http://x"]}]', "a JSON list"),
    ("SESSION_SERVER_MEDIA_ANNOUNCE_ADDRESSES", "not-an-ip", "IP addresses"),
    ("SESSION_SERVER_MEDIA_NAT_MAP", "10.0.0.5", "private=public IP address pairs"),
    ("SESSION_SERVER_MEDIA_NAT_MAP", "10.0.0.5=example.org", "private=public IP address pairs"),
    ("SESSION_SERVER_DEFAULT_TIMEZONE", "Mars/Olympus", "an IANA time zone"),
    ("SESSION_SERVER_CURRENCY", "dinar", "ISO 4217"),
    ("SESSION_SERVER_DEMO", "maybe", "true/false"),
    ("SESSION_SERVER_DOCUMENT_TYPES", "application/x-msdownload", "subset of"),
    ("SESSION_SERVER_BOOKING_HORIZON_DAYS", "90", "between 1 and 31"),
    ("SESSION_SERVER_TOKEN_MAX_TTL_S", "172800", "between 60 and 86400"),
    ("SESSION_SERVER_SUSPENSION_CHECK_INTERVAL_S", "0", "between 1"),
    ("SESSION_SERVER_RESCHEDULE_WINDOW_DAYS", "0", "between 1 and 31"),
    ("SESSION_SERVER_RESCHEDULE_CHECK_INTERVAL_S", "0", "between 0.05"),
    ("SESSION_SERVER_PORTT", "8000", "one of the documented variables"),
])
def test_a_bad_value_names_the_variable_and_what_it_accepts(variable: str, value: str, accepts: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({variable: value})
    assert str(info.value).startswith(variable + ":")
    assert accepts in str(info.value)
    assert info.value.variable == variable


def test_secrets_are_never_echoed_in_errors() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"SESSION_SERVER_API_KEYS": "k:tooshortsecret"})
    assert "tooshortsecret" not in str(info.value)


def test_settings_that_only_make_sense_together_are_checked() -> None:
    with pytest.raises(SettingsError, match="SESSION_SERVER_ACTIVE_MASTER_KEY_ID"):
        load_settings({"SESSION_SERVER_MASTER_KEYS": "k1:" + "A" * 43 + "=",
                       "SESSION_SERVER_ACTIVE_MASTER_KEY_ID": "k9"})
    with pytest.raises(SettingsError, match="SESSION_SERVER_HEARTBEAT_TIMEOUT_S"):
        load_settings({"SESSION_SERVER_HEARTBEAT_INTERVAL_S": "10", "SESSION_SERVER_HEARTBEAT_TIMEOUT_S": "5"})


def test_settings_are_immutable() -> None:
    s = load_settings({})
    with pytest.raises(AttributeError):
        s.port = 1  # type: ignore[misc]


def test_every_variable_is_documented_in_operations() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "operations.md").read_text()
    missing = sorted(v for v in known_variables() if v not in doc)
    assert not missing, f"undocumented settings: {missing}"


def test_the_cli_refuses_to_start_with_a_bad_setting(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "session_server.cli", "serve"],
        env={"SESSION_SERVER_PORT": "eighty", "SESSION_SERVER_DATA_DIR": str(tmp_path), "PATH": "/usr/bin"},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "SESSION_SERVER_PORT" in result.stderr and "integer" in result.stderr


def test_the_cli_exits_with_a_clear_error_when_redis_is_unreachable(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "session_server.cli", "serve", "--port", "0"],
        env={"REDIS_URL": "redis://127.0.0.1:1/0", "SESSION_SERVER_DATA_DIR": str(tmp_path), "PATH": "/usr/bin"},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert "Redis at redis://127.0.0.1:1/0 is not reachable" in result.stderr


@pytest.mark.parametrize(("env", "announced"), [
    ({}, ("127.0.0.1",)),  # the default: listening on loopback, as the demo does
    ({"SESSION_SERVER_HOST": "::1"}, ("127.0.0.1",)),
    ({"SESSION_SERVER_HOST": "localhost"}, ("127.0.0.1",)),
    ({"SESSION_SERVER_HOST": "0.0.0.0"}, ()),  # reachable from elsewhere: the machine's interfaces
    ({"SESSION_SERVER_HOST": "0.0.0.0", "SESSION_SERVER_MEDIA_ANNOUNCE_ADDRESSES": "203.0.113.7"}, ("203.0.113.7",)),
    ({"SESSION_SERVER_MEDIA_ANNOUNCE_ADDRESSES": "198.51.100.2,203.0.113.7"}, ("198.51.100.2", "203.0.113.7")),
    # behind 1:1 NAT: bind the private address (the public one is announced in its place)
    ({"SESSION_SERVER_HOST": "0.0.0.0", "SESSION_SERVER_MEDIA_NAT_MAP": "10.0.0.5=203.0.113.7"}, ("10.0.0.5",)),
])
def test_media_is_announced_where_the_servers_browsers_can_reach_it(
        env: dict[str, str], announced: tuple[str, ...]) -> None:
    from session_server.rooms.media_bridge import media_config

    assert media_config(load_settings(env)).announce_addresses == announced


def test_behind_one_to_one_nat_the_public_address_is_announced_for_the_private_one() -> None:
    from session_server.rooms.media_bridge import media_config

    nat = "10.0.0.5=203.0.113.7, 10.0.0.6 = 203.0.113.8"
    config = media_config(load_settings({"SESSION_SERVER_MEDIA_NAT_MAP": nat}))
    assert config.nat_map == (("10.0.0.5", "203.0.113.7"), ("10.0.0.6", "203.0.113.8"))
    assert config.announce_addresses == ("10.0.0.5", "10.0.0.6")
