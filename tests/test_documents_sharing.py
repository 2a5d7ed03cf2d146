"""Sharing with a booking and with many clients, revoking, the room push, audit and crypto-shredding."""

from __future__ import annotations

import asyncio
import json
import time

import redis.asyncio as aioredis

from session_server.bookings.model import BookingStatus

from .conftest import api_key_auth, auth
from .documents_support import PDF, TEXT, DocsEnv, Minter, docs, problem_code, put_booking

__all__ = ["docs"]


async def test_a_booking_share_lets_its_client_list_and_download(docs: DocsEnv, token: Minter) -> None:
    await put_booking(docs.redis, "b1", "p1", "c1")
    p1, c1 = token("practitioner", "p1"), token("client", "c1")
    doc_id = await docs.uploaded(p1, TEXT, "تمرين.txt")
    assert (await docs.download(c1, doc_id)).status_code == 404
    r = await docs.share(p1, doc_id, booking_id="b1")
    assert r.status_code == 201
    [share] = r.json()["shares"]
    assert share["kind"] == "booking" and share["client_id"] == "c1"
    listed = (await docs.http.get("/v1/documents", headers=auth(c1))).json()["documents"]
    assert [(d["id"], d["name"], d["booking_id"]) for d in listed] == [(doc_id, "تمرين.txt", "b1")]
    room = (await docs.http.get("/v1/bookings/b1/documents", headers=auth(c1))).json()["documents"]
    assert [d["download_url"] for d in room] == [f"/v1/documents/{doc_id}/content"]
    assert (await docs.download(c1, doc_id)).content == TEXT
    # Sharing again is idempotent.
    again = await docs.share(p1, doc_id, booking_id="b1")
    assert again.status_code == 200 and again.json()["shares"][0]["created"] is False


async def test_the_same_document_is_shared_with_many_clients(docs: DocsEnv, token: Minter) -> None:
    p1 = token("practitioner", "p1")
    doc_id = await docs.uploaded(p1)
    clients = [f"c{i}" for i in range(25)]
    r = await docs.share(p1, doc_id, client_ids=clients)
    assert r.status_code == 201 and len(r.json()["shares"]) == 25
    for c in clients:
        assert (await docs.download(token("client", c), doc_id)).content == PDF
    shares = (await docs.http.get(f"/v1/documents/{doc_id}/shares", headers=auth(p1))).json()["shares"]
    assert sorted(s["client_id"] for s in shares) == sorted(clients)
    owned = (await docs.http.get("/v1/documents", headers=auth(p1))).json()["documents"]
    assert len(owned[0]["shares"]) == 25
    assert len(await docs.events("document.shared")) == 25


async def test_sharing_in_a_live_room_pushes_document_shared(docs: DocsEnv, token: Minter) -> None:
    await put_booking(docs.redis, "b7", "p1", "c1", status=BookingStatus.IN_SESSION, starts_in_s=-60)
    p1 = token("practitioner", "p1")
    doc_id = await docs.uploaded(p1, PDF, "fiche séance.pdf")
    sub = aioredis.Redis.from_url(docs.settings.redis_url or "")
    pubsub = sub.pubsub()
    await pubsub.subscribe("ss:room:b7:push")
    try:
        await pubsub.get_message(timeout=1)  # the subscribe confirmation
        before = int(time.time())
        assert (await docs.share(p1, doc_id, booking_id="b7")).status_code == 201
        message = None
        deadline = time.monotonic() + 5
        while message is None and time.monotonic() < deadline:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        assert message is not None
        pushed = json.loads(message["data"])
        assert pushed["type"] == "document.shared"
        doc = pushed["document"]
        assert (doc["id"], doc["name"], doc["media_type"], doc["size"]) == (
            doc_id, "fiche séance.pdf", "application/pdf", len(PDF))
        assert doc["shared_at"] >= before
    finally:
        await pubsub.aclose()
        await sub.aclose()


async def test_a_revoked_share_can_no_longer_read(docs: DocsEnv, token: Minter) -> None:
    await put_booking(docs.redis, "b1", "p1", "c1")
    p1, c1, c2 = token("practitioner", "p1"), token("client", "c1"), token("client", "c2")
    doc_id = await docs.uploaded(p1)
    shares = (await docs.share(p1, doc_id, booking_id="b1", client_ids=["c2"])).json()["shares"]
    by_client = {s["client_id"]: s["share_id"] for s in shares}
    r = await docs.http.delete(f"/v1/documents/{doc_id}/shares/{by_client['c2']}", headers=auth(p1))
    assert r.status_code == 204
    assert (await docs.download(c2, doc_id)).status_code == 404
    assert (await docs.http.get("/v1/documents", headers=auth(c2))).json()["documents"] == []
    assert (await docs.download(c1, doc_id)).status_code == 200  # the other share still stands
    r = await docs.http.delete(f"/v1/documents/{doc_id}/shares/{by_client['c1']}", headers=auth(p1))
    assert r.status_code == 204
    assert (await docs.download(c1, doc_id)).status_code == 404
    assert (await docs.http.get("/v1/bookings/b1/documents", headers=auth(c1))).json()["documents"] == []
    again = await docs.http.delete(f"/v1/documents/{doc_id}/shares/{by_client['c1']}", headers=auth(p1))
    assert again.status_code == 409 and problem_code(again) == "share_already_revoked"
    assert len(await docs.events("document.revoked")) == 2


async def test_a_cancelled_booking_no_longer_grants_its_client(docs: DocsEnv, token: Minter) -> None:
    await put_booking(docs.redis, "b1", "p1", "c1")
    p1, c1 = token("practitioner", "p1"), token("client", "c1")
    doc_id = await docs.uploaded(p1)
    await docs.share(p1, doc_id, booking_id="b1")
    await put_booking(docs.redis, "b1", "p1", "c1", status=BookingStatus.CANCELLED)
    assert (await docs.download(c1, doc_id)).status_code == 404


async def test_a_practitioner_cannot_share_with_someone_elses_booking(docs: DocsEnv, token: Minter) -> None:
    await put_booking(docs.redis, "b9", "p2", "c1")
    p1 = token("practitioner", "p1")
    doc_id = await docs.uploaded(p1)
    r = await docs.share(p1, doc_id, booking_id="b9")
    assert r.status_code == 404 and problem_code(r) == "booking_not_found"
    r = await docs.share(p1, doc_id, booking_id="missing")
    assert r.status_code == 404
    r = await docs.share(p1, doc_id)
    assert r.status_code == 422
    r = await docs.share(p1, doc_id, client_ids=["bad id with spaces"])
    assert r.status_code == 422
    assert await docs.events("document.shared") == []


async def test_others_cannot_share_revoke_or_delete(docs: DocsEnv, token: Minter) -> None:
    p1 = token("practitioner", "p1")
    doc_id = await docs.uploaded(p1)
    share_id = (await docs.share(p1, doc_id, client_ids=["c1"])).json()["shares"][0]["share_id"]
    for tok in (token("practitioner", "p2"), token("client", "c1"), token("support", "s1")):
        assert (await docs.share(tok, doc_id, client_ids=["c9"])).status_code in (403, 404)
        r = await docs.http.delete(f"/v1/documents/{doc_id}/shares/{share_id}", headers=auth(tok))
        assert r.status_code in (403, 404)
        assert (await docs.http.delete(f"/v1/documents/{doc_id}", headers=auth(tok))).status_code in (403, 404)
    assert (await docs.download(token("client", "c1"), doc_id)).status_code == 200


async def test_every_download_is_in_the_audit_log_for_owner_and_admins(docs: DocsEnv, token: Minter) -> None:
    p1, c1 = token("practitioner", "p1"), token("client", "c1", name="Amina B.")
    doc_id = await docs.uploaded(p1)
    await docs.share(p1, doc_id, client_ids=["c1"])
    await docs.download(c1, doc_id)
    await docs.download(c1, doc_id, Range="bytes=0-3")
    await docs.download(p1, doc_id)
    assert (await docs.download(token("client", "c2"), doc_id)).status_code == 404  # not recorded
    url = f"/v1/documents/{doc_id}/audit"
    for headers in (auth(p1), auth(token("admin", "a1")), api_key_auth()):
        r = await docs.http.get(url, headers=headers)
        assert r.status_code == 200
        entries = r.json()["downloads"]
        assert [(e["user_id"], e["range"]) for e in entries] == [("p1", None), ("c1", [0, 3]), ("c1", None)]
        assert all(e["document_id"] == doc_id and isinstance(e["at"], int) for e in entries)
    for tok in (token("client", "c1"), token("practitioner", "p2"), token("support", "s1")):
        assert (await docs.http.get(url, headers=auth(tok))).status_code == 404
    events = await docs.events("document.downloaded")
    assert len(events) == 3
    assert "Amina" not in json.dumps([e.body for e in events])


async def test_deleting_shreds_the_key_and_the_file(docs: DocsEnv, token: Minter) -> None:
    await put_booking(docs.redis, "b1", "p1", "c1")
    p1, c1 = token("practitioner", "p1"), token("client", "c1")
    doc_id = await docs.uploaded(p1, TEXT, "journal.txt")
    await docs.share(p1, doc_id, booking_id="b1", client_ids=["c2"])
    await docs.download(c1, doc_id)
    assert (await docs.http.delete(f"/v1/documents/{doc_id}", headers=auth(p1))).status_code == 204
    stored = await docs.redis.hgetall(f"ss:doc:{doc_id}")
    assert b"header" not in stored and b"name" not in stored and stored[b"status"] == b"deleted"
    assert docs.files_on_disk() == []
    assert (await docs.download(p1, doc_id)).status_code == 410
    assert (await docs.download(c1, doc_id)).status_code == 404
    assert (await docs.http.get("/v1/documents", headers=auth(c1))).json()["documents"] == []
    assert (await docs.http.get("/v1/documents", headers=auth(p1))).json()["documents"] == []
    assert await docs.redis.zcard("ss:docs:client:c2") == 0
    # The audit trail outlives the document.
    audit = (await docs.http.get(f"/v1/documents/{doc_id}/audit", headers=auth(p1))).json()["downloads"]
    assert [e["user_id"] for e in audit] == ["c1"]
    assert len(await docs.events("document.deleted")) == 1
    again = await docs.http.delete(f"/v1/documents/{doc_id}", headers=auth(p1))
    assert again.status_code == 410


async def test_concurrent_shares_and_revokes_keep_indexes_consistent(docs: DocsEnv, token: Minter) -> None:
    p1 = token("practitioner", "p1")
    doc_id = await docs.uploaded(p1)
    results = await asyncio.gather(*(docs.share(p1, doc_id, client_ids=["c1"]) for _ in range(10)))
    created = [s for r in results for s in r.json()["shares"] if s["created"]]
    assert len(created) == 1
    assert await docs.redis.zcard("ss:docs:client:c1") == 1


async def test_the_demo_document_is_shared_with_the_demo_booking(docs: DocsEnv, token: Minter) -> None:
    from session_server.documents.demo import DEMO_TEXT, seed_demo_document

    await put_booking(docs.redis, "demo-b", "demo-p", "demo-c")
    ctx = docs.app.state.ctx
    first = await seed_demo_document(ctx, "demo-p", "demo-b")
    again = await seed_demo_document(ctx, "demo-p", "demo-b")
    assert again.id == first.id
    room = await docs.http.get("/v1/bookings/demo-b/documents", headers=auth(token("client", "demo-c")))
    [doc] = room.json()["documents"]
    assert doc["id"] == first.id and doc["media_type"] == "text/plain"
    body = await docs.http.get(doc["download_url"], headers=auth(token("client", "demo-c")))
    assert body.content.decode() == DEMO_TEXT
