"""The one immutable settings object, built from environment variables at the entry point.

Nothing else in the project reads the environment: `load_settings(os.environ)` is called once by the
CLI (or a test, with a mapping of its own) and the result is passed down explicitly. A bad value stops
the start with a `SettingsError` that names the variable and says what it accepts.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

PREFIX = "SESSION_SERVER_"


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable and what it accepts."""

    def __init__(self, variable: str, accepts: str, value: str | None = None) -> None:
        shown = "" if value is None else f" (got {value!r})"
        super().__init__(f"{variable}: expected {accepts}{shown}")
        self.variable = variable


@dataclass(frozen=True, slots=True)
class IceServer:
    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"urls": list(self.urls)}
        if self.username is not None:
            out["username"] = self.username
        if self.credential is not None:
            out["credential"] = self.credential
        return out


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of the server. Field docs are the operations manual (see docs/operations.md)."""

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("data")
    redis_url: str | None = None  # None: start the embedded Redis under data_dir
    public_base_url: str = ""  # default derived from host and port
    # API keys: key id -> secret. The platform's backend authenticates with one; tokens are signed with it.
    api_keys: Mapping[str, str] = field(default_factory=dict)
    token_max_ttl_s: int = 24 * 3600
    # Master keys of the key ring (key id -> 32 raw bytes) and the one new data is wrapped with.
    master_keys: Mapping[str, bytes] = field(default_factory=dict)
    active_master_key_id: str = ""
    # Media: the addresses announced in ICE candidates and the ICE servers handed to clients.
    media_announce_addresses: tuple[str, ...] = ()
    # (bound address, announced address): for a host behind 1:1 NAT, which binds its private address
    media_nat_map: tuple[tuple[str, str], ...] = ()
    ice_servers: tuple[IceServer, ...] = ()
    # TURN with coturn's shared-secret REST scheme: each participant gets its own credentials at join,
    # valid until the room closes and at most `turn_ttl_s` (see session_server/turn.py).
    turn_urls: tuple[str, ...] = ()
    turn_secret: str = ""
    turn_ttl_s: int = 24 * 3600
    media_consent_timeout_s: float = 10.0
    media_silence_timeout_s: float = 5.0
    media_connect_timeout_s: float = 20.0
    # "sfu": media goes through the server; "relay": browsers connect to each other. Relay is the
    # default until the room page's SFU start-up race is fixed (see docs/media.md).
    media_mode: str = "sfu"
    # Redis client.
    redis_max_connections: int = 64
    redis_pool_timeout_s: float = 2.0
    redis_socket_timeout_s: float = 5.0
    # the embedded Redis, alive but answering no PING this long (stopped, wedged), is killed and restarted
    embedded_redis_hang_s: float = 30.0
    # HTTP limits.
    max_body_bytes: int = 1024 * 1024
    # Bookings.
    currency: str = "DZD"
    default_timezone: str = "Africa/Algiers"
    platform_commission_minor: int = 50_000  # 500.00 DZD per session
    booking_lead_time_s: int = 3600
    booking_horizon_days: int = 31
    suspend_after_idle_days: int = 90
    suspension_check_interval_s: float = 3600.0
    # Free reschedules of interrupted sessions: how many days after the offer a new time may fall (the
    # offer expires then), how long before that both parties are reminded, how often expiry is checked.
    reschedule_window_days: int = 14
    reschedule_reminder_s: int = 2 * 24 * 3600
    reschedule_check_interval_s: float = 60.0
    # Rooms and chat.
    room_open_before_s: int = 600
    room_grace_after_s: int = 900
    allowed_origins: tuple[str, ...] = ()  # empty: same origin as public_base_url only
    heartbeat_interval_s: float = 10.0
    heartbeat_timeout_s: float = 30.0
    chat_max_bytes: int = 4000
    chat_rate_per_s: float = 5.0
    chat_burst: int = 20
    chat_retention_days: int = 365
    ws_max_connections_per_user: int = 5
    ws_send_queue: int = 256
    # a socket whose reader takes nothing of what is already sent for this long is a slow reader (4008)
    ws_send_timeout_s: float = 10.0
    # Outages (session_server/outages, docs/outages.md): a party not in the room this long after the start
    # is a no-show; media down this long tells both pages; an outage longer than `interrupt` with less
    # than `min_share_pct` % of the session had is an interruption; after `giveup` the room stops waiting
    # and the verdict is written; the watch looks at live sessions this often.
    outage_no_show_s: int = 15 * 60
    outage_notify_s: float = 20.0
    outage_interrupt_s: float = 5 * 60
    outage_min_share_pct: int = 80
    outage_giveup_s: float = 10 * 60
    outage_check_interval_s: float = 1.0
    # Documents.
    document_max_bytes: int = 25 * 1024 * 1024
    document_types: tuple[str, ...] = ("application/pdf", "image/jpeg", "image/png", "text/plain")
    upload_idle_timeout_s: float = 30.0
    # Support.
    support_answer_within_s: int = 300  # the stated response time of a problem ticket
    support_push_interval_s: float = 0.25  # the board's updates are coalesced to this interval
    support_idle_logout_s: int = 900  # the board page signs out after this long without the agent's input
    support_token_max_ttl_s: int = 8 * 3600  # a support token lives at most a working shift
    # Ledger (docs/ledger.md): the consumer and payout job run in the server unless a separate
    # `session-server ledger` process runs them (then set this false on the servers).
    ledger_in_process: bool = True
    ledger_cancel_notice_hours: int = 24  # a client's cancellation this long before the start: full refund
    ledger_late_cancel_refund_percent: int = 50  # of the client's total, for a later cancellation
    ledger_late_cancel_practitioner_percent: int = 50  # of the practitioner's share, for a later cancellation
    ledger_client_no_show_refund_percent: int = 0
    ledger_complaint_window_days: int = 7
    ledger_payout_minimum_minor: int = 100_000  # 1,000.00 DZD: smaller balances wait for a later Sunday
    ledger_payout_dir: Path | None = None  # transfer files; default <data_dir>/payouts
    ledger_payout_check_interval_s: float = 60.0
    ledger_refund_dir: Path | None = None  # refund files for the payment gateway; default <data_dir>/refunds
    ledger_max_failures: int = 5  # an event that fails this often goes to the dead letter
    ledger_claim_idle_ms: int = 5_000  # a pending event idle this long is taken over (and retried)
    # Demo data on start.
    demo: bool = False
    # Demo of an outage (with `demo`): the demo session starts at once and the client's page stops sending its
    # camera and microphone this many seconds after its media connected (0: never). See docs/outages.md.
    demo_cut_after_s: int = 0
    log_level: str = "info"
    # Metrics: never open on the public port. A listener of their own (off when the port is None) and/or
    # a bearer credential that opens /metrics on the public port.
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    metrics_token: str = ""

    @property
    def base_url(self) -> str:
        return self.public_base_url or f"http://{self.host}:{self.port}"

    @property
    def origins(self) -> tuple[str, ...]:
        return self.allowed_origins or (self.base_url.rstrip("/"),)


# --- parsing -------------------------------------------------------------------------------------


def _int(name: str, raw: str, lo: int, hi: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(name, f"an integer between {lo} and {hi}", raw) from None
    if not lo <= value <= hi:
        raise SettingsError(name, f"an integer between {lo} and {hi}", raw)
    return value


def _float(name: str, raw: str, lo: float, hi: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(name, f"a number between {lo} and {hi}", raw) from None
    if not lo <= value <= hi:
        raise SettingsError(name, f"a number between {lo} and {hi}", raw)
    return value


def _bool(name: str, raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(name, "one of true/false/1/0/yes/no/on/off", raw)


def _host(name: str, raw: str) -> str:
    if raw == "localhost":
        return raw
    try:
        ipaddress.ip_address(raw)
    except ValueError:
        raise SettingsError(name, "an IP address to listen on, such as 127.0.0.1", raw) from None
    return raw


def _url(name: str, raw: str, schemes: tuple[str, ...]) -> str:
    parsed = urlparse(raw)
    if parsed.scheme not in schemes or not (parsed.netloc or parsed.path):
        raise SettingsError(name, f"a URL with scheme {' or '.join(schemes)}", raw)
    return raw.rstrip("/") if parsed.scheme.startswith("http") else raw


def _pairs(name: str, raw: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in raw.split(","))):
        kid, sep, secret = item.partition(":")
        if not sep or not kid or not secret:
            raise SettingsError(name, "comma-separated key_id:secret pairs", "<hidden>")
        out[kid] = secret
    return out


def _api_keys(name: str, raw: str) -> dict[str, str]:
    keys = _pairs(name, raw)
    for kid, secret in keys.items():
        if len(secret) < 32:
            raise SettingsError(name, f"secrets of at least 32 characters (key {kid!r} is shorter)")
    return keys


def _master_keys(name: str, raw: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for kid, b64 in _pairs(name, raw).items():
        try:
            key = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != 32:
            raise SettingsError(name, f"key_id:base64 pairs of 32-byte keys (key {kid!r} is not)")
        out[kid] = key
    return out


def _addresses(name: str, raw: str) -> tuple[str, ...]:
    out = []
    for item in filter(None, (p.strip() for p in raw.split(","))):
        try:
            out.append(str(ipaddress.ip_address(item)))
        except ValueError:
            raise SettingsError(name, "comma-separated IP addresses", item) from None
    return tuple(out)


def _nat_map(name: str, raw: str) -> tuple[tuple[str, str], ...]:
    accepts = "comma-separated private=public IP address pairs"
    out = []
    for item in filter(None, (p.strip() for p in raw.split(","))):
        private, sep, public = item.partition("=")
        if not sep:
            raise SettingsError(name, accepts, item)
        try:
            out.append((str(ipaddress.ip_address(private.strip())), str(ipaddress.ip_address(public.strip()))))
        except ValueError:
            raise SettingsError(name, accepts, item) from None
    return tuple(out)


def _ice_servers(name: str, raw: str) -> tuple[IceServer, ...]:
    accepts = ('a JSON list like [{"urls": ["stun:stun.example.org:3478"]}, '
               '{"urls": ["turn:turn.example.org"], "username": "u", "credential": "c"}]')
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        raise SettingsError(name, accepts, raw) from None
    if not isinstance(data, list):
        raise SettingsError(name, accepts, raw)
    out = []
    for entry in data:
        if not isinstance(entry, dict):
            raise SettingsError(name, accepts, raw)
        urls = entry.get("urls")
        if isinstance(urls, str):
            urls = [urls]
        if (not isinstance(urls, list) or not urls
                or not all(isinstance(u, str) and u.split(":", 1)[0] in ("stun", "stuns", "turn", "turns")
                           for u in urls)):
            raise SettingsError(name, accepts, raw)
        user, cred = entry.get("username"), entry.get("credential")
        if (user is None) != (cred is None):
            raise SettingsError(name, "username and credential together for a TURN server", "<hidden>")
        out.append(IceServer(tuple(urls), user, cred))
    return tuple(out)


def _turn_urls(name: str, raw: str) -> tuple[str, ...]:
    accepts = ("comma-separated turn: or turns: URLs, e.g. turn:203.0.113.10:3478?transport=udp,"
               "turns:turn.example.org:443?transport=tcp")
    out = tuple(u.strip() for u in raw.split(",") if u.strip())
    if not all(u.split(":", 1)[0] in ("turn", "turns") and len(u.split(":")) >= 2 and u.split(":")[1] for u in out):
        raise SettingsError(name, accepts, raw)
    return out


def _secret(name: str, raw: str, min_length: int) -> str:
    if len(raw) < min_length:
        raise SettingsError(name, f"a secret of at least {min_length} characters", "<hidden>")
    return raw


def _origins(name: str, raw: str) -> tuple[str, ...]:
    return tuple(_url(name, o.strip(), ("http", "https"))
                 for o in raw.split(",") if o.strip())


def _path(name: str, raw: str) -> Path:
    if not raw.strip() or "\0" in raw:
        raise SettingsError(name, "a directory path", raw)
    return Path(raw)


def _zone(name: str, raw: str) -> str:
    try:
        ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(name, "an IANA time zone such as Africa/Algiers", raw) from None
    return raw


def _currency(name: str, raw: str) -> str:
    if len(raw) != 3 or not raw.isalpha() or not raw.isupper():
        raise SettingsError(name, "an ISO 4217 currency code such as DZD", raw)
    return raw


def _types(name: str, raw: str) -> tuple[str, ...]:
    known = {"application/pdf", "image/jpeg", "image/png", "text/plain"}
    out = tuple(t.strip() for t in raw.split(",") if t.strip())
    if not out or not set(out) <= known:
        raise SettingsError(name, f"a comma-separated subset of {', '.join(sorted(known))}", raw)
    return out


def _choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    if raw not in choices:
        raise SettingsError(name, "one of " + ", ".join(choices), raw)
    return raw


def _level(name: str, raw: str) -> str:
    if raw.lower() not in ("critical", "error", "warning", "info", "debug"):
        raise SettingsError(name, "one of critical, error, warning, info, debug", raw)
    return raw.lower()


_DAY = 86400
# field name -> (parser). Variables are SESSION_SERVER_<FIELD> except REDIS_URL.
_PARSERS: dict[str, Any] = {
    "host": _host,
    "port": lambda n, r: _int(n, r, 0, 65535),
    "data_dir": _path,
    "redis_url": lambda n, r: _url(n, r, ("redis", "rediss", "unix")) if r else None,
    "public_base_url": lambda n, r: _url(n, r, ("http", "https")),
    "api_keys": _api_keys,
    "token_max_ttl_s": lambda n, r: _int(n, r, 60, _DAY),
    "master_keys": _master_keys,
    "active_master_key_id": lambda n, r: r.strip(),
    "media_announce_addresses": _addresses,
    "media_nat_map": _nat_map,
    "ice_servers": _ice_servers,
    "turn_urls": _turn_urls,
    "turn_secret": lambda n, r: _secret(n, r, 16) if r else "",
    "turn_ttl_s": lambda n, r: _int(n, r, 60, 7 * _DAY),
    "media_consent_timeout_s": lambda n, r: _float(n, r, 1, 300),
    "media_silence_timeout_s": lambda n, r: _float(n, r, 0.5, 300),
    "media_connect_timeout_s": lambda n, r: _float(n, r, 1, 300),
    "media_mode": lambda n, r: _choice(n, r, ("sfu", "relay")),
    "redis_max_connections": lambda n, r: _int(n, r, 2, 10_000),
    "redis_pool_timeout_s": lambda n, r: _float(n, r, 0.01, 60),
    "redis_socket_timeout_s": lambda n, r: _float(n, r, 0.1, 300),
    "embedded_redis_hang_s": lambda n, r: _float(n, r, 1, 3600),
    "max_body_bytes": lambda n, r: _int(n, r, 1024, 64 * 1024 * 1024),
    "currency": _currency,
    "default_timezone": _zone,
    "platform_commission_minor": lambda n, r: _int(n, r, 0, 10**9),
    "booking_lead_time_s": lambda n, r: _int(n, r, 0, 30 * _DAY),
    "booking_horizon_days": lambda n, r: _int(n, r, 1, 31),
    "suspend_after_idle_days": lambda n, r: _int(n, r, 1, 3650),
    "suspension_check_interval_s": lambda n, r: _float(n, r, 1, 7 * 24 * 3600),
    "reschedule_window_days": lambda n, r: _int(n, r, 1, 31),
    "reschedule_reminder_s": lambda n, r: _int(n, r, 0, 30 * _DAY),
    "reschedule_check_interval_s": lambda n, r: _float(n, r, 0.05, 3600),
    "room_open_before_s": lambda n, r: _int(n, r, 0, _DAY),
    "room_grace_after_s": lambda n, r: _int(n, r, 0, _DAY),
    "allowed_origins": _origins,
    "heartbeat_interval_s": lambda n, r: _float(n, r, 0.05, 300),
    "heartbeat_timeout_s": lambda n, r: _float(n, r, 0.1, 3600),
    "chat_max_bytes": lambda n, r: _int(n, r, 1, 60_000),
    "chat_rate_per_s": lambda n, r: _float(n, r, 0.01, 10_000),
    "chat_burst": lambda n, r: _int(n, r, 1, 100_000),
    "support_answer_within_s": lambda n, r: _int(n, r, 10, _DAY),
    "support_push_interval_s": lambda n, r: _float(n, r, 0.05, 10),
    "support_idle_logout_s": lambda n, r: _int(n, r, 60, _DAY),
    "support_token_max_ttl_s": lambda n, r: _int(n, r, 60, _DAY),
    "chat_retention_days": lambda n, r: _int(n, r, 1, 3650),
    "ws_max_connections_per_user": lambda n, r: _int(n, r, 1, 1000),
    "ws_send_queue": lambda n, r: _int(n, r, 1, 100_000),
    "ws_send_timeout_s": lambda n, r: _float(n, r, 0.05, 300),
    "outage_no_show_s": lambda n, r: _int(n, r, 0, _DAY),
    "outage_notify_s": lambda n, r: _float(n, r, 0.1, 3600),
    "outage_interrupt_s": lambda n, r: _float(n, r, 0.1, _DAY),
    "outage_min_share_pct": lambda n, r: _int(n, r, 0, 100),
    "outage_giveup_s": lambda n, r: _float(n, r, 0.1, _DAY),
    "outage_check_interval_s": lambda n, r: _float(n, r, 0.05, 60),
    "document_max_bytes": lambda n, r: _int(n, r, 1, 64 * 1024**3),
    "document_types": _types,
    "upload_idle_timeout_s": lambda n, r: _float(n, r, 0.05, 3600),
    "ledger_in_process": _bool,
    "ledger_cancel_notice_hours": lambda n, r: _int(n, r, 0, 24 * 60),
    "ledger_late_cancel_refund_percent": lambda n, r: _int(n, r, 0, 100),
    "ledger_late_cancel_practitioner_percent": lambda n, r: _int(n, r, 0, 100),
    "ledger_client_no_show_refund_percent": lambda n, r: _int(n, r, 0, 100),
    "ledger_complaint_window_days": lambda n, r: _int(n, r, 1, 365),
    "ledger_payout_minimum_minor": lambda n, r: _int(n, r, 0, 10**12),
    "ledger_payout_dir": _path,
    "ledger_refund_dir": _path,
    "ledger_payout_check_interval_s": lambda n, r: _float(n, r, 0.05, 24 * 3600),
    "ledger_max_failures": lambda n, r: _int(n, r, 1, 1000),
    "ledger_claim_idle_ms": lambda n, r: _int(n, r, 10, 3_600_000),
    "demo": _bool,
    "demo_cut_after_s": lambda n, r: _int(n, r, 0, _DAY),
    "log_level": _level,
    "metrics_host": _host,
    "metrics_port": lambda n, r: _int(n, r, 0, 65535) if r.strip() else None,
    "metrics_token": lambda n, r: _secret(n, r, 32) if r else "",
}


def variable_name(field_name: str) -> str:
    return "REDIS_URL" if field_name == "redis_url" else PREFIX + field_name.upper()


def known_variables() -> frozenset[str]:
    return frozenset(variable_name(f.name) for f in fields(Settings))


def load_settings(env: Mapping[str, str], **overrides: Any) -> Settings:
    """Build and validate settings from `env` (only SESSION_SERVER_* and REDIS_URL are read)."""
    known = known_variables()
    unknown = sorted(k for k in env if k.startswith(PREFIX) and k not in known)
    if unknown:
        raise SettingsError(unknown[0], "one of the documented variables (see docs/operations.md)")
    values: dict[str, Any] = {}
    for f in fields(Settings):
        name = variable_name(f.name)
        if name in env:
            values[f.name] = _PARSERS[f.name](name, env[name])
    values.update(overrides)
    settings = Settings(**values)
    _check_together(settings)
    return settings


def _check_together(s: Settings) -> None:
    if s.master_keys and s.active_master_key_id not in s.master_keys:
        raise SettingsError(variable_name("active_master_key_id"),
                            "the id of one of the keys in SESSION_SERVER_MASTER_KEYS",
                            s.active_master_key_id)
    if s.outage_giveup_s < max(s.outage_interrupt_s, s.outage_notify_s):
        raise SettingsError(variable_name("outage_giveup_s"),
                            "at least SESSION_SERVER_OUTAGE_INTERRUPT_S and SESSION_SERVER_OUTAGE_NOTIFY_S",
                            str(s.outage_giveup_s))
    if bool(s.turn_urls) != bool(s.turn_secret):
        raise SettingsError(variable_name("turn_secret"),
                            "to be set together with SESSION_SERVER_TURN_URLS (both or neither)")
    if s.metrics_port is not None and s.metrics_port != 0 and s.metrics_port == s.port:
        raise SettingsError(variable_name("metrics_port"), "a port other than SESSION_SERVER_PORT",
                            str(s.metrics_port))
    if s.heartbeat_timeout_s <= s.heartbeat_interval_s:
        raise SettingsError(variable_name("heartbeat_timeout_s"),
                            "a value larger than SESSION_SERVER_HEARTBEAT_INTERVAL_S",
                            str(s.heartbeat_timeout_s))
