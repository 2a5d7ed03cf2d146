"""The compose file and the docs say only what the server actually understands."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from session_server.settings import known_variables, load_settings

ROOT = Path(__file__).parent.parent


def test_compose_sets_only_variables_the_settings_know() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = compose["services"]["session-server"]["environment"]
    unknown = sorted(set(env) - known_variables())
    assert not unknown, f"docker-compose.yml sets variables the server ignores: {unknown}"
    assert {"REDIS_URL", "SESSION_SERVER_API_KEYS", "SESSION_SERVER_MASTER_KEYS"} <= set(env)


def test_compose_keeps_redis_data_on_a_volume_with_aof() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "always"  # nothing acknowledged is lost
    assert any(v.endswith(":/data") for v in redis["volumes"])
    assert "coturn" in compose["services"]


def _compose_inputs(text: str) -> set[str]:
    """The variables compose substitutes from its environment: ${VAR}, ${VAR:-default}, ${VAR:?hint}, $VAR."""
    text = text.replace("$$", "")  # an escaped dollar reaches the container as it is
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text)) | set(re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", text))


def test_every_compose_input_is_documented_in_operations() -> None:
    inputs = _compose_inputs((ROOT / "docker-compose.yml").read_text())
    assert {"PUBLIC_IP", "TURN_SECRET", "REDIS_PASSWORD"} <= inputs  # the parser still sees the file's inputs
    doc = (ROOT / "docs" / "operations.md").read_text()
    section = re.search(r"^### docker-compose inputs\s*$(.*?)(?=^##)", doc, re.M | re.S)
    assert section, "docs/operations.md needs a 'docker-compose inputs' section"
    missing = sorted(v for v in inputs if f"`{v}`" not in section.group(1))
    assert not missing, f"docker-compose.yml reads inputs docs/operations.md does not describe: {missing}"


def test_the_session_server_shares_the_host_network_instead_of_publishing_media_ports() -> None:
    """The SFU binds ephemeral UDP ports: only host networking lets media reach it."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    server = compose["services"]["session-server"]
    assert server.get("network_mode") == "host"
    assert not server.get("ports"), "published ports are meaningless (and refused) with host networking"
    # From the host's network the compose service names do not resolve: Redis is reached on loopback,
    # where the redis service publishes it, and on loopback only.
    redis_url = urlsplit(server["environment"]["REDIS_URL"])
    assert (redis_url.hostname, redis_url.port) == ("127.0.0.1", 6379)
    assert compose["services"]["redis"]["ports"] == ["127.0.0.1:6379:6379"]
    # Browsers, not the server's network, reach STUN/TURN: coturn is addressed by the public IP.
    ice = server["environment"]["SESSION_SERVER_ICE_SERVERS"]
    assert "coturn" not in ice and "${PUBLIC_IP}:3478" in ice
    assert compose["services"]["coturn"]["network_mode"] == "host"


def test_readme_quick_start_has_exactly_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    section = re.search(r"^## Quick start\s*$(.*?)(?=^## )", text, re.M | re.S)
    assert section, "README.md needs a Quick start section"
    blocks = [b for b in re.findall(r"```(?:sh|bash)?\n(.*?)```", section.group(1), re.S) if b.strip()]
    assert len(blocks) == 2
    assert "session-server" in blocks[0] and "scripts/test" in blocks[1]
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("exec ./scripts/test")


# --- the compose file as docker compose reads it ---------------------------------------------------------

SAMPLE_INPUTS = {
    "PUBLIC_IP": "203.0.113.10", "PUBLIC_HOST": "sessions.example.org", "TURN_HOST": "turn.example.org",
    "REDIS_PASSWORD": "0123456789abcdef0123456789abcdef", "TURN_SECRET": "fedcba9876543210fedcba9876543210",
    "SESSION_SERVER_API_KEYS": "backend:" + "b" * 64,
    "SESSION_SERVER_MASTER_KEYS": "m1:" + base64.b64encode(b"\x07" * 32).decode(),
    "SESSION_SERVER_ACTIVE_MASTER_KEY_ID": "m1",
}


def _interpolate(value: Any, inputs: dict[str, str]) -> Any:
    """What compose does to the file's strings: ${VAR}, ${VAR:-default}, ${VAR:?hint}, $$ for a dollar."""
    if isinstance(value, dict):
        return {k: _interpolate(v, inputs) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, inputs) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2) or "", match.group(3) or ""
        if name in inputs and inputs[name] != "":
            return inputs[name]
        if op == ":?":
            raise AssertionError(f"compose would stop: {name} missing ({arg})")
        return _interpolate(arg, inputs) if op == ":-" else ""

    out = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:[-?])((?:[^{}]|\{[^{}]*\})*))?\}", one,
                 value.replace("$$", "\0"))
    return out.replace("\0", "$")


def _compose(inputs: dict[str, str] | None = None) -> dict[str, Any]:
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    rendered: dict[str, Any] = _interpolate(raw, SAMPLE_INPUTS if inputs is None else inputs)
    return rendered


def test_the_server_environment_of_the_compose_file_is_accepted_by_the_settings() -> None:
    env = _compose()["services"]["session-server"]["environment"]
    settings = load_settings({k: str(v) for k, v in env.items()})
    assert settings.host == "127.0.0.1"  # only the proxy, on this host, reaches the HTTP port
    assert settings.metrics_host == "127.0.0.1" and settings.metrics_port not in (None, settings.port)
    assert settings.public_base_url == "https://sessions.example.org"
    assert settings.redis_url == "redis://:0123456789abcdef0123456789abcdef@127.0.0.1:6379/0"


def test_redis_has_a_password_and_the_server_starts_once_redis_is_healthy() -> None:
    services = _compose()["services"]
    redis, server = services["redis"], services["session-server"]
    command = redis["command"]
    assert command[command.index("--requirepass") + 1] == SAMPLE_INPUTS["REDIS_PASSWORD"]
    assert urlsplit(server["environment"]["REDIS_URL"]).password == SAMPLE_INPUTS["REDIS_PASSWORD"]
    # its health check authenticates (redis-cli reads REDISCLI_AUTH) and expects the answer to a PING
    assert redis["environment"]["REDISCLI_AUTH"] == SAMPLE_INPUTS["REDIS_PASSWORD"]
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])
    assert server["depends_on"]["redis"]["condition"] == "service_healthy"
    check = " ".join(server["healthcheck"]["test"])
    assert "http://127.0.0.1:8000/readyz" in check
    assert services["proxy"]["depends_on"]["session-server"]["condition"] == "service_healthy"
    with pytest.raises(AssertionError, match="REDIS_PASSWORD"):
        _compose({k: v for k, v in SAMPLE_INPUTS.items() if k != "REDIS_PASSWORD"})


def _nginx_templates() -> str:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = [v.split(":")[0] for v in compose["services"]["proxy"]["volumes"] if v.startswith("./deploy/")]
    assert mounts, "the proxy takes its configuration from deploy/"
    return "\n".join(p.read_text() for m in mounts for p in sorted((ROOT / m).glob("*.template")))


def test_the_proxy_terminates_tls_and_passes_websocket_upgrades_to_the_server() -> None:
    services = _compose()["services"]
    proxy, server = services["proxy"], services["session-server"]
    assert proxy["network_mode"] == "host" and proxy["image"].startswith("nginx:")
    conf = _nginx_templates()
    upstream = f"{server['environment']['SESSION_SERVER_HOST']}:{server['environment']['SESSION_SERVER_PORT']}"
    assert f"proxy_pass http://{upstream};" in conf
    assert "proxy_set_header Upgrade $http_upgrade;" in conf
    assert "proxy_set_header Connection $connection_upgrade;" in conf and "proxy_http_version 1.1;" in conf
    assert re.search(r"listen 127\.0\.0\.1:(\d+) ssl;", conf) and "ssl_certificate " in conf
    assert "listen 443;" in conf and "ssl_preread on;" in conf
    assert "location = /metrics" in conf  # never through the proxy


def test_turn_is_offered_over_udp_tcp_and_tls_on_443_with_credentials_coturn_checks() -> None:
    services = _compose()["services"]
    env, coturn = services["session-server"]["environment"], services["coturn"]
    urls = load_settings({k: str(v) for k, v in env.items()}).turn_urls
    assert "turn:203.0.113.10:3478?transport=udp" in urls and "turn:203.0.113.10:3478?transport=tcp" in urls
    assert "turns:turn.example.org:443?transport=tcp" in urls
    args = coturn["command"]
    assert "--use-auth-secret" in args and f"--static-auth-secret={SAMPLE_INPUTS['TURN_SECRET']}" in args
    assert env["SESSION_SERVER_TURN_SECRET"] == SAMPLE_INPUTS["TURN_SECRET"]
    assert "--lt-cred-mech" not in args and not any(a.startswith("--user=") for a in args)  # no shared password
    assert "--denied-peer-ip=127.0.0.0-127.255.255.255" in args  # never a relay into this host
    # 443 for the TURN host name reaches coturn's TLS port, through the proxy's TLS passthrough
    tls_port = next(a.split("=", 1)[1] for a in args if a.startswith("--tls-listening-port="))
    conf = _nginx_templates()
    assert re.search(r"\$\{TURN_HOST\}\s+127\.0\.0\.1:" + tls_port + ";", conf)
    assert any(a.startswith("--cert=") for a in args) and any(a.startswith("--pkey=") for a in args)


# --- the image's data directory -------------------------------------------------------------------------


def _dockerfile() -> list[tuple[str, str]]:
    """The instructions of the Dockerfile's last stage: (INSTRUCTION, arguments), continuations joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    instructions = [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]
    last = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[last:]


def test_the_image_owns_its_data_directory_for_the_user_it_runs_as() -> None:
    """Read, not built: a named volume starts as a copy of the image's directory, owner included, so the
    directory must exist in the image and belong to the user the server runs as."""
    steps = _dockerfile()
    user_at, user = next((i, args.split(":")[0]) for i, (op, args) in enumerate(steps) if op == "USER")
    data_dir = next(args.split("=", 1)[1] for op, args in steps if op == "ENV" and "SESSION_SERVER_DATA_DIR=" in args)
    runs = " && ".join(args for op, args in steps[:user_at] if op == "RUN")
    assert re.search(rf"mkdir (-p )?{re.escape(data_dir)}\b", runs), "the image creates its data directory"
    assert re.search(rf"chown {re.escape(user)}(:\S+)? {re.escape(data_dir)}\b", runs), \
        f"the data directory belongs to {user}, the user the server runs as"
    assert any(op == "VOLUME" and data_dir in args for op, args in steps)
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    server = compose["services"]["session-server"]
    assert server["environment"]["SESSION_SERVER_DATA_DIR"] == data_dir
    named = [v for v in server["volumes"] if v.endswith(f":{data_dir}")]
    assert named and named[0].split(":")[0] in compose["volumes"]  # a named volume, initialised from the image


def _docker_daemon() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


def test_the_compose_images_build_and_the_server_user_writes_the_data_volume(tmp_path: Path) -> None:
    if not _docker_daemon():
        pytest.skip("no Docker daemon on this machine: the image is checked by reading it (above)")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        if "build" not in service:
            continue
        tag = f"session-server-test-{name}"
        subprocess.run(["docker", "build", "-t", tag, str(ROOT / service["build"])], check=True, timeout=1800)
        volume = f"session-server-test-{os.getpid()}"
        try:
            done = subprocess.run(["docker", "run", "--rm", "-v", f"{volume}:/data", "--entrypoint", "sh", tag, "-c",
                                   'touch /data/probe && stat -c %U /data && id -un'],
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            owner, user = done.stdout.split()
            assert owner == user
        finally:
            subprocess.run(["docker", "volume", "rm", "-f", volume], capture_output=True, timeout=60)
