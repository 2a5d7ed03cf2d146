"""A feature plugs its routes and its startup into the app without the app knowing its insides."""

from __future__ import annotations

from typing import Protocol

from starlette.routing import BaseRoute

from .context import AppContext


class Feature(Protocol):
    name: str

    def routes(self) -> list[BaseRoute]:
        """HTTP and WebSocket routes of this feature."""
        ...

    async def start(self, ctx: AppContext) -> None:
        """Set this feature's services on `ctx` and spawn its loops with `ctx.tasks`."""
        ...

    async def stop(self, ctx: AppContext) -> None:
        """Drain: finish or hand over what is in flight. Loops are cancelled after every stop()."""
        ...
