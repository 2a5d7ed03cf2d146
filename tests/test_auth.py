"""Access tokens: only valid, unexpired HS256 tokens signed with a configured API secret get in."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Callable

import httpx
import jwt
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from session_server.app import create_app
from session_server.auth import BadSub, Permission, Role, TokenAuthority, authenticate
from session_server.context import AppContext
from session_server.errors import Unauthenticated
from session_server.settings import Settings

from .conftest import API_KEY_ID, API_SECRET, api_key_auth, auth, running


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(**over: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {"sub": "u1", "name": "N", "role": "client", "iat": now, "exp": now + 600}
    claims.update(over)
    return claims


async def test_me_returns_the_identity_the_token_states(client: httpx.AsyncClient,
                                                        token: Callable[..., str]) -> None:
    r = await client.get("/v1/me", headers=auth(token("practitioner", "p-1", "Dr. Samira")))
    assert r.status_code == 200
    body = r.json()
    assert (body["sub"], body["name"], body["role"]) == ("p-1", "Dr. Samira", "practitioner")
    assert "documents:write" in body["permissions"]
    assert r.headers["cache-control"] == "no-store"


async def test_the_platform_mints_tokens_with_its_api_key(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/tokens", headers=api_key_auth(),
                          json={"sub": "c-7", "name": "Amina", "role": "client", "ttl_s": 900})
    assert r.status_code == 201
    minted = r.json()
    assert minted["expires_at"] - time.time() == pytest.approx(900, abs=5)
    me = await client.get("/v1/me", headers=auth(minted["token"]))
    assert me.json()["sub"] == "c-7"


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Basic " + base64.b64encode(f"{API_KEY_ID}:wrong".encode()).decode()},
    {"Authorization": "Basic " + base64.b64encode(f"nokey:{API_SECRET}".encode()).decode()},
    {"Authorization": "Basic !!!notbase64"},
])
async def test_minting_without_the_right_api_key_is_refused(client: httpx.AsyncClient,
                                                            headers: dict[str, str]) -> None:
    r = await client.post("/v1/tokens", headers=headers, json={"sub": "x", "role": "admin"})
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("body", [
    {"sub": "x", "role": "king"},
    {"sub": "x", "role": "client", "ttl_s": 2 * 24 * 3600},
    {"sub": "", "role": "client"},
    {"sub": "x", "role": "client", "grants": ["teleport"]},
    {"sub": "x", "role": "client", "extra": 1},
    {"sub": "p1:windows", "role": "client"},  # ":" would name another record's Redis key
    {"sub": "x", "name": "Dr\u202eevil", "role": "client"},  # the other party is shown the name
])
async def test_minting_refuses_bad_requests(client: httpx.AsyncClient, body: dict[str, object]) -> None:
    r = await client.post("/v1/tokens", headers=api_key_auth(), json=body)
    assert r.status_code == 422, r.text
    assert r.json()["code"] in ("invalid_input", "bad_ttl", "unknown_grant")


def _forged() -> str:
    good = jwt.encode(_claims(), API_SECRET, algorithm="HS256", headers={"kid": API_KEY_ID})
    head, _, sig = good.split(".")
    return f"{head}.{_b64(_claims(role='admin'))}.{sig}"


BAD_TOKENS: dict[str, Callable[[], str]] = {
    "expired": lambda: jwt.encode(_claims(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600),
                                  API_SECRET, algorithm="HS256", headers={"kid": API_KEY_ID}),
    "forged": _forged,
    "unsigned": lambda: f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims())}.",
    "wrong key": lambda: jwt.encode(_claims(), "another-secret-another-secret-xx", algorithm="HS256",
                                    headers={"kid": API_KEY_ID}),
    "unknown key id": lambda: jwt.encode(_claims(), API_SECRET, algorithm="HS256", headers={"kid": "zz"}),
    "HS512": lambda: jwt.encode(_claims(), API_SECRET, algorithm="HS512", headers={"kid": API_KEY_ID}),
    "malformed": lambda: "not.a.jwt",
    "garbage": lambda: "%%%",
    "no exp": lambda: jwt.encode({k: v for k, v in _claims().items() if k != "exp"}, API_SECRET,
                                 algorithm="HS256", headers={"kid": API_KEY_ID}),
    "lives two days": lambda: jwt.encode(_claims(exp=int(time.time()) + 2 * 86400), API_SECRET,
                                         algorithm="HS256", headers={"kid": API_KEY_ID}),
    "unknown role": lambda: jwt.encode(_claims(role="root"), API_SECRET, algorithm="HS256",
                                       headers={"kid": API_KEY_ID}),
    "unknown grant": lambda: jwt.encode(_claims(grants=["root"]), API_SECRET, algorithm="HS256",
                                        headers={"kid": API_KEY_ID}),
    "sub with a colon": lambda: jwt.encode(_claims(sub="c1:unread"), API_SECRET, algorithm="HS256",
                                           headers={"kid": API_KEY_ID}),
    "name with an escape": lambda: jwt.encode(_claims(name="Dr\u001b[31m"), API_SECRET, algorithm="HS256",
                                              headers={"kid": API_KEY_ID}),
}


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
async def test_bad_tokens_get_401(client: httpx.AsyncClient, kind: str) -> None:
    r = await client.get("/v1/me", headers=auth(BAD_TOKENS[kind]()))
    assert r.status_code == 401, kind
    problem = r.json()
    assert problem["status"] == 401 and problem["code"].startswith("token_")


async def test_a_missing_or_non_bearer_authorization_gets_401(client: httpx.AsyncClient) -> None:
    for headers in ({}, {"Authorization": "Token abc"}, {"Authorization": "Bearer "}):
        r = await client.get("/v1/me", headers=headers)
        assert r.status_code == 401
        assert r.json()["code"] == "token_missing"


class GuardedFeature:
    """Two routes guarded by role and by permission, as every feature's routes are."""

    name = "guarded"

    def routes(self) -> list[BaseRoute]:
        async def practitioners_only(request: Request) -> Response:
            authenticate(request).require_role(Role.PRACTITIONER)
            return JSONResponse({"ok": True})

        async def upload(request: Request) -> Response:
            authenticate(request).require(Permission.DOCUMENTS_WRITE)
            return JSONResponse({"ok": True})

        return [Route("/t/practitioners", practitioners_only), Route("/t/upload", upload)]

    async def start(self, ctx: AppContext) -> None:
        pass

    async def stop(self, ctx: AppContext) -> None:
        pass


@pytest.fixture
async def guarded(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, features=[GuardedFeature()])
    async with running(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                base_url="http://127.0.0.1") as c:
        yield c


async def test_a_valid_token_with_the_wrong_role_gets_403(guarded: httpx.AsyncClient,
                                                          token: Callable[..., str]) -> None:
    assert (await guarded.get("/t/practitioners", headers=auth(token("practitioner", "p")))).status_code == 200
    r = await guarded.get("/t/practitioners", headers=auth(token("client", "c")))
    assert r.status_code == 403 and r.json()["code"] == "wrong_role"


async def test_a_permission_the_token_does_not_grant_is_denied(guarded: httpx.AsyncClient,
                                                                token: Callable[..., str]) -> None:
    narrowed = token("practitioner", "p", grants=["rooms:join", "chat:send"])
    r = await guarded.get("/t/upload", headers=auth(narrowed))
    assert r.status_code == 403 and r.json()["code"] == "permission_denied"
    assert (await guarded.get("/t/upload", headers=auth(token("practitioner", "p")))).status_code == 200
    # grants narrow a role, never widen it
    widened = token("client", "c", grants=["documents:write"])
    assert (await guarded.get("/t/upload", headers=auth(widened))).status_code == 403


def test_the_cli_mints_a_token_the_server_accepts(tmp_path: object) -> None:
    import subprocess
    import sys

    env = {"SESSION_SERVER_API_KEYS": f"{API_KEY_ID}:{API_SECRET}", "PATH": "/usr/bin",
           "SESSION_SERVER_DATA_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "session_server.cli", "token", "--role", "support",
                          "--sub", "s-1", "--name", "Nadia"], env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout.strip()
    claims = jwt.decode(out, API_SECRET, algorithms=["HS256"])
    assert (claims["sub"], claims["role"], claims["name"]) == ("s-1", "support", "Nadia")
    assert claims["exp"] - claims["iat"] == 3600


def test_a_support_token_living_longer_than_a_shift_is_refused_whoever_signed_it(tmp_path: object) -> None:
    """The server's limit for support tokens holds for a token signed with the key elsewhere (a script, an old
    version of the command), and the command refuses to make one."""
    import subprocess
    import sys

    server = TokenAuthority({API_KEY_ID: API_SECRET}, max_ttl_s=24 * 3600, role_max_ttl_s={Role.SUPPORT: 8 * 3600})
    elsewhere = TokenAuthority({API_KEY_ID: API_SECRET}, max_ttl_s=24 * 3600)
    day_long, _ = elsewhere.mint(sub="s-1", name="Nadia", role=Role.SUPPORT, ttl_s=24 * 3600)
    with pytest.raises(Unauthenticated, match="lives longer than allowed"):
        server.verify(day_long)
    shift, _ = elsewhere.mint(sub="s-1", name="Nadia", role=Role.SUPPORT, ttl_s=8 * 3600)
    assert server.verify(shift).role is Role.SUPPORT
    # a client's day-long token is still fine: the limit is the support role's
    assert server.verify(elsewhere.mint(sub="c-1", name="A", role=Role.CLIENT, ttl_s=24 * 3600)[0]).sub == "c-1"

    env = {"SESSION_SERVER_API_KEYS": f"{API_KEY_ID}:{API_SECRET}", "PATH": "/usr/bin",
           "SESSION_SERVER_DATA_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "session_server.cli", "token", "--role", "support", "--sub", "s-1",
                           "--ttl", str(24 * 3600)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: ttl_s must be between 1 and 28800 for the role support")


def test_a_token_verified_once_is_still_refused_after_it_expires() -> None:
    now = [time.time()]
    authority = TokenAuthority({API_KEY_ID: API_SECRET}, max_ttl_s=3600, clock=lambda: now[0])
    tok, exp = authority.mint(sub="c-1", name="A", role=Role.CLIENT, ttl_s=60, now=now[0])
    assert authority.verify(tok).sub == "c-1"
    assert authority.verify(tok).sub == "c-1"  # served from the cache of verified tokens
    now[0] = exp + 10
    with pytest.raises(Unauthenticated) as info:
        authority.verify(tok)
    assert info.value.code == "token_expired"
    with pytest.raises(Unauthenticated):
        authority.verify(tok)  # and stays refused


def test_tokens_are_judged_by_the_authority_s_clock_not_the_machine_s() -> None:
    """A server on a clock years ahead (a test's ManualClock) accepts the tokens it mints at its own time,
    and refuses one issued later than its clock says, as a token from the future."""
    now = [time.time() + 5 * 365 * 86400]
    authority = TokenAuthority({API_KEY_ID: API_SECRET}, max_ttl_s=3600, clock=lambda: now[0])
    tok, _ = authority.mint(sub="c-1", name="A", role=Role.CLIENT, ttl_s=600)
    assert authority.verify(tok).sub == "c-1"
    ahead, _ = authority.mint(sub="c-2", name="B", role=Role.CLIENT, ttl_s=600, now=now[0] + 120)
    with pytest.raises(Unauthenticated) as info:
        authority.verify(ahead)
    assert info.value.code == "token_invalid"


def test_an_id_with_a_trailing_newline_is_refused_when_minting() -> None:
    authority = TokenAuthority({API_KEY_ID: API_SECRET}, max_ttl_s=3600)
    with pytest.raises(BadSub) as info:
        authority.mint(sub="c-1\n", name="A", role=Role.CLIENT, ttl_s=60)
    assert info.value.code == "bad_sub"
