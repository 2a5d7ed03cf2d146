"""Redis faults on a live server: the embedded Redis dies and comes back; an external one freezes or dies.

What each test holds to: readiness comes back by itself, every acknowledged booking is still there, no
event is doubled, and the supervisor's work shows in the metrics.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from session_server.app import create_app
from session_server.embedded_redis import EmbeddedRedis
from session_server.events import EVENTS_STREAM, Event

from .bookings_support import every_day, iso, make_practitioner
from .conftest import LiveServer, auth, make_settings, metrics_auth
from .documents_support import Minter
from .redis_support import PrivateRedis
from .support import eventually, free_port, readiness
from .test_redis_lifecycle import _alive, _embedded_redis_child, _start_server


async def _slots(c: httpx.AsyncClient, pid: str, headers: dict[str, str], count: int) -> list[dict[str, Any]]:
    now = time.time()
    r = await c.get(f"/v1/practitioners/{pid}/slots", headers=headers,
                    params={"from": iso(now), "to": iso(now + 3 * 86400)})
    assert r.status_code == 200, r.text
    slots: list[dict[str, Any]] = r.json()["slots"]
    assert len(slots) >= count, slots
    return slots[:count]


async def _book(c: httpx.AsyncClient, token: Minter, n: int, slot: dict[str, Any]) -> dict[str, Any] | None:
    """The booking if the server acknowledged it; None if it refused or did not answer."""
    try:
        r = await c.post("/v1/bookings", headers=auth(token("client", f"c{n}")), json={
            "practitioner_id": "p1", "starts_at": slot["starts_at"],
            "expected_total": slot["price"]["client_total"]})
    except httpx.TransportError:
        return None
    if r.status_code == 201:
        booking: dict[str, Any] = r.json()
        return booking
    assert r.status_code == 503 and r.json()["code"] == "redis_unavailable", r.text
    return None


async def _created_events(redis: aioredis.Redis) -> list[str]:
    found = [Event.from_fields(f) for _, f in await redis.xrange(EVENTS_STREAM)]
    return [e.body["booking_id"] for e in found if e.type == "booking.created"]


async def test_a_sigkilled_embedded_redis_is_restarted_and_every_acknowledged_booking_survives(
        tmp_path: Path, token: Minter) -> None:
    data_dir, port = tmp_path / "data", free_port()
    base = f"http://127.0.0.1:{port}"
    server = await _start_server(data_dir, port)
    pids = [server.pid]
    try:
        redis_pid = _embedded_redis_child(server.pid, data_dir)
        pids.append(redis_pid)
        async with httpx.AsyncClient(base_url=base, timeout=20) as c:
            await make_practitioner(c, "p1", weekly=every_day())
            slots = await _slots(c, "p1", auth(token("client", "c0")), 24)
            acknowledged: list[dict[str, Any]] = []
            three_booked = asyncio.Event()

            async def burst() -> None:
                for n, slot in enumerate(slots):
                    booking = await _book(c, token, n, slot)
                    if booking is not None:
                        acknowledged.append(booking)
                    if len(acknowledged) == 3:
                        three_booked.set()

            bookings = asyncio.create_task(burst())
            await three_booked.wait()
            os.kill(redis_pid, signal.SIGKILL)
            await bookings

            async def ready() -> bool:
                return await readiness(base) == 200

            await eventually(ready, timeout=30, what="/readyz to come back after the embedded redis died")
            assert server.returncode is None
            new_pid = _embedded_redis_child(server.pid, data_dir)
            pids.append(new_pid)
            assert new_pid != redis_pid and not _alive(redis_pid)

            for booking in acknowledged:
                r = await c.get(f"/v1/bookings/{booking['id']}", headers=auth(token("practitioner", "p1")))
                assert r.status_code == 200, r.text
                assert r.json()["starts_at"] == booking["starts_at"]

            async def counted() -> bool:
                scraped = await c.get("/metrics", headers=metrics_auth())
                return "session_embedded_redis_restarts_total 1.0" in scraped.text

            await eventually(counted, what="the restart to be counted")  # counted just after it answers

        direct = aioredis.Redis(unix_socket_path=str(data_dir / "redis" / "redis.sock"))
        try:
            created = await _created_events(direct)
        finally:
            await direct.aclose()
        assert len(created) == len(set(created)), "a booking.created event is doubled"
        assert {b["id"] for b in acknowledged} <= set(created)

        server.send_signal(signal.SIGTERM)
        assert await server.wait() in (0, -signal.SIGTERM)
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if server.returncode is None:
            await server.wait()


async def test_an_embedded_redis_that_cannot_come_back_is_given_up_loudly_after_its_attempts(
        tmp_path: Path) -> None:
    embedded = EmbeddedRedis(tmp_path / "redis", start_timeout_s=5)
    await embedded.start()
    restarts: list[int] = []
    verdicts: list[str] = []
    gave_up = asyncio.Event()

    def give_up(message: str) -> None:
        verdicts.append(message)
        gave_up.set()

    watcher = asyncio.create_task(embedded.supervise(
        restarted=lambda: restarts.append(1), give_up=give_up, max_failures=3, first_delay_s=0.01))
    try:
        assert embedded.pid is not None
        # an AOF that no redis-server will load: every restart fails
        (tmp_path / "redis" / "appendonly.aof").write_text("this is not an append-only file\n")
        os.kill(embedded.pid, signal.SIGKILL)
        await asyncio.wait_for(gave_up.wait(), 60)
        assert restarts == [] and len(verdicts) == 1
        assert "could not be restarted after 3 attempts" in verdicts[0]
        await watcher
    finally:
        watcher.cancel()
        await embedded.stop()


async def test_an_embedded_redis_restarted_by_its_supervisor_keeps_its_data(tmp_path: Path) -> None:
    embedded = EmbeddedRedis(tmp_path / "redis")
    await embedded.start()
    restarts: list[int] = []
    watcher = asyncio.create_task(embedded.supervise(
        restarted=lambda: restarts.append(1), give_up=lambda message: None, first_delay_s=0.01))
    client = aioredis.Redis(unix_socket_path=str(embedded.socket_path))
    try:
        await client.set("acknowledged", b"yes")
        old_pid = embedded.pid
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)

        async def back() -> bool:
            try:
                return restarts == [1] and await client.get("acknowledged") == b"yes"
            except (OSError, aioredis.RedisError):
                return False

        await eventually(back, timeout=30, what="the supervised redis to be restarted with its data")
        assert embedded.pid != old_pid
    finally:
        await client.aclose()
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await embedded.stop()


async def test_an_embedded_redis_that_stops_answering_is_killed_and_restarted_with_its_data(tmp_path: Path) -> None:
    embedded = EmbeddedRedis(tmp_path / "redis")
    await embedded.start()
    restarts: list[int] = []
    watcher = asyncio.create_task(embedded.supervise(
        restarted=lambda: restarts.append(1), give_up=lambda message: None, first_delay_s=0.01,
        hung_after_s=2.0, probe_every_s=0.2))
    client = aioredis.Redis(unix_socket_path=str(embedded.socket_path), socket_timeout=1)
    frozen = embedded.pid
    try:
        await client.set("acknowledged", b"yes")
        assert frozen is not None
        os.kill(frozen, signal.SIGSTOP)  # alive, answering nothing, and nobody will send SIGCONT

        async def back() -> bool:
            try:
                return restarts == [1] and await client.get("acknowledged") == b"yes"
            except (OSError, aioredis.RedisError):
                return False

        await eventually(back, timeout=30, what="the frozen redis to be replaced, with its data")
        assert embedded.pid != frozen and not _alive(frozen)
    finally:
        await client.aclose()
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await embedded.stop()
        if frozen is not None and _alive(frozen):
            os.kill(frozen, signal.SIGKILL)


@pytest.fixture
async def external_redis(tmp_path: Path) -> AsyncIterator[PrivateRedis]:
    directory = tmp_path / "external-redis"
    directory.mkdir()
    r = PrivateRedis(directory, aof=True)
    await r.start()
    yield r
    r.stop()


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def warnings_logged() -> Iterator[Records]:
    """Every record at WARNING or above, from the server's loggers and uvicorn's (which does not propagate)."""
    handler = Records()
    loggers = [logging.getLogger(), logging.getLogger("uvicorn")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


# The bound on log records per outage stated in docs/operations.md: one line when it begins, one when it
# ends, one summary per SUMMARY_EVERY_S while it lasts; OTHER_LINES for what the outage's edges add once
# (a loop that notices the outage before the probe and says so).
SUMMARY_EVERY_S = 10.0
OTHER_LINES = 5
# one line each, at most, from the stream consumers that meet the outage (docs/operations.md)
CONSUMER_LINES = 4


@pytest.mark.parametrize("fault", ["freeze", "kill"])
async def test_an_external_redis_outage_answers_503_logs_a_bounded_story_and_loses_no_acknowledged_booking(
        tmp_path: Path, token: Minter, external_redis: PrivateRedis, fault: str) -> None:
    settings = make_settings(tmp_path, external_redis.url, redis_socket_timeout_s=1.0)
    server = LiveServer(create_app(settings))
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as c:
            await make_practitioner(c, "p1", weekly=every_day())
            slots = await _slots(c, "p1", auth(token("client", "c0")), 24)
            acknowledged = [b for n in range(3) if (b := await _book(c, token, n, slots[n])) is not None]
            assert len(acknowledged) == 3

            with warnings_logged() as logged:
                began = time.monotonic()
                external_redis.signal(signal.SIGSTOP if fault == "freeze" else signal.SIGKILL)
                # a burst while Redis is away: every request is answered, each a 503 problem document
                during = await asyncio.gather(*(_book(c, token, n, slots[n]) for n in range(3, 11)))
                assert during == [None] * 8
                r = await c.get("/readyz")
                assert r.status_code == 503 and r.json()["code"] == "redis_unavailable"

                async def outage_declared() -> bool:
                    return "session_redis_outages_total 1.0" in (await c.get("/metrics", headers=metrics_auth())).text

                await eventually(outage_declared, what="the outage to be declared")

                async def summarised() -> bool:
                    return any("redis still unavailable" in r.getMessage() for r in logged.records)

                # held past one summary period, so that a line per retry or per request would show
                await eventually(summarised, timeout=3 * SUMMARY_EVERY_S, what="the outage's first summary")
                if fault == "freeze":
                    external_redis.signal(signal.SIGCONT)
                else:
                    await external_redis.start()  # same port, same AOF

                async def ready() -> bool:
                    return await readiness(server.url) == 200

                await eventually(ready, timeout=30, what="/readyz to come back by itself")

                def ended() -> bool:
                    return any("redis outage ended" in r.getMessage() for r in logged.records)

                async def outage_over() -> bool:
                    return ended()

                await eventually(outage_over, what="the outage's end to be logged")
                lasted = time.monotonic() - began
                lines = [f"{r.name}: {r.getMessage()}" for r in logged.records]
            assert sum("redis outage began" in line for line in lines) == 1, lines
            assert len(lines) <= 2 + lasted // SUMMARY_EVERY_S + OTHER_LINES, lines

            after = [b for n in range(11, 14) if (b := await _book(c, token, n, slots[n])) is not None]
            assert len(after) == 3
            for booking in [*acknowledged, *after]:
                r = await c.get(f"/v1/bookings/{booking['id']}", headers=auth(token("practitioner", "p1")))
                assert r.status_code == 200, r.text
                assert r.json()["starts_at"] == booking["starts_at"]
        direct = aioredis.Redis.from_url(external_redis.url)
        try:
            created = await _created_events(direct)
        finally:
            await direct.aclose()
        assert len(created) == len(set(created)), "a booking.created event is doubled"
        assert {b["id"] for b in [*acknowledged, *after]} <= set(created)
    finally:
        await server.stop()


def test_an_outage_is_one_line_when_it_begins_one_summary_per_period_and_one_when_it_ends(
        caplog: pytest.LogCaptureFixture) -> None:
    import redis.exceptions
    from prometheus_client import CollectorRegistry, Counter, Gauge

    from session_server.redis_outage import RedisOutage

    registry = CollectorRegistry()
    up = Gauge("up", "", registry=registry)
    outages = Counter("outages", "", registry=registry)
    now = 0.0
    outage = RedisOutage(monotonic=lambda: now, up=up, outages=outages, summary_every_s=10)
    with caplog.at_level("DEBUG", logger="session_server.redis_outage"):
        assert not outage.report("a loop", ValueError("a bug"))  # not Redis: left to the caller
        for second in range(35):
            now = float(second)
            for _ in range(20):  # twenty callers fail each second
                assert outage.report("a loop", redis.exceptions.ConnectionError("refused"))
        assert outage.down and registry.get_sample_value("up") == 0
        outage.answered()
        outage.answered()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 5, messages  # began, summaries at 10, 20, 30 s, ended
    assert messages[0].startswith("redis outage began: a loop did not get an answer (ConnectionError)")
    assert messages[1:4] == [f"redis still unavailable after {t} s: 200 failed call(s) since the last report"
                             for t in (10, 20, 30)]
    assert messages[4] == "redis outage ended after 34.0 s (700 failed call(s))"
    assert registry.get_sample_value("outages_total") == 1 and registry.get_sample_value("up") == 1


class SocketMeetsRedisFailure:
    """A WebSocket route whose handler lets a Redis failure through after accepting, as a socket edge
    that does not catch one would."""

    name = "socket-meets-redis-failure"

    def routes(self) -> list[Any]:
        from starlette.routing import WebSocketRoute
        from starlette.websockets import WebSocket

        async def socket(ws: WebSocket) -> None:
            import redis.exceptions

            await ws.accept()
            await ws.receive_text()
            raise redis.exceptions.ConnectionError("Error 111 connecting to redis")

        return [WebSocketRoute("/t/socket", socket)]

    async def start(self, ctx: Any) -> None:
        pass

    async def stop(self, ctx: Any) -> None:
        pass


async def test_a_redis_failure_that_escapes_a_socket_closes_it_with_try_again_later_not_an_asgi_error(
        tmp_path: Path, redis_url: str) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    server = LiveServer(create_app(make_settings(tmp_path, redis_url), features=[SocketMeetsRedisFailure()]))
    await server.start()
    try:
        with warnings_logged() as logged:
            async with connect(f"{server.ws_url}/t/socket") as ws:
                await ws.send("hello")
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
            lines = [f"{r.name}: {r.getMessage()}" for r in logged.records]
        assert not any("Expected ASGI message" in line or r.exc_info for line, r in zip(lines, logged.records,
                                                                                         strict=True)), lines
        assert sum("redis outage began" in line for line in lines) == 1, lines
    finally:
        await server.stop()


async def test_a_chat_message_sent_while_redis_is_frozen_gets_a_typed_answer_and_acknowledged_chat_survives(
        tmp_path: Path, token: Minter, external_redis: PrivateRedis) -> None:
    """The socket is kept and the message answered with a typed `error` (`unavailable`, retryable); sent
    again with its id once Redis is back, it is acknowledged and stored once."""
    from .rooms_support import CLIENT, joined, room_server, write_booking

    await write_booking(external_redis.url)
    async with room_server(tmp_path, external_redis.url, redis_socket_timeout_s=1.0,
                           heartbeat_interval_s=10, heartbeat_timeout_s=60) as server:
        client, _ = await joined(server, "b1", token("client", CLIENT))
        await client.send({"type": "chat.send", "id": "before-outage", "text": "before"})
        await client.expect("chat.ack")
        external_redis.signal(signal.SIGSTOP)
        try:
            await client.send({"type": "chat.send", "id": "during-outage", "text": "during"})

            async def answered() -> bool:
                typed = [e for e in client.of_type("error") if e.get("ref") == "during-outage"]
                return bool(typed) or client.close_code is not None

            await eventually(answered, timeout=30, what="the chat message sent during the outage to be answered")
        finally:
            external_redis.signal(signal.SIGCONT)
        assert client.close_code is None, client.close_code
        error = next(e for e in client.of_type("error") if e.get("ref") == "during-outage")
        assert error["code"] == "unavailable" and error["retry_after_s"] > 0
        await client.send({"type": "chat.send", "id": "during-outage", "text": "during"})
        await client.expect("chat.ack", lambda msg: msg.get("ref") == "during-outage", timeout=30)
        await client.close()
        again, welcome = await joined(server, "b1", token("client", CLIENT))
        refs = [m["ref"] for m in welcome["chat"]]
        assert refs.count("before-outage") == 1 and refs.count("during-outage") == 1, refs
        await again.close()


# Close codes a room socket may end with during and after an outage, each one the protocol's own: try
# again later (1013), or what the heartbeat says (4408). Never a drop without a close frame (1006) or an
# internal error (1011).
TYPED_CLOSES = {1013, 4408}


async def _chat(peer: Any, ref: str, text: str) -> dict[str, Any]:
    """Send one chat message and return the server's answer (`chat.ack`, or an `error` other than a rate
    limit, after which the server's own pause was taken)."""
    while True:
        mark = len(peer.received)
        await peer.send({"type": "chat.send", "id": ref, "text": text})
        answer: dict[str, Any] = await peer.reply(ref, timeout=30, after=mark)
        if answer["type"] != "error" or answer["code"] != "rate_limited":
            return answer
        await asyncio.sleep(answer["retry_after_s"])  # the wait the server asks for


@pytest.mark.parametrize("fault", ["freeze", "kill"])
@pytest.mark.parametrize("where", ["embedded", "external"])
async def test_a_redis_outage_amid_bookings_and_chat_loses_and_doubles_nothing_and_logs_a_bounded_story(
        tmp_path: Path, token: Minter, where: str, fault: str) -> None:
    """A burst of bookings over HTTP and of chat over a room's sockets, Redis stopped in its middle (frozen
    with SIGSTOP, or SIGKILLed) and back (the embedded one brought back by the server, dead or frozen; the
    external one by its operator, SIGCONT or a restart): readiness returns by itself, every booking and
    message acknowledged is there once, no event is doubled, the log holds the bounded story
    docs/operations.md states, and each socket is either kept (and answers) or closed with a code of the
    protocol."""
    from .rooms_support import CLIENT, PRACTITIONER, joined, room_server, whole_history, write_booking

    external: PrivateRedis | None = None
    if where == "external":
        (tmp_path / "external-redis").mkdir()
        external = PrivateRedis(tmp_path / "external-redis", aof=True)
        await external.start()
    data_dir = tmp_path / "data"
    url = external.url if external is not None else None
    try:
        async with room_server(tmp_path, url, redis_socket_timeout_s=1.0, heartbeat_interval_s=10.0,
                               heartbeat_timeout_s=60.0, embedded_redis_hang_s=3.0) as server:
            direct_url = url or f"unix://{data_dir / 'redis' / 'redis.sock'}"
            redis_pid = external.proc.pid if external is not None and external.proc is not None else int(
                (data_dir / "redis" / "redis.pid").read_text())
            await write_booking(direct_url, "room")
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as c:
                await make_practitioner(c, "p1", weekly=every_day())
                slots = await _slots(c, "p1", auth(token("client", "c0")), 20)
                client, _ = await joined(server, "room", token("client", CLIENT))
                prac, _ = await joined(server, "room", token("practitioner", PRACTITIONER))
                booked = [b for n in range(3) if (b := await _book(c, token, n, slots[n])) is not None]
                chatted = {f"before-{n}": (await _chat(client, f"before-{n}", f"message {n}")) for n in range(3)}
                assert len(booked) == 3 and all(a["type"] == "chat.ack" for a in chatted.values())

                with warnings_logged() as logged:
                    began = time.monotonic()
                    os.kill(redis_pid, signal.SIGSTOP if fault == "freeze" else signal.SIGKILL)

                    async def book_during() -> list[dict[str, Any] | None]:
                        return [await _book(c, token, n, slots[n]) for n in range(3, 9)]

                    async def chat_during() -> dict[str, dict[str, Any]]:
                        return {f"during-{n}": await _chat(prac, f"during-{n}", f"reply {n}") for n in range(6)}

                    during_books, during_chat = await asyncio.gather(book_during(), chat_during())
                    booked += [b for b in during_books if b is not None]
                    refused = [ref for ref, a in during_chat.items() if a["type"] == "error"]
                    assert all(during_chat[ref]["code"] == "unavailable" for ref in refused), during_chat
                    chatted.update({ref: a for ref, a in during_chat.items() if a["type"] == "chat.ack"})

                    async def summarised() -> bool:
                        return any("redis still unavailable" in r.getMessage() for r in logged.records)

                    async def restarted() -> bool:
                        return await readiness(server.url) == 200

                    if where == "embedded":
                        # the server's supervisor brings its own child back by itself: a dead one at once, a
                        # frozen one once it has answered nothing for SESSION_SERVER_EMBEDDED_REDIS_HANG_S
                        await eventually(restarted, timeout=30, what="the embedded redis to be restarted")
                    else:
                        # held past one summary period, so that a line per retry or per request would show
                        await eventually(summarised, timeout=3 * SUMMARY_EVERY_S, what="the outage's summary")
                        if fault == "freeze":
                            os.kill(redis_pid, signal.SIGCONT)
                        else:
                            assert external is not None
                            await external.start()  # same port, same AOF
                    await eventually(restarted, timeout=30, what="/readyz to come back by itself")

                    async def outage_over() -> bool:
                        return any("redis outage ended" in r.getMessage() for r in logged.records)

                    await eventually(outage_over, what="the outage's end to be logged")
                    lasted = time.monotonic() - began
                    lines = [f"{r.name}: {r.getMessage()}" for r in logged.records]
                assert sum("redis outage began" in line for line in lines) == 1, lines
                # the restart of the embedded child: its death (and, frozen, why it was killed), its return
                restart_lines = {"kill": 2, "freeze": 3}[fault] if where == "embedded" else 0
                assert len(lines) <= 2 + lasted // SUMMARY_EVERY_S + CONSUMER_LINES + restart_lines, lines
                assert not any(r.exc_info for r in logged.records), lines

                # after the outage: the messages refused are sent again with their ids, each kept once
                for ref in refused:
                    again = await _chat(prac, ref, f"reply {ref.split('-')[1]}")
                    assert again["type"] == "chat.ack", again
                    chatted[ref] = again
                booked += [b for n in range(9, 12) if (b := await _book(c, token, n, slots[n])) is not None]
                assert len(booked) >= 6
                for booking in booked:
                    assert booking is not None
                    r = await c.get(f"/v1/bookings/{booking['id']}", headers=auth(token("practitioner", "p1")))
                    assert r.status_code == 200, r.text
                    assert r.json()["starts_at"] == booking["starts_at"]

                for peer in (client, prac):
                    if peer.close_code is None:
                        await peer.send({"type": "ping", "id": "after"})
                        assert (await peer.reply("after", timeout=30))["type"] == "pong"
                    else:
                        assert peer.close_code in TYPED_CLOSES, peer.close_code
                back, welcome = await joined(server, "room", token("client", CLIENT), last_seq=0)
                history = await whole_history(back, welcome)
                refs = [m["ref"] for m in history]
                assert sorted(refs) == sorted(chatted), (refs, sorted(chatted))
                assert {m["seq"] for m in history} == {a["seq"] for a in chatted.values()}
                for peer in (client, prac, back):
                    if peer.close_code is None:
                        await peer.close()

            direct = aioredis.Redis.from_url(direct_url)
            try:
                created = await _created_events(direct)
            finally:
                await direct.aclose()
            assert len(created) == len(set(created)), "a booking.created event is doubled"
            assert {b["id"] for b in booked if b is not None} <= set(created)
    finally:
        if external is not None:
            if external.proc is not None and external.proc.poll() is None:
                external.signal(signal.SIGCONT)
            external.stop()


async def test_a_redis_outage_longer_than_the_heartbeat_timeout_shows_no_healthy_participant_reconnecting(
        tmp_path: Path, token: Minter, external_redis: PrivateRedis) -> None:
    """The server's own outage is not blamed on its clients: its pings go on while Redis is frozen, and two
    participants who answer them are never shown reconnecting or gone, nor disconnected, however long it
    lasts."""
    from .rooms_support import CLIENT, PRACTITIONER, connect_peer, joined, room_server, write_booking

    await write_booking(external_redis.url)
    interval, timeout = 0.5, 3.0
    async with room_server(tmp_path, external_redis.url, redis_socket_timeout_s=0.5,
                           heartbeat_interval_s=interval, heartbeat_timeout_s=timeout) as server:
        client, _ = await joined(server, "b1", token("client", CLIENT))
        prac, _ = await joined(server, "b1", token("practitioner", PRACTITIONER))
        external_redis.signal(signal.SIGSTOP)
        try:
            async def declared() -> bool:
                return await readiness(server.url) == 503

            await eventually(declared, what="the outage to be seen")
            seen = {id(p): len(p.of_type("ping")) for p in (client, prac)}
            # pings spanning more than the heartbeat timeout, all sent while Redis answers nothing
            wanted = int(timeout / interval) + 2

            async def pinged_through() -> bool:
                return all(len(p.of_type("ping")) - seen[id(p)] >= wanted for p in (client, prac))

            await eventually(pinged_through, timeout=10 * timeout, what="the heartbeat to go on during the outage")
            assert await readiness(server.url) == 503  # it was an outage all along
            # a join meanwhile is told to come back later, typed
            late = await connect_peer(server, "b1", token("client", CLIENT))
            refused = await late.expect("error", timeout=10)
            assert refused["code"] == "unavailable" and refused["retry_after_s"] > 0
            assert await late.closed(timeout=10) == 1013
        finally:
            external_redis.signal(signal.SIGCONT)

        async def ready() -> bool:
            return await readiness(server.url) == 200

        await eventually(ready, timeout=30, what="/readyz to come back")
        await client.send({"type": "chat.send", "id": "after", "text": "still here"})
        await prac.expect("chat.message", lambda msg: msg["ref"] == "after", timeout=10)
        for peer in (client, prac):
            assert peer.close_code is None
            assert not peer.of_type("participant.reconnecting") and not peer.of_type("participant.left")
        await client.close()
        await prac.close()


async def test_after_a_redis_outage_no_process_reports_another_s_participants_gone(
        tmp_path: Path, token: Minter, external_redis: PrivateRedis) -> None:
    """Two processes on one Redis, Redis frozen for longer than a process's liveness key lives: neither
    could prove itself alive meanwhile, so neither takes the other for dead when Redis is back, and the
    parties on each side, answering every ping, are never shown gone or reconnecting."""
    from .rooms_support import CLIENT, PRACTITIONER, ServerProcess, joined, write_booking

    await write_booking(external_redis.url)
    interval, timeout = 0.5, 3.0
    nodes = [ServerProcess(tmp_path, external_redis.url, name, heartbeat_interval_s=str(interval),
                           heartbeat_timeout_s=str(timeout), redis_socket_timeout_s="0.5")
             for name in ("node-a", "node-b")]
    try:
        for n in nodes:
            await n.start()
        client, _ = await joined(nodes[0], "b1", token("client", CLIENT))  # type: ignore[arg-type]
        prac, _ = await joined(nodes[1], "b1", token("practitioner", PRACTITIONER))  # type: ignore[arg-type]
        await client.expect("session.started")
        external_redis.signal(signal.SIGSTOP)
        try:
            async def declared() -> bool:
                return [await readiness(n.url) for n in nodes] == [503, 503]

            await eventually(declared, what="the outage to be seen by both processes")
            seen = {id(p): len(p.of_type("ping")) for p in (client, prac)}
            wanted = int(timeout / interval) + 2  # longer than a liveness key lives (timeout / 2)

            async def pinged_through() -> bool:
                return all(len(p.of_type("ping")) - seen[id(p)] >= wanted for p in (client, prac))

            await eventually(pinged_through, timeout=10 * timeout, what="pings through the outage")
        finally:
            external_redis.signal(signal.SIGCONT)

        async def ready() -> bool:
            return [await readiness(n.url) for n in nodes] == [200, 200]

        await eventually(ready, timeout=30, what="both processes ready again")
        # a few heartbeat timeouts later, with each process's sweep having run on the Redis that is back
        seen = {id(p): len(p.of_type("ping")) for p in (client, prac)}

        async def settled() -> bool:
            return all(len(p.of_type("ping")) - seen[id(p)] >= 2 * wanted for p in (client, prac))

        await eventually(settled, timeout=20 * timeout, what="heartbeats after the outage")
        await client.send({"type": "chat.send", "id": "after", "text": "still here"})
        await prac.expect("chat.message", lambda msg: msg["ref"] == "after", timeout=10)
        for peer in (client, prac):
            assert peer.close_code is None
            gone = peer.of_type("participant.left") + peer.of_type("participant.reconnecting")
            assert not gone, gone
        await client.close()
        await prac.close()
    finally:
        for n in nodes:
            await n.stop()


@pytest.mark.parametrize("fault", ["freeze", "kill"])
async def test_a_participant_silent_through_a_redis_outage_is_closed_and_the_other_told_once_it_is_back(
        tmp_path: Path, token: Minter, external_redis: PrivateRedis, fault: str) -> None:
    """A page that really went silent during the outage is closed by the heartbeat (4408, typed) although
    Redis cannot record it; once Redis is back the other party is told it left, rather than seeing it
    present for ever. (A frozen Redis may still run, once thawed, the writes that timed out; a killed one
    never gets them.)"""
    from .rooms_support import CLIENT, PRACTITIONER, joined, room_server, write_booking

    await write_booking(external_redis.url)
    async with room_server(tmp_path, external_redis.url, redis_socket_timeout_s=0.5,
                           heartbeat_interval_s=0.5, heartbeat_timeout_s=3.0) as server:
        client, _ = await joined(server, "b1", token("client", CLIENT))
        prac, _ = await joined(server, "b1", token("practitioner", PRACTITIONER))
        external_redis.signal(signal.SIGSTOP if fault == "freeze" else signal.SIGKILL)
        try:
            async def declared() -> bool:
                return await readiness(server.url) == 503

            await eventually(declared, what="the outage to be seen")
            client.auto_pong = False  # the client's page goes silent
            assert await client.closed(timeout=30) == 4408
        finally:
            if fault == "freeze":
                external_redis.signal(signal.SIGCONT)
            else:
                await external_redis.start()  # same port, same AOF
        left = await prac.expect("participant.left", lambda msg: msg["participant_id"] == CLIENT, timeout=30)
        assert left["reason"] == "timeout"
        assert prac.close_code is None
        await prac.close()
