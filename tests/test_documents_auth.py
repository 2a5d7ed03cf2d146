"""Only the owner and the people a document was shared with can read it."""

from __future__ import annotations

import time

import jwt

from .conftest import API_KEY_ID, API_SECRET, api_key_auth, auth
from .documents_support import PDF, DocsEnv, Minter, docs, problem_code, put_booking

__all__ = ["docs"]


async def shared_document(docs: DocsEnv, token: Minter) -> str:
    await put_booking(docs.redis, "b1", "p1", "c1")
    p1 = token("practitioner", "p1")
    doc_id = await docs.uploaded(p1)
    assert (await docs.share(p1, doc_id, booking_id="b1", client_ids=["c2"])).status_code == 201
    return doc_id


async def cannot_read(docs: DocsEnv, headers: dict[str, str], doc_id: str) -> set[int]:
    statuses = set()
    for path in (f"/v1/documents/{doc_id}/content", f"/v1/documents/{doc_id}"):
        r = await docs.http.get(path, headers=headers)
        assert PDF not in r.content
        statuses.add(r.status_code)
    return statuses


async def test_the_owner_and_both_shared_clients_can_read(docs: DocsEnv, token: Minter) -> None:
    doc_id = await shared_document(docs, token)
    for tok in (token("practitioner", "p1"), token("client", "c1"), token("client", "c2")):
        assert (await docs.download(tok, doc_id)).content == PDF


async def test_another_client_cannot_read(docs: DocsEnv, token: Minter) -> None:
    doc_id = await shared_document(docs, token)
    assert await cannot_read(docs, auth(token("client", "c3")), doc_id) == {404}
    assert (await docs.http.get("/v1/documents", headers=auth(token("client", "c3")))).json() == {
        "documents": []}


async def test_another_practitioner_cannot_read(docs: DocsEnv, token: Minter) -> None:
    doc_id = await shared_document(docs, token)
    assert await cannot_read(docs, auth(token("practitioner", "p2")), doc_id) == {404}


async def test_the_client_of_another_booking_of_the_same_practitioner_cannot_read(
        docs: DocsEnv, token: Minter) -> None:
    doc_id = await shared_document(docs, token)
    await put_booking(docs.redis, "b2", "p1", "c5")
    assert await cannot_read(docs, auth(token("client", "c5")), doc_id) == {404}
    r = await docs.http.get("/v1/bookings/b1/documents", headers=auth(token("client", "c5")))
    assert r.status_code == 404


async def test_support_staff_cannot_read(docs: DocsEnv, token: Minter) -> None:
    doc_id = await shared_document(docs, token)
    support = auth(token("support", "s1"))
    assert await cannot_read(docs, support, doc_id) == {403}
    assert (await docs.http.get("/v1/documents", headers=support)).status_code == 403
    assert (await docs.http.get("/v1/bookings/b1/documents", headers=support)).status_code == 404


async def test_admins_read_the_audit_but_not_the_content(docs: DocsEnv, token: Minter) -> None:
    doc_id = await shared_document(docs, token)
    assert await cannot_read(docs, auth(token("admin", "a1")), doc_id) == {404}
    assert await cannot_read(docs, api_key_auth(), doc_id) == {401}


async def test_an_expired_token_cannot_read(docs: DocsEnv, token: Minter) -> None:
    doc_id = await shared_document(docs, token)
    now = int(time.time())
    expired = jwt.encode({"sub": "c1", "name": "c1", "role": "client", "iat": now - 7200, "exp": now - 3600},
                         API_SECRET, algorithm="HS256", headers={"kid": API_KEY_ID})
    r = await docs.download(expired, doc_id)
    assert r.status_code == 401 and problem_code(r) == "token_expired"


async def test_a_token_without_the_documents_grant_cannot_read(docs: DocsEnv, token: Minter) -> None:
    doc_id = await shared_document(docs, token)
    narrowed = token("client", "c1", grants=["chat:send"])
    assert await cannot_read(docs, auth(narrowed), doc_id) == {403}


async def test_no_token_or_a_forged_token_cannot_read(docs: DocsEnv, token: Minter) -> None:
    doc_id = await shared_document(docs, token)
    assert await cannot_read(docs, {}, doc_id) == {401}
    forged = jwt.encode({"sub": "c1", "role": "client", "iat": int(time.time()), "exp": int(time.time()) + 60},
                        "x" * 40, algorithm="HS256", headers={"kid": API_KEY_ID})
    assert await cannot_read(docs, auth(forged), doc_id) == {401}


async def test_a_revoked_share_cannot_read(docs: DocsEnv, token: Minter) -> None:
    doc_id = await shared_document(docs, token)
    p1 = auth(token("practitioner", "p1"))
    shares = (await docs.http.get(f"/v1/documents/{doc_id}/shares", headers=p1)).json()["shares"]
    for s in shares:
        assert (await docs.http.delete(f"/v1/documents/{doc_id}/shares/{s['id']}", headers=p1)).status_code == 204
    for client in ("c1", "c2"):
        assert await cannot_read(docs, auth(token("client", client)), doc_id) == {404}


async def test_malformed_ids_are_not_found(docs: DocsEnv, token: Minter) -> None:
    tok = token("practitioner", "p1")
    for bad in ("..%2F..%2Fetc", "x" * 32, "ABCDEF" * 6):
        r = await docs.http.get(f"/v1/documents/{bad}/content", headers=auth(tok))
        assert r.status_code == 404
