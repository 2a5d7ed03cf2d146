"""What the lifespan builds and every handler reaches through `request.app.state.ctx`."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from .auth import TokenAuthority
from .metrics import Metrics
from .settings import Settings
from .tasks import TaskSupervisor


@dataclass
class AppContext:
    settings: Settings
    redis: aioredis.Redis
    redis_url: str
    tokens: TokenAuthority
    metrics: Metrics
    tasks: TaskSupervisor
    # Features add their typed services below, set in their Feature.start().
