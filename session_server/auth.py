"""Identity from the platform: short-lived HS256 JWTs signed with an API secret.

The platform's backend holds an API key id and secret. It calls POST /v1/tokens (or signs tokens
itself) to mint access tokens carrying `sub`, `name`, `role`, `exp` and optional `grants`. The JWT
header's `kid` names the API key whose secret signed it. Only HS256 is accepted; `exp` and `iat` are
required and a token may live at most `token_max_ttl_s`.

A role brings default permissions; a token that carries `grants` narrows them to those listed, so a
permission a token does not grant is denied.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hmac
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from starlette.requests import HTTPConnection

from .errors import Forbidden, InvalidInput, Unauthenticated
from .http import plain_text


class PermissionDenied(Forbidden):
    """The token does not grant the permission this needs (its role's, narrowed by `grants`)."""

    code = "permission_denied"


class WrongRole(Forbidden):
    """The token's role may not do this."""

    code = "wrong_role"


class UnknownGrant(InvalidInput):
    """A grant names no known permission."""

    code = "unknown_grant"


class BadTtl(InvalidInput):
    """`ttl_s` is outside 1 to `SESSION_SERVER_TOKEN_MAX_TTL_S` (`..._SUPPORT_TOKEN_MAX_TTL_S` for support)."""

    code, title = "bad_ttl", "Bad token lifetime"


class BadSub(InvalidInput):
    """`sub` is not 1 to 128 letters, digits or `._@-`."""

    code, title = "bad_sub", "Bad user id"


class BadName(InvalidInput):
    """The name holds control or bidirectional override characters."""

    code = "bad_name"


class BadApiKey(Unauthenticated):
    """Unknown API key id, or a wrong secret."""

    code, title = "bad_api_key", "Bad API key"


class ApiKeyMissing(Unauthenticated):
    """The route needs the API key as HTTP Basic credentials (`key_id:secret`)."""

    code, title = "api_key_missing", "API key missing"


class TokenMissing(Unauthenticated):
    """No `Authorization: Bearer <token>` header."""

    code = "token_missing"


class TokenMalformed(Unauthenticated):
    """The access token is not a JWT."""

    code, title = "token_malformed", "Malformed token"


class TokenAlgorithm(Unauthenticated):
    """The access token is not signed with HS256."""

    code, title = "token_algorithm", "Wrong token algorithm"


class TokenUnknownKey(Unauthenticated):
    """The token's `kid` names no configured API key."""

    code, title = "token_unknown_key", "Unknown token key"


class TokenSignature(Unauthenticated):
    """The access token's signature is wrong."""

    code, title = "token_signature", "Bad token signature"


class TokenInvalid(Unauthenticated):
    """The token's claims are missing, malformed, unknown or live too long."""

    code, title = "token_invalid", "Invalid token"


class TokenExpired(Unauthenticated):
    """The access token has expired: mint a new one."""

    code = "token_expired"


TOKEN_ERRORS: tuple[type[Unauthenticated], ...] = (
    TokenMissing, TokenMalformed, TokenAlgorithm, TokenUnknownKey, TokenSignature, TokenInvalid, TokenExpired)
API_KEY_ERRORS: tuple[type[Unauthenticated], ...] = (ApiKeyMissing, BadApiKey)

# A person's id (a token's `sub`) and the ids of practitioners: letters, digits and `._@-`. Never `:`,
# which separates the parts of Redis keys: "p1:windows" would otherwise name another record's key.
USER_ID = re.compile(r"^[A-Za-z0-9._@-]{1,128}$")

ALGORITHM = "HS256"
LEEWAY_S = 5
VERIFIED_CACHE_SIZE = 4096  # recently verified tokens kept per authority, so a client's requests skip HMAC


class Role(enum.StrEnum):
    CLIENT = "client"
    PRACTITIONER = "practitioner"
    SUPPORT = "support"
    ADMIN = "admin"


class Permission(enum.StrEnum):
    BOOKINGS_READ = "bookings:read"
    BOOKINGS_WRITE = "bookings:write"
    AVAILABILITY_WRITE = "availability:write"
    ROOMS_JOIN = "rooms:join"
    CHAT_SEND = "chat:send"
    DOCUMENTS_READ = "documents:read"
    DOCUMENTS_WRITE = "documents:write"
    NOTIFICATIONS_READ = "notifications:read"
    SUPPORT_MONITOR = "support:monitor"
    ADMIN = "admin"


_P = Permission
ROLE_PERMISSIONS: Mapping[Role, frozenset[Permission]] = {
    Role.CLIENT: frozenset({_P.BOOKINGS_READ, _P.BOOKINGS_WRITE, _P.ROOMS_JOIN, _P.CHAT_SEND,
                            _P.DOCUMENTS_READ, _P.NOTIFICATIONS_READ}),
    Role.PRACTITIONER: frozenset({_P.BOOKINGS_READ, _P.BOOKINGS_WRITE, _P.AVAILABILITY_WRITE, _P.ROOMS_JOIN,
                                  _P.CHAT_SEND, _P.DOCUMENTS_READ, _P.DOCUMENTS_WRITE,
                                  _P.NOTIFICATIONS_READ}),
    Role.SUPPORT: frozenset({_P.BOOKINGS_READ, _P.ROOMS_JOIN, _P.SUPPORT_MONITOR, _P.NOTIFICATIONS_READ}),
    Role.ADMIN: frozenset(Permission),
}


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling, exactly as their token states it."""

    sub: str
    name: str
    role: Role
    permissions: frozenset[Permission]
    grants: tuple[str, ...] | None
    expires_at: int
    token_id: str = ""

    def can(self, permission: Permission) -> bool:
        return permission in self.permissions

    def require(self, permission: Permission) -> None:
        if permission not in self.permissions:
            raise PermissionDenied(f"this token does not grant {permission.value}")

    def require_role(self, *roles: Role) -> None:
        if self.role not in roles:
            allowed = ", ".join(r.value for r in roles)
            raise WrongRole(f"this needs the role {allowed}")

    def as_json(self) -> dict[str, Any]:
        return {"sub": self.sub, "name": self.name, "role": self.role.value,
                "permissions": sorted(p.value for p in self.permissions),
                "grants": list(self.grants) if self.grants is not None else None,
                "expires_at": self.expires_at}


def _plain_name(name: object) -> bool:
    """A name the other party will be shown: text, without control or bidirectional override characters."""
    try:
        return isinstance(name, str) and plain_text(name) == name
    except ValueError:
        return False


def _permissions(role: Role, grants: Iterable[str] | None) -> frozenset[Permission]:
    base = ROLE_PERMISSIONS[role]
    if grants is None:
        return base
    granted = set()
    for g in grants:
        try:
            granted.add(Permission(g))
        except ValueError:
            raise UnknownGrant(f"unknown grant {g!r}") from None
    return base & frozenset(granted)


class TokenAuthority:
    """Mints and verifies access tokens with the configured API keys (key id -> secret)."""

    def __init__(self, api_keys: Mapping[str, str], *, max_ttl_s: int,
                 clock: Callable[[], float] = time.time, role_max_ttl_s: Mapping[Role, int] | None = None) -> None:
        if not api_keys:
            raise ValueError("at least one API key is needed")
        self._clock = clock
        self._keys = dict(api_keys)
        self._default_kid = next(iter(self._keys))
        self.max_ttl_s = max_ttl_s
        # roles whose tokens live shorter than `max_ttl_s` (support staff: a shift at most)
        self._role_max_ttl_s = {r: min(t, max_ttl_s) for r, t in (role_max_ttl_s or {}).items()}
        # token string -> its identity, least recently used first; only tokens that verified, and each
        # entry honours the token's expiry (checked again on every hit, with the same leeway as decode)
        self._verified: OrderedDict[str, Identity] = OrderedDict()

    def max_ttl_for(self, role: Role) -> int:
        """The longest a token of `role` may live."""
        return self._role_max_ttl_s.get(role, self.max_ttl_s)

    def check_api_key(self, key_id: str, secret: str) -> str:
        expected = self._keys.get(key_id)
        # compare_digest even for unknown ids, so timing does not reveal which ids exist
        ok = hmac.compare_digest((expected or "\0" * 32).encode(), secret.encode())
        if expected is None or not ok:
            raise BadApiKey("unknown API key or wrong secret")
        return key_id

    def mint(self, *, sub: str, name: str, role: Role, ttl_s: int, grants: Iterable[str] | None = None,
             key_id: str | None = None, now: float | None = None) -> tuple[str, int]:
        longest = self.max_ttl_for(role)
        if not 1 <= ttl_s <= longest:
            raise BadTtl(f"ttl_s must be between 1 and {longest} for the role {role.value}")
        if not USER_ID.fullmatch(sub):
            raise BadSub("sub must be 1 to 128 letters, digits or ._@-")
        if not _plain_name(name):
            raise BadName("name must be text without control or bidirectional override characters")
        grants_list = None if grants is None else list(grants)
        _permissions(role, grants_list)  # refuse unknown grants now, not at first use
        kid = key_id or self._default_kid
        issued = int(now if now is not None else self._clock())
        claims: dict[str, Any] = {"sub": sub, "name": name, "role": role.value, "iat": issued,
                                  "exp": issued + ttl_s, "jti": uuid.uuid4().hex}
        if grants_list is not None:
            claims["grants"] = grants_list
        token = jwt.encode(claims, self._keys[kid], algorithm=ALGORITHM, headers={"kid": kid})
        return token, issued + ttl_s

    def verify(self, token: str) -> Identity:
        cached = self._verified.get(token)
        if cached is not None:
            if self._clock() < cached.expires_at + LEEWAY_S:
                self._verified.move_to_end(token)
                return cached
            del self._verified[token]  # expired: decode again, which refuses it as expired
        identity = self._verify(token)
        self._verified[token] = identity
        if len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return identity

    def _verify(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenMalformed("the access token is malformed") from None
        if header.get("alg") != ALGORITHM:
            raise TokenAlgorithm("only HS256 tokens are accepted")
        kid = header.get("kid", self._default_kid)
        secret = self._keys.get(kid) if isinstance(kid, str) else None
        if secret is None:
            raise TokenUnknownKey("the token names an unknown key")
        try:
            # Times are checked below against this authority's clock (the app's), the one the cache uses.
            claims = jwt.decode(token, secret, algorithms=[ALGORITHM], leeway=LEEWAY_S,
                                options={"require": ["exp", "iat", "sub", "role"], "verify_exp": False,
                                         "verify_iat": False, "verify_nbf": False})
        except jwt.InvalidSignatureError:
            raise TokenSignature("the access token's signature is wrong") from None
        except jwt.PyJWTError:
            raise TokenInvalid("the access token is invalid") from None
        identity = self._identity(claims)
        now = self._clock()
        if not now < identity.expires_at + LEEWAY_S:
            raise TokenExpired("the access token has expired")
        not_before = claims.get("nbf", claims["iat"])
        if not isinstance(not_before, int) or not_before > now + LEEWAY_S:
            raise TokenInvalid("the access token is invalid")  # issued in the future, as PyJWT would say
        return identity

    def _identity(self, claims: Mapping[str, Any]) -> Identity:
        try:
            role = Role(claims["role"])
        except ValueError:
            raise TokenInvalid("the token's role is unknown") from None
        exp, iat = claims["exp"], claims["iat"]
        # the role's own limit (a support token lives a shift at most), whoever signed it: a token minted
        # elsewhere with a longer life is refused, not trusted for longer than the role may be
        if not isinstance(exp, int) or not isinstance(iat, int) or exp - iat > self.max_ttl_for(role) + LEEWAY_S:
            raise TokenInvalid("the token lives longer than allowed")
        sub, name = claims["sub"], claims.get("name", "")
        grants = claims.get("grants")
        if (not isinstance(sub, str) or not USER_ID.fullmatch(sub) or not _plain_name(name)
                or (grants is not None and not (isinstance(grants, list)
                                                and all(isinstance(g, str) for g in grants)))):
            raise TokenInvalid("the token's claims are malformed")
        try:
            permissions = _permissions(role, grants)
        except InvalidInput:
            raise TokenInvalid("the token grants unknown permissions") from None
        return Identity(sub=sub, name=name, role=role, permissions=permissions,
                        grants=tuple(grants) if grants is not None else None, expires_at=exp,
                        token_id=str(claims.get("jti", "")))


def bearer_token(conn: HTTPConnection) -> str:
    header = conn.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenMissing("send an access token as 'Authorization: Bearer <token>'",
                           headers={"WWW-Authenticate": "Bearer"})
    return token.strip()


def authenticate(conn: HTTPConnection) -> Identity:
    """The caller's identity from the request's bearer token (401 if absent or invalid)."""
    authority: TokenAuthority = conn.app.state.ctx.tokens
    return authority.verify(bearer_token(conn))


def api_key_credentials(conn: HTTPConnection) -> tuple[str, str]:
    """API key id and secret from HTTP Basic auth (key id as the user name)."""
    header = conn.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() == "basic":
        try:
            key_id, sep, secret = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            sep = ""
        if sep:
            return key_id, secret
    raise ApiKeyMissing("authenticate with the API key id and secret as HTTP Basic credentials",
                        headers={"WWW-Authenticate": 'Basic realm="api"'})


def _platform(conn: HTTPConnection) -> Identity | None:
    """The platform's backend, an admin, when the request carries its API key (Basic auth)."""
    if conn.headers.get("authorization", "").partition(" ")[0].lower() != "basic":
        return None
    authority: TokenAuthority = conn.app.state.ctx.tokens
    key_id = authority.check_api_key(*api_key_credentials(conn))
    return Identity(sub=f"api-key:{key_id}", name="platform", role=Role.ADMIN,
                    permissions=ROLE_PERMISSIONS[Role.ADMIN], grants=None, expires_at=0)


def authenticate_admin(conn: HTTPConnection) -> Identity:
    """An admin: either an admin token, or the platform's backend with its API key (Basic auth)."""
    platform = _platform(conn)
    if platform is not None:
        return platform
    identity = authenticate(conn)
    identity.require_role(Role.ADMIN)
    return identity


def authenticate_any(conn: HTTPConnection) -> Identity:
    """Any token's identity, or the platform's backend (an admin) with its API key."""
    platform = _platform(conn)
    return platform if platform is not None else authenticate(conn)
