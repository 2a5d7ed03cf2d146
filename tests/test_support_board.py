"""The support board over a live server: sessions pushed as they change, problem reports as a queue with a
response clock, the reporter told each step, today's figures, roles, and the audit of every look."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import redis.asyncio as aioredis

from session_server.events import EVENTS_STREAM, Event

from .conftest import auth, metrics_auth
from .rooms_support import CLIENT, PRACTITIONER, joined, room_server, write_booking
from .support import eventually
from .support_board_support import board_refusal, index_booking, open_board

# A heartbeat that a machine busy with other work does not miss: these tests are about the board.
CALM = {"heartbeat_interval_s": 2.0, "heartbeat_timeout_s": 20.0}


async def _events(redis_url: str, prefix: str) -> list[Event]:
    r = aioredis.Redis.from_url(redis_url)
    try:
        return [e for e in (Event.from_fields(f) for _, f in await r.xrange(EVENTS_STREAM))
                if e.type.startswith(prefix)]
    finally:
        await r.aclose()


async def test_the_board_shows_a_session_as_its_parties_come_and_go(
        tmp_path: Path, redis_url: str, token: Callable[..., str]) -> None:
    booking = await write_booking(redis_url, "b1")
    await index_booking(redis_url, booking)
    async with room_server(tmp_path, redis_url, **CALM) as server:
        board = await open_board(server, token("support", "agent-1", name="Sam"))
        row = await board.until(lambda b: b.sessions.get("b1"), "the booking")
        assert row["state"] == "waiting_for_both" and row["practitioner_id"] == PRACTITIONER
        assert row["client"].startswith("C-") and CLIENT not in json.dumps(row)
        client, _ = await joined(server, "b1", token("client", CLIENT, name="Amina"))
        await board.until(lambda b: b.sessions["b1"]["state"] == "waiting_for_practitioner", "the client waiting")
        prac, _ = await joined(server, "b1", token("practitioner", PRACTITIONER, name="Dr Karim"))
        row = await board.until(lambda b: b.sessions["b1"]["state"] == "in_session" and b.sessions["b1"],
                                "the session running")
        assert row["parties"]["client"]["present"] and row["parties"]["practitioner"]["present"]
        assert row["started_at"] is not None
        await client.send({"type": "leave"})
        row = await board.until(lambda b: b.sessions["b1"]["state"] == "waiting_for_client" and b.sessions["b1"],
                                "the client gone")
        assert row["parties"]["client"]["left_reason"] == "leave" and row["parties"]["client"]["left_at"]
        # the pseudonym is the same for the same booking on every look
        again = await open_board(server, token("admin", "admin-1", name="Admin"))
        second = await again.until(lambda b: b.sessions.get("b1"), "the booking")
        assert second["client"] == row["client"]
        for peer in (prac,):
            await peer.close()
        await board.close()
        await again.close()


async def test_a_problem_report_becomes_a_ticket_the_agent_answers_and_the_reporter_is_told(
        tmp_path: Path, redis_url: str, token: Callable[..., str]) -> None:
    booking = await write_booking(redis_url, "b1")
    await index_booking(redis_url, booking)
    async with room_server(tmp_path, redis_url, support_answer_within_s=300, **CALM) as server:
        agent_token = token("support", "agent-1", name="Sam")
        board = await open_board(server, agent_token)
        await board.until(lambda b: "b1" in b.sessions, "the booking")
        client, _ = await joined(server, "b1", token("client", CLIENT, name="Amina"))
        await client.send({"type": "problem.report", "kind": "video"})
        opened = await client.expect("support.update")
        assert opened["status"] == "open"
        ticket = await board.until(lambda b: next(iter(b.tickets.values()), None), "the ticket")
        assert ticket["reporter_role"] == "client" and ticket["kind"] == "video" and ticket["status"] == "open"
        assert ticket["booking_id"] == "b1" and ticket["opened_at"] > 0
        await board.until(lambda b: b.sessions["b1"]["open_tickets"] == 1, "the session's open ticket")
        # a second press is the same problem: still one ticket
        await client.send({"type": "problem.report", "kind": "video"})
        await client.expect("support.update", after=len(client.received))
        assert len(await _events(redis_url, "support.ticket_opened")) == 1

        async with httpx.AsyncClient(base_url=server.url) as http:
            r = await http.post(f"/v1/support/tickets/{ticket['id']}/acknowledge", headers=auth(agent_token))
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "acknowledged" and r.json()["acknowledged_by"] == "agent-1"
            told = await client.expect("support.update", lambda m: m["status"] == "acknowledged")
            assert told["ticket_id"] == ticket["id"]
            await board.until(lambda b: b.tickets[ticket["id"]]["status"] == "acknowledged", "acknowledged")
            figures = await board.until(lambda b: b.figures.get("answered") == 1 and b.figures, "the figures")
            assert figures["answered_in_time_share"] == 1.0 and figures["tickets"] == 1
            # acknowledging twice is refused and changes nothing
            r = await http.post(f"/v1/support/tickets/{ticket['id']}/acknowledge", headers=auth(agent_token))
            assert r.status_code == 409 and r.json()["code"] == "ticket_move_refused"
            r = await http.post(f"/v1/support/tickets/{ticket['id']}/notes", headers=auth(agent_token),
                                json={"cause": "client_network", "text": "asked to move closer to the router"})
            assert r.status_code == 200
            r = await http.post(f"/v1/support/tickets/{ticket['id']}/notes", headers=auth(agent_token),
                                json={"cause": "the moon"})
            assert r.status_code == 422 and r.json()["code"] == "unknown_cause"
            r = await http.post(f"/v1/support/tickets/{ticket['id']}/resolve", headers=auth(agent_token))
            assert r.json()["status"] == "resolved"
            await client.expect("support.update", lambda m: m["status"] == "resolved")
            detail = await http.get(f"/v1/support/tickets/{ticket['id']}", headers=auth(agent_token))
            assert [n["cause"] for n in detail.json()["notes"]] == ["client_network"]
            metrics = (await http.get("/metrics", headers=metrics_auth())).text
        assert "session_support_response_seconds_count 1.0" in metrics
        assert "session_support_resolution_seconds_count 1.0" in metrics
        kinds = [e.type for e in await _events(redis_url, "support.")]
        assert kinds == ["support.ticket_opened", "support.ticket_acknowledged", "support.ticket_noted",
                         "support.ticket_resolved"]
        # the note's text is for staff: never in an event
        assert all("router" not in json.dumps(e.body) for e in await _events(redis_url, "support."))
        await client.close()
        await board.close()


async def test_a_ticket_whose_reporter_leaves_unanswered_is_abandoned(
        tmp_path: Path, redis_url: str, token: Callable[..., str]) -> None:
    booking = await write_booking(redis_url, "b1")
    await index_booking(redis_url, booking)
    async with room_server(tmp_path, redis_url, **CALM) as server:
        board = await open_board(server, token("support", "agent-1"))
        prac, _ = await joined(server, "b1", token("practitioner", PRACTITIONER))
        await prac.send({"type": "problem.report", "kind": "audio"})
        await prac.expect("support.update")
        await prac.send({"type": "leave"})
        ticket = await board.until(
            lambda b: next((t for t in b.tickets.values() if t["status"] == "abandoned"), None), "abandoned")
        assert ticket["reporter_role"] == "practitioner"
        figures = await board.until(lambda b: b.figures.get("abandoned") == 1 and b.figures, "the figures")
        assert figures["answered"] == 0 and figures["answered_in_time_share"] == 0.0
        await board.close()


async def test_only_support_and_admins_see_the_board(
        tmp_path: Path, redis_url: str, token: Callable[..., str]) -> None:
    booking = await write_booking(redis_url, "b1")
    await index_booking(redis_url, booking)
    async with room_server(tmp_path, redis_url, **CALM) as server:
        # each refusal says why in an `error` message first (the HTTP routes' codes), then closes
        for role, sub in (("client", CLIENT), ("practitioner", PRACTITIONER)):
            assert await board_refusal(server, token(role, sub)) == (4403, "wrong_role")
        assert await board_refusal(server, "not-a-token") == (4401, "token_malformed")
        forged = token("support", "agent-1")[:-4] + "AAAA"
        assert await board_refusal(server, forged) == (4401, "token_signature")
        async with httpx.AsyncClient(base_url=server.url) as http:
            for role, sub in (("client", CLIENT), ("practitioner", PRACTITIONER)):
                h = auth(token(role, sub))
                for path in ("/v1/support/tickets", "/v1/support/sessions/b1", "/v1/support/figures",
                             "/v1/support/tickets/x"):
                    r = await http.get(path, headers=h)
                    assert r.status_code == 403 and r.json()["code"] == "wrong_role", (role, path)
                r = await http.post("/v1/support/tickets/x/acknowledge", headers=h)
                assert r.status_code == 403
            r = await http.get("/v1/audit", headers=auth(token("support", "agent-1")))
            assert r.status_code == 403
            # today's figures only: another day asked for is refused, not answered with today's
            r = await http.get("/v1/support/figures", headers=auth(token("support", "agent-1")),
                               params={"day": "2026-01-01"})
            assert r.status_code == 422 and r.json()["code"] == "invalid_input", r.text
            page = await http.get("/support")
            assert page.status_code == 200 and "board.js" in page.text


async def test_every_look_is_audited_once_and_the_audit_cannot_be_changed(
        tmp_path: Path, redis_url: str, token: Callable[..., str]) -> None:
    booking = await write_booking(redis_url, "b1")
    await index_booking(redis_url, booking)
    other = await write_booking(redis_url, "b2", practitioner="prac-2", client="client-2")
    await index_booking(redis_url, other)
    async with room_server(tmp_path, redis_url, **CALM) as server:
        agent = token("support", "agent-1", name="Sam")
        admin = token("admin", "admin-1", name="Admin")
        board = await open_board(server, agent)
        await board.until(lambda b: "b1" in b.sessions, "the booking")
        client, _ = await joined(server, "b1", token("client", CLIENT))
        await client.send({"type": "problem.report", "kind": "connection"})
        ticket = await board.until(lambda b: next(iter(b.tickets.values()), None), "the ticket")
        async with httpx.AsyncClient(base_url=server.url) as http:
            assert (await http.get("/v1/support/sessions/b1", headers=auth(agent))).status_code == 200
            assert (await http.get(f"/v1/support/tickets/{ticket['id']}", headers=auth(agent))).status_code == 200
            support_in_room, _ = await joined(server, "b1", agent)

            async def three() -> list[dict[str, object]] | None:
                r = await http.get("/v1/audit", headers=auth(admin), params={"booking_id": "b1"})
                records: list[dict[str, object]] = r.json()["records"]
                return records if len(records) >= 3 else None

            records = await eventually(three, what="three audit records")
            assert sorted(str(r["action"]) for r in records) == ["room.entered", "session.viewed", "ticket.read"]
            assert {r["who"] for r in records} == {"agent-1"} and len(records) == 3
            # the practitioner reads the audit of their own session, not another's
            own = await http.get("/v1/audit", headers=auth(token("practitioner", PRACTITIONER)),
                                 params={"booking_id": "b1"})
            assert own.status_code == 200 and len(own.json()["records"]) == 3
            for params in ({"booking_id": "b2"}, {}):
                r = await http.get("/v1/audit", headers=auth(token("practitioner", PRACTITIONER)), params=params)
                assert r.status_code == 403 and r.json()["code"] == "audit_not_yours"
            # no route changes the audit
            for method in ("POST", "PUT", "PATCH", "DELETE"):
                r = await http.request(method, "/v1/audit", headers=auth(admin))
                assert r.status_code == 405
            r = await http.get("/v1/audit", headers=auth(admin), params={"booking_id": "b1"})
            assert len(r.json()["records"]) == 3
        await support_in_room.close()
        await client.close()
        await board.close()


async def test_support_tokens_live_a_shift_at_most(tmp_path: Path, redis_url: str) -> None:
    from .conftest import api_key_auth

    async with room_server(tmp_path, redis_url, support_token_max_ttl_s=3600) as server, \
            httpx.AsyncClient(base_url=server.url) as http:
        body = {"sub": "agent-1", "name": "Sam", "role": "support", "ttl_s": 7200}
        r = await http.post("/v1/tokens", headers=api_key_auth(), json=body)
        assert r.status_code == 422 and r.json()["code"] == "bad_ttl"
        r = await http.post("/v1/tokens", headers=api_key_auth(), json={**body, "ttl_s": 3600})
        assert r.status_code in (200, 201), r.text
        r = await http.post("/v1/tokens", headers=api_key_auth(), json={**body, "role": "client", "ttl_s": 7200})
        assert r.status_code in (200, 201), r.text
