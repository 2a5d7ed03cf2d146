"""The compose file and the docs say only what the server actually understands."""

from __future__ import annotations

from pathlib import Path

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
    assert "--appendonly" in redis["command"] and "yes" in redis["command"]
    assert any(v.endswith(":/data") for v in redis["volumes"])
    assert "coturn" in compose["services"]


def test_readme_quick_start_has_exactly_two_commands() -> None:
    import re

    text = (ROOT / "README.md").read_text()
    section = re.search(r"^## Quick start\s*$(.*?)(?=^## )", text, re.M | re.S)
    assert section, "README.md needs a Quick start section"
    blocks = [b for b in re.findall(r"```(?:sh|bash)?\n(.*?)```", section.group(1), re.S) if b.strip()]
    assert len(blocks) == 2
    assert "session-server" in blocks[0] and "scripts/test" in blocks[1]
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("exec ./scripts/test")
