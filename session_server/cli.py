"""`session-server`: serve (the default), mint a development token, manage keys."""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any

from . import backup
from .auth import Permission, Role, TokenAuthority
from .data_dir import check_writable
from .errors import DomainError
from .local_secrets import SecretsMissing, with_local_secrets
from .settings import Settings, SettingsError, load_settings

# Only the server makes the development secrets: a command that merely uses them (a token,
# a key rotation) run from another directory would otherwise make new ones that the server does not know.
SERVING = (None, "serve")


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {}
    if getattr(args, "host", None):
        overrides["host"] = args.host
    if getattr(args, "port", None) is not None:
        overrides["port"] = args.port
    if getattr(args, "demo", False):
        overrides["demo"] = True
    if getattr(args, "demo_cut_after", None) is not None:
        overrides["demo"] = True
        overrides["demo_cut_after_s"] = args.demo_cut_after
    settings = load_settings(os.environ, **overrides)
    if args.command == "ledger" or (args.command == "token" and settings.api_keys):
        return settings  # the ledger needs no secret; a token needs the API keys only
    serving = args.command in SERVING
    if serving:
        check_writable(settings.data_dir)  # before anything is written there: one line, not a traceback
    settings, secrets_file = with_local_secrets(settings, create=serving)
    if secrets_file is not None and serving:
        print(f"Using local development secrets from {secrets_file} "
              "(set SESSION_SERVER_API_KEYS and SESSION_SERVER_MASTER_KEYS in production).", file=sys.stderr)
    return settings


class AddressInUse(Exception):
    """The address to listen on cannot be bound; the message says which and what to do."""


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything starts: a taken port is one line, and nothing (the
    embedded Redis, the demo) has started for nothing."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise AddressInUse(f"cannot listen on {host}:{port} ({reason}); choose another with --port or "
                           "SESSION_SERVER_PORT, or stop what listens there") from None
    sock.set_inheritable(True)
    return sock


def _preflight_redis(settings: Settings) -> None:
    if settings.redis_url is None:
        return
    import redis

    from .redis_client import redacted

    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        raise SystemExit(f"error: Redis at {redacted(settings.redis_url)} is not reachable ({type(exc).__name__}). "
                         "Check REDIS_URL, or unset it to use the embedded Redis.") from None
    finally:
        client.close()


# At debug level these libraries log WebSocket frames, which carry chat text and SDP: never below info.
QUIET_BELOW_INFO = ("websockets", "uvicorn.error", "aiortc")
# aioice logs every ICE connectivity check at info, with both parties' addresses and ports (who connects
# from where): never below warning.
QUIET_BELOW_WARNING = ("aioice",)


def configure_logging(level: str) -> None:
    """The server's logging: its format and level, tokens redacted, and the libraries whose lower levels carry
    content or addresses held above them."""
    from . import log_redaction
    from .metrics import quiet_server_request_lines

    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # uvicorn's access and error logs print request lines as sent, tokens in URLs included
    log_redaction.install()
    # request lines come from our access log, by route template (uvicorn's carry raw paths and queries)
    quiet_server_request_lines()
    root = logging.getLogger().level
    for name in QUIET_BELOW_INFO:
        logging.getLogger(name).setLevel(max(logging.INFO, root))
    for name in QUIET_BELOW_WARNING:
        logging.getLogger(name).setLevel(max(logging.WARNING, root))


def serve(settings: Settings) -> int:
    import uvicorn

    from . import listener
    from .app import create_app

    configure_logging(settings.log_level)
    # tuned with what every connection it accepts inherits (listener.py: slow readers found in seconds)
    sock = listener.tune(bind(settings.host, settings.port))
    _preflight_redis(settings)
    app = create_app(settings)
    # uvloop, named rather than left to uvicorn's "auto": the media fast path is tested and benchmarked on
    # the loop it is served on (docs/media.md, "Which event loop").
    # log_level=None: the levels are configure_logging's (uvicorn's own would set its error logger, through which
    # its WebSocket protocol logs every frame at debug, back down to the server's level).
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=None, loop="uvloop",
                            ws_per_message_deflate=False, lifespan="on", server_header=False,
                            log_config=None, access_log=False, ws_max_size=64 * 1024)  # bigger frames: close 1009
    port = sock.getsockname()[1]  # the one bound: port 0 asks the system for a free one

    def announce() -> None:
        print(f"Session server listening on http://{settings.host}:{port} "
              f"(public URL {settings.base_url})", flush=True)

    server = _server_class()(config, on_started=announce)
    # Everything imported so far lives as long as the process: keep it out of the collector's full
    # passes, which otherwise pause media forwarding for tens of milliseconds.
    gc.collect()
    gc.freeze()
    # uvicorn shuts down cleanly on Ctrl-C, then raises the signal again for the default handler:
    # the way to stop a server in a terminal is not an error to print a traceback for.
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])
    return 0 if server.started else 1


def _server_class() -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server that says it listens once it does: after the lifespan started every feature
        and the socket accepts connections, never on a run that then fails."""

        def __init__(self, config: uvicorn.Config, *, on_started: Callable[[], None]) -> None:
            super().__init__(config)
            self._on_started = on_started

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                self._on_started()

    return Server


def mint(settings: Settings, args: argparse.Namespace) -> int:
    authority = TokenAuthority(settings.api_keys, max_ttl_s=settings.token_max_ttl_s,
                               role_max_ttl_s={Role.SUPPORT: settings.support_token_max_ttl_s})
    try:
        token, _ = authority.mint(sub=args.sub, name=args.name or args.sub, role=Role(args.role),
                                  ttl_s=args.ttl, grants=args.grant)
    except DomainError as exc:  # a lifetime, id, name or grant the server would refuse
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="session-server", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    for p in (parser, sub.add_parser("serve", help="serve HTTP and WebSocket (the default)")):
        p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
        p.add_argument("--port", type=int, help="port to listen on (default 8000)")
        p.add_argument("--demo", action="store_true", help="seed a demo practitioner, client and booking")
        p.add_argument("--demo-cut-after", type=int, metavar="SECONDS",
                       help="with the demo: the session starts at once and the client's camera and microphone "
                            "are cut this long after the client's media connects (shows an outage)")
    tok = sub.add_parser("token", help="mint an access token for development")
    tok.add_argument("--role", required=True, choices=[r.value for r in Role])
    tok.add_argument("--sub", required=True, help="the user id")
    tok.add_argument("--name", default="", help="the display name")
    tok.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (at most 24 h)")
    tok.add_argument("--grant", action="append", choices=[p.value for p in Permission],
                     help="narrow the token to these permissions (repeatable)")
    led = sub.add_parser("ledger", help="run the ledger's consumer and payout job in this process")
    led.add_argument("--consumer", help="the consumer's name in the group (default: <hostname>-ledger)")
    keys = sub.add_parser("keys", help="manage the master keys of the key ring")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    keys_sub.add_parser("rotate", help="re-wrap every document key under the active master key "
                                       "(safe while the server runs)")
    backup.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("backup", "restore"):  # the server's own settings, its secrets never generated
        try:
            return backup.run(load_settings(os.environ), args)
        except SettingsError as exc:
            print(f"error: invalid setting {exc}", file=sys.stderr)
            return 2
    try:
        settings = _settings(args)
    except SettingsError as exc:
        print(f"error: invalid setting {exc}", file=sys.stderr)
        return 2
    except SecretsMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "token":
            return mint(settings, args)
        if args.command == "ledger":
            from .ledger.cli import main as ledger_main

            return ledger_main(settings, args.consumer)
        if args.command == "keys":
            from .documents.keys import run_rotate

            return run_rotate(settings)
        return serve(settings)
    except Exception as exc:  # a clear last word instead of a traceback for the operator
        from .app import StartupError

        if isinstance(exc, (StartupError, AddressInUse)):
            print(f"error: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
