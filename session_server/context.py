"""What the lifespan builds and every handler reaches through `request.app.state.ctx`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import redis.asyncio as aioredis

from files.keyring import KeyRing

from .auth import TokenAuthority
from .clock import Clock
from .metrics import Metrics
from .settings import Settings
from .tasks import TaskSupervisor

if TYPE_CHECKING:
    from .bookings.service import BookingService
    from .documents.service import DocumentService
    from .ledger.service import LedgerService
    from .notifications.service import NotificationService
    from .outages.service import OutageService
    from .reschedule.service import RescheduleService
    from .rooms.service import RoomService
    from .support.board import Board
    from .support.service import SupportService


@dataclass
class AppContext:
    settings: Settings
    redis: aioredis.Redis
    redis_url: str
    tokens: TokenAuthority
    metrics: Metrics
    tasks: TaskSupervisor
    keyring: KeyRing  # master keys wrapping per-object data keys (documents, chat)
    clock: Clock  # the one source of time for services, jobs and edges (rules take `now`)
    # Features add their typed services below, set in their Feature.start().
    bookings: BookingService = field(init=False)
    notifications: NotificationService = field(init=False)
    rooms: RoomService = field(init=False)
    documents: DocumentService = field(init=False)
    outages: OutageService = field(init=False)
    ledger: LedgerService = field(init=False)
    reschedule: RescheduleService = field(init=False)
    support: SupportService = field(init=False)
    support_board: Board = field(init=False)
