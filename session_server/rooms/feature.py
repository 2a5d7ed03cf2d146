"""The rooms feature: /v1/rooms/{booking_id}/ws, the /room/{booking_id} page, and the node's loops.

Everything it runs belongs to the app's task supervisor: its loops, every socket's tasks, the SFU's
tasks, and its shutdown, a drain step that closes the sockets (1001), stops the SFU and withdraws the
node's liveness key, in that order, before the supervisor cancels and awaits what is left."""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from signaling.bus import RoomBus
from signaling.media import MediaBridge, RelayBridge
from signaling.messages import IdSource

from ..auth import Identity
from ..context import AppContext
from ..errors import DomainError
from ..http import documented, private_page_headers
from ..redis_client import blocking_client
from .jobs import BLOCK_MS, RoomEndings, stream_tail
from .media_bridge import SfuBridge, media_config
from .observer import RoomObserver
from .service import RoomService
from .store import PUSH_PATTERN, RoomStore
from .ws import RoomSockets

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent.parent / "static" / "room"
BUS_READY_WAIT_S = 5.0
# The page holds the access token it read from the URL fragment: no third-party anything, no caching,
# no referrer, no framing.
PAGE_HEADERS = {
    **private_page_headers("default-src 'self'; script-src 'self'; style-src 'self'; "
                           "img-src 'self' data: blob:; media-src 'self' blob: mediastream:; "
                           "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'"),
    "Permissions-Policy": "camera=(self), microphone=(self)",
}


class RoomsFeature:
    name = "rooms"

    def __init__(self, observers: list[RoomObserver] | None = None, bridge: MediaBridge | None = None) -> None:
        self.observers = list(observers or [])
        self._bridge = bridge
        self._sfu: SfuBridge | None = None
        self.service: RoomService | None = None
        self.sockets: RoomSockets | None = None
        self._page = (STATIC_DIR / "room.html").read_text(encoding="utf-8")

    def routes(self) -> list[BaseRoute]:
        return [
            WebSocketRoute("/v1/rooms/{booking_id}/ws", self._socket),
            Route("/room/{booking_id}", self._room_page, methods=["GET"]),
            Mount("/static/room", StaticFiles(directory=STATIC_DIR), name="room-static"),
        ]

    async def _socket(self, ws: WebSocket) -> None:
        if self.sockets is None:
            await ws.close(1013)
            return
        await self.sockets.handle(ws)

    @documented("The session's room page (the token travels in the URL fragment)", auth=(),
                responses={200: "text/html"}, tags=("rooms",))
    async def _room_page(self, request: Request) -> Response:
        return HTMLResponse(self._page, headers=PAGE_HEADERS)

    async def start(self, ctx: AppContext) -> None:
        ids = IdSource()
        node_id = uuid.uuid4().hex
        store = RoomStore(ctx.redis, ctx.keyring, ctx.clock)
        service_ref: list[RoomService] = []

        async def open_chat(room_id: str, record: dict[str, object]) -> tuple[int, str]:
            return await service_ref[0].open_chat(room_id, record)

        bus = RoomBus(open_chat, ids)
        bridge: MediaBridge
        if self._bridge is not None:
            bridge = self._bridge
        elif ctx.settings.media_mode == "sfu":
            sfu = SfuBridge(media_config(ctx.settings), redis=ctx.redis, publish=store.publish, ids=ids,
                            node_id=node_id, namespace=store.namespace, registry=ctx.metrics.registry,
                            clock=ctx.clock, tasks=ctx.tasks)
            await sfu.start()
            self._sfu = bridge = sfu

            async def media_inbox() -> None:
                # offers for rooms whose media runs here, forwarded by the nodes their sockets are on
                client = blocking_client(ctx.redis_url, ctx.settings, block_s=3600)
                try:
                    await sfu.run_inbox(client)
                finally:
                    await client.aclose()

            ctx.tasks.spawn("rooms-media-events", sfu.run)
            ctx.tasks.spawn("rooms-media-inbox", media_inbox)
        else:
            bridge = RelayBridge(store.publish, ids)
        service = RoomService(settings=ctx.settings, store=store, bus=bus, bridge=bridge, ids=ids,
                              node_id=node_id, clock=ctx.clock,
                              connections_gauge=ctx.metrics.ws_connections.labels("room"),
                              chat_messages=ctx.metrics.chat_messages)
        for observer in self.observers:
            service.observe(observer)

        async def practitioner_suspended(pid: str) -> bool:
            bookings = getattr(ctx, "bookings", None)  # absent when the app runs without bookings
            if bookings is None:
                return False
            try:
                p = await bookings.practitioner(pid)
            except DomainError:
                return False  # no such practitioner: nothing suspended to go by
            return str(p.status) == "suspended"

        service.practitioner_suspended = practitioner_suspended

        def renew_token(identity: Identity, ttl_s: int) -> tuple[str, Identity]:
            token, _ = ctx.tokens.mint(sub=identity.sub, name=identity.name, role=identity.role,
                                       ttl_s=min(ttl_s, ctx.tokens.max_ttl_for(identity.role)), grants=identity.grants)
            return token, ctx.tokens.verify(token)

        service.renew_token = renew_token
        service_ref.append(service)
        sockets = RoomSockets(service, settings=ctx.settings, tokens=ctx.tokens, tasks=ctx.tasks)
        ready = asyncio.Event()

        async def listen() -> None:
            # a connection of its own: pub/sub holds it for as long as the node lives
            client = blocking_client(ctx.redis_url, ctx.settings, block_s=3600)
            try:
                await bus.run(client, (store.bus_pattern, PUSH_PATTERN), ready.set)
            finally:
                await client.aclose()

        endings = RoomEndings(service, await stream_tail(ctx.redis))

        async def follow_endings() -> None:
            # a connection of its own for the blocking reads
            client = blocking_client(ctx.redis_url, ctx.settings, block_s=BLOCK_MS / 1000)
            try:
                await endings.run(client)
            finally:
                await client.aclose()

        await store.node_alive(node_id, int(service.timings.node_ttl_s * 1000))
        ctx.tasks.spawn("rooms-endings", follow_endings)
        ctx.tasks.spawn("rooms-bus", listen)
        ctx.tasks.spawn("rooms-chat", store.run_appender)
        # apart: the heartbeat needs no Redis, and must not wait for the housekeeping's Redis timeouts
        ctx.tasks.every("rooms-heartbeat", service.timings.tick_s, service.heartbeat)
        ctx.tasks.every("rooms-clock", service.timings.tick_s, service.housekeeping)
        ctx.tasks.on_drain(self._drain)
        try:
            await asyncio.wait_for(ready.wait(), BUS_READY_WAIT_S)
        except TimeoutError:
            log.warning("the room bus is not subscribed yet; rooms start anyway and catch up")
        self.service, self.sockets = service, sockets
        ctx.rooms = service
        log.info("rooms ready on node %s (media mode %s)", node_id[:8], bridge.mode)

    async def stop(self, ctx: AppContext) -> None:
        # The rooms drain on the task supervisor (start() registered `_drain`), so that sockets, the SFU
        # and this node's liveness end on the app's one shutdown path.
        return None

    async def _drain(self) -> None:
        service, sockets = self.service, self.sockets
        self.service = self.sockets = None
        if sockets is not None:
            await sockets.drain()
        sfu, self._sfu = self._sfu, None
        if sfu is not None:
            try:
                await sfu.stop()
            except Exception:
                log.exception("the media server did not stop cleanly")
        if service is not None:
            try:
                await service.store.node_gone(service.node_id)
            except Exception as exc:
                log.warning("could not withdraw this node's liveness key (%s); it expires by itself",
                            type(exc).__name__)
