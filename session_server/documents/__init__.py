"""Documents: encrypted at rest, streamed, shared in a session and with many clients."""

from __future__ import annotations

from starlette.routing import BaseRoute

from session_server.context import AppContext

from . import api
from .service import DocumentService, KeyRingBeacon


class DocumentsFeature:
    name = "documents"

    def routes(self) -> list[BaseRoute]:
        return api.routes()

    def __init__(self) -> None:
        self._beacon: KeyRingBeacon | None = None

    async def start(self, ctx: AppContext) -> None:
        service = DocumentService.from_settings(ctx.redis, ctx.keyring, ctx.settings, ctx.clock)
        await service.start()
        ctx.documents = service
        self._beacon = KeyRingBeacon(ctx.redis, ctx.keyring)
        await self._beacon.announce()
        ctx.tasks.every("documents-keyring-beacon", self._beacon.interval_s, self._beacon.announce)

    async def stop(self, ctx: AppContext) -> None:
        if self._beacon is not None:
            await self._beacon.withdraw()
