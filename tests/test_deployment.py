"""The compose file and the docs say only what the server actually understands."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from session_server.settings import known_variables

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
    assert {"PUBLIC_IP", "TURN_PASSWORD"} <= inputs  # the parser still sees the file's inputs
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
