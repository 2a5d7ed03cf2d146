"""`session-server`: serve (the default), mint a development token, manage keys."""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import sys
from collections.abc import Sequence

from .auth import Permission, Role, TokenAuthority
from .local_secrets import with_local_secrets
from .settings import Settings, SettingsError, load_settings


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {}
    if getattr(args, "host", None):
        overrides["host"] = args.host
    if getattr(args, "port", None) is not None:
        overrides["port"] = args.port
    if getattr(args, "demo", False):
        overrides["demo"] = True
    settings = load_settings(os.environ, **overrides)
    settings, generated = with_local_secrets(settings)
    if generated and args.command in (None, "serve"):
        print(f"Using local development secrets from {settings.data_dir}/local-secrets.json "
              "(set SESSION_SERVER_API_KEYS and SESSION_SERVER_MASTER_KEYS in production).", file=sys.stderr)
    return settings


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


def serve(settings: Settings) -> int:
    import uvicorn

    from . import log_redaction
    from .app import create_app

    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # uvicorn's access and error logs print request lines as sent, tokens in URLs included
    log_redaction.install()
    # At debug level these libraries log WebSocket frames, which carry chat text and SDP: never below info.
    for noisy in ("websockets", "uvicorn.error", "aioice", "aiortc"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, logging.getLogger().level))
    _preflight_redis(settings)
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                            ws_per_message_deflate=False, lifespan="on", server_header=False,
                            log_config=None, ws_max_size=64 * 1024)  # bigger frames: close 1009
    server = uvicorn.Server(config)
    # Everything imported so far lives as long as the process: keep it out of the collector's full
    # passes, which otherwise pause media forwarding for tens of milliseconds.
    gc.collect()
    gc.freeze()
    print(f"Session server listening on http://{settings.host}:{settings.port} "
          f"(public URL {settings.base_url})", flush=True)
    # uvicorn shuts down cleanly on Ctrl-C, then raises the signal again for the default handler:
    # the way to stop a server in a terminal is not an error to print a traceback for.
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    return 0 if server.started else 1


def mint(settings: Settings, args: argparse.Namespace) -> int:
    authority = TokenAuthority(settings.api_keys, max_ttl_s=settings.token_max_ttl_s)
    token, _ = authority.mint(sub=args.sub, name=args.name or args.sub, role=Role(args.role),
                              ttl_s=args.ttl, grants=args.grant)
    print(token)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="session-server", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    for p in (parser, sub.add_parser("serve", help="serve HTTP and WebSocket (the default)")):
        p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
        p.add_argument("--port", type=int, help="port to listen on (default 8000)")
        p.add_argument("--demo", action="store_true", help="seed a demo practitioner, client and booking")
    tok = sub.add_parser("token", help="mint an access token for development")
    tok.add_argument("--role", required=True, choices=[r.value for r in Role])
    tok.add_argument("--sub", required=True, help="the user id")
    tok.add_argument("--name", default="", help="the display name")
    tok.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (at most 24 h)")
    tok.add_argument("--grant", action="append", choices=[p.value for p in Permission],
                     help="narrow the token to these permissions (repeatable)")
    keys = sub.add_parser("keys", help="manage the master keys of the key ring")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    keys_sub.add_parser("rotate", help="re-wrap every document key under the active master key "
                                       "(safe while the server runs)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = _settings(args)
    except SettingsError as exc:
        print(f"error: invalid setting {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "token":
            return mint(settings, args)
        if args.command == "keys":
            from .documents.keys import run_rotate

            return run_rotate(settings)
        return serve(settings)
    except Exception as exc:  # a clear last word instead of a traceback for the operator
        from .app import StartupError

        if isinstance(exc, StartupError):
            print(f"error: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
