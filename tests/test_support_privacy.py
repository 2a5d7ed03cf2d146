"""Privacy with planted canaries: a client named with a marker, chatting with markers, a document whose
name is a marker. Everything support staff and admins can obtain — every GET route of the API with the
ids of that session, the support board's socket, and the room's own socket when they enter it — is
captured, and no marker is in any of it."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import httpx

from session_server.openapi import documented_routes

from .conftest import api_key_auth, auth
from .documents_support import PDF
from .rooms_support import CLIENT, PRACTITIONER, joined, room_server, write_booking
from .support_board_support import index_booking, open_board

NAME_MARKER = "Zubaida-QX7"
CHAT_MARKERS = ("canary-chat-8e1f", "ألم-كناري-42")
DOC_MARKER = "canary-doc-5b2c"
MARKERS = (NAME_MARKER, *CHAT_MARKERS, DOC_MARKER)
CALM = {"heartbeat_interval_s": 2.0, "heartbeat_timeout_s": 20.0}


def _leaks(texts: list[str]) -> list[str]:
    return [f"{m!r} in {t[:200]!r}" for t in texts for m in MARKERS if m in t]


async def test_support_and_admins_never_obtain_a_name_a_chat_or_a_document_name(
        tmp_path: Path, redis_url: str, token: Callable[..., str]) -> None:
    booking = await write_booking(redis_url, "b1")
    await index_booking(redis_url, booking)
    async with room_server(tmp_path, redis_url, **CALM) as server:
        client_tok = token("client", CLIENT, name=NAME_MARKER)
        prac_tok = token("practitioner", PRACTITIONER, name="Dr Karim")
        agent_tok = token("support", "agent-1", name="Sam")
        admin_tok = token("admin", "admin-1", name="Admin")
        captured: list[str] = []
        board = await open_board(server, agent_tok)
        admin_board = await open_board(server, admin_tok)
        client, _ = await joined(server, "b1", client_tok)
        prac, _ = await joined(server, "b1", prac_tok)
        for text in CHAT_MARKERS:
            await client.send({"type": "chat.send", "text": f"I feel {text} today"})
            await client.expect("chat.ack", after=len(client.received) - 1)
        await prac.expect("chat.message", lambda m: CHAT_MARKERS[-1] in m["text"])
        async with httpx.AsyncClient(base_url=server.url) as http:
            up = await http.post("/v1/documents", content=PDF,
                                 headers={**auth(prac_tok), "X-Filename": quote(f"{DOC_MARKER}.pdf", safe="")})
            assert up.status_code == 201, up.text
            doc_id = up.json()["id"]
            shared = await http.post(f"/v1/documents/{doc_id}/shares", headers=auth(prac_tok),
                                     json={"booking_id": "b1", "client_ids": [CLIENT]})
            assert shared.status_code == 201, shared.text
            share_id = shared.json()["shares"][0]["share_id"]
            # the parties do see them: the markers are real
            seen = await http.get("/v1/bookings/b1/documents", headers=auth(client_tok))
            assert DOC_MARKER in seen.text
            await client.send({"type": "problem.report", "kind": "video"})
            ticket = await board.until(lambda b: next(iter(b.tickets.values()), None), "the ticket")
            await http.post(f"/v1/support/tickets/{ticket['id']}/notes", headers=auth(agent_tok),
                            json={"cause": "client_device", "text": "camera blocked"})
            # staff enter the room: they see the room, not its content
            agent_in_room, agent_joined = await joined(server, "b1", agent_tok)
            admin_in_room, admin_joined = await joined(server, "b1", admin_tok)
            await client.send({"type": "chat.send", "text": f"after support came: {CHAT_MARKERS[0]}"})
            await client.send({"type": "typing", "active": True})
            await client.send({"type": "media.state", "audio": True, "video": False, "audio_only": False})
            await prac.expect("chat.message", lambda m: "after support came" in m["text"])
            await agent_in_room.expect("participant.updated")
            ids = {"booking_id": "b1", "pid": PRACTITIONER, "id": doc_id, "document_id": doc_id,
                   "ticket_id": ticket["id"], "share_id": share_id}
            gets = [route.path for route, _ in documented_routes(server.app.routes) if "GET" in (route.methods or ())]
            assert any("/v1/support/" in p for p in gets) and "/v1/audit" in gets
            for path in gets:
                url = re.sub(r"\{(\w+)\}", lambda m: ids.get(m.group(1), "x"), path)
                for headers in (auth(agent_tok), auth(admin_tok), api_key_auth()):
                    r = await http.get(url, headers=headers, params={"booking_id": "b1"} if "audit" in url else None)
                    captured.append(f"GET {url} {r.status_code} {r.text}")
        captured += board.raw + admin_board.raw
        captured += [str(m) for m in agent_in_room.received] + [str(m) for m in admin_in_room.received]
        captured += [str(agent_joined), str(admin_joined)]
        assert _leaks(captured) == []
        # and the board did show the session, with its ticket: the capture is not empty-handed
        assert any('"b1"' in t for t in board.raw) and any(ticket["id"] in t for t in captured)
        for peer in (client, prac, agent_in_room, admin_in_room):
            await peer.close()
        await board.close()
        await admin_board.close()
