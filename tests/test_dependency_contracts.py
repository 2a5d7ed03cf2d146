"""The libraries whose internals the server reaches into still look the way the code was written for."""

from __future__ import annotations

import pytest
from redis.asyncio.connection import AbstractConnection

from session_server import redis_client


def test_redis_py_still_has_what_the_command_client_overrides() -> None:
    redis_client.check_contract()


def test_a_redis_py_without_what_the_command_client_needs_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    def send_packed_command(self: object, data: object) -> None: ...

    monkeypatch.setattr(AbstractConnection, "send_packed_command", send_packed_command)
    with pytest.raises(redis_client.ContractError, match="send_packed_command"):
        redis_client.check_contract()
