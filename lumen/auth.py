"""Passwords (argon2) and bearer tokens; the middleware that resolves the caller."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import falcon
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.orm import Session

from lumen.models import Token, User, utcnow
from lumen.session import after_commit, after_rollback
from lumen.token_cache import TokenCache

_hasher = PasswordHasher()
# Verified when the username is unknown, so a wrong username costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash("lumen-timing-equaliser")
_BEARER = re.compile(r"^Bearer ([A-Za-z0-9_-]{20,128})$")
# Expired tokens deleted each time a token is issued: bounded work per login, and more than one
# login makes, so they never pile up.
PURGE_BATCH = 100
# last_used_at is written at most this often per token, so reads do not write on every request.
LAST_USED_PRECISION = timedelta(minutes=1)
# A cached token is read from the database again after this long, whatever the generation says:
# the bound on a revocation made behind Lumen's back (SQL by hand) or whose renewal was lost.
CACHED_TOKEN_SECONDS = 60.0


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def authenticate(session: Session, username: str, password: str) -> User | None:
    user = session.scalar(select(User).where(User.username == username))
    try:
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None:
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return user


def hash_token(secret: str) -> str:
    # Tokens are 256 random bits: a fast hash is enough, unlike for passwords.
    return hashlib.sha256(secret.encode()).hexdigest()


def purge_expired_tokens(session: Session, limit: int = PURGE_BATCH) -> int:
    """Delete up to ``limit`` expired tokens, the oldest first; returns how many."""
    expired = (
        select(Token.id).where(Token.expires_at <= utcnow()).order_by(Token.expires_at).limit(limit)
    )
    result = session.execute(
        delete(Token)
        .where(Token.id.in_(expired.scalar_subquery()))
        .execution_options(synchronize_session=False)
    )
    return result.rowcount


def issue_token(session: Session, user: User, ttl_hours: int) -> tuple[str, Token]:
    purge_expired_tokens(session)
    secret = secrets.token_urlsafe(32)
    token = Token(
        user_id=user.id,
        token_hash=hash_token(secret),
        expires_at=utcnow() + timedelta(hours=ttl_hours),
    )
    session.add(token)
    session.flush()
    return secret, token


def user_tokens(session: Session, user: User, limit: int, offset: int) -> tuple[list[Token], int]:
    """A page of the user's tokens that still work, newest first, and their total."""
    where = (Token.user_id == user.id, Token.expires_at > utcnow())
    total = session.scalar(select(func.count()).select_from(Token).where(*where))
    tokens = session.scalars(
        select(Token)
        .where(*where)
        .order_by(Token.created_at.desc(), Token.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return list(tokens), total


def revoking(lumen, session: Session) -> None:
    """Before a unit of work deletes tokens: every worker stops using its cached tokens until
    the commit (or rollback), after which none made before matches again."""
    cache = token_cache_of(lumen)
    if cache is None:
        return
    cache.fence()
    after_commit(session, cache.renew)
    after_rollback(session, cache.renew)


def token_cache_of(lumen) -> TokenCache | None:
    """The process's cache of verified tokens (None without Redis: tokens are read each time)."""
    if lumen.redis is None:
        return None
    cache = lumen.state.get("core.tokens")
    if cache is None:
        cache = lumen.state["core.tokens"] = TokenCache(
            lumen.redis, lumen.redis_calls, lumen.settings.token_cache_key
        )
    return cache


def revoke_all_tokens(lumen, session: Session, user: Caller) -> int:
    """Delete every token of the user (every session, this one too); returns how many."""
    revoking(lumen, session)
    result = session.execute(
        delete(Token).where(Token.user_id == user.id).execution_options(synchronize_session=False)
    )
    return result.rowcount


def unauthorized(description: str) -> falcon.HTTPUnauthorized:
    return falcon.HTTPUnauthorized(
        title="Unauthorized", description=description, challenges=["Bearer"]
    )


def require_user(req: falcon.Request) -> Caller:
    """The caller, or a 401 for an anonymous request."""
    if req.context.user is None:
        raise unauthorized("Authorization: a valid bearer token is required")
    return req.context.user


@dataclass(frozen=True)
class Caller:
    """``req.context.user``: the signed-in user's public columns, read with the token."""

    id: uuid.UUID
    username: str
    display_name: str | None
    created_at: datetime


@dataclass(frozen=True)
class CurrentToken:
    """``req.context.token``: the token the request carries."""

    id: uuid.UUID
    user_id: uuid.UUID
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None


_TOKENS, _USERS = Token.__table__, User.__table__
# Built once, run with the hash bound: a Core select of the columns the request needs, no ORM
# objects (loading two entities cost most of a signed-in request's authentication).
_CALLER = (
    select(
        _TOKENS.c.id,
        _TOKENS.c.created_at,
        _TOKENS.c.expires_at,
        _TOKENS.c.last_used_at,
        _USERS.c.id.label("user_id"),
        _USERS.c.username,
        _USERS.c.display_name,
        _USERS.c.created_at.label("user_created_at"),
    )
    .join_from(_TOKENS, _USERS, _USERS.c.id == _TOKENS.c.user_id)
    .where(_TOKENS.c.token_hash == bindparam("token_hash"))
)


def caller_of(session: Session, token_hash: str) -> tuple[CurrentToken, Caller] | None:
    """The token and its user, if the token exists (expired or not)."""
    row = session.connection().execute(_CALLER, {"token_hash": token_hash}).first()
    if row is None:
        return None
    token = CurrentToken(row.id, row.user_id, row.created_at, row.expires_at, row.last_used_at)
    return token, Caller(row.user_id, row.username, row.display_name, row.user_created_at)


def revoke_token(lumen, session: Session, token: CurrentToken) -> None:
    revoking(lumen, session)
    session.execute(
        delete(Token).where(Token.id == token.id).execution_options(synchronize_session=False)
    )


class AuthMiddleware:
    """Resolves ``Authorization: Bearer <token>`` into ``req.context.user`` (None when absent),
    after routing. A header that is present but malformed, expired or revoked is a 401 on every
    route, so a client learns at once that its token is bad; a resource that sets
    ``authenticate = False`` (probes, the API document) is answered whatever the header says,
    without opening a database session. With Redis, each worker caches the tokens it verified
    (lumen.token_cache): a signed-in request then costs a Redis GET instead of a query."""

    def __init__(self, cache: TokenCache | None = None):
        self.cache = cache

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource, params):
        header = req.env.get("HTTP_AUTHORIZATION")  # absent from most requests: no KeyError
        if header is None or req.method == "OPTIONS":
            return
        if not getattr(resource, "authenticate", True):
            return
        match = _BEARER.match(header.strip())
        if match is None:
            raise unauthorized("Authorization: must be 'Bearer <token>'")
        found = self._verified(req, match[1])
        now = utcnow()
        if found is None or found[0].expires_at <= now:
            raise unauthorized("Authorization: the token is invalid, expired or revoked")
        req.context.token, req.context.user = found
        last_used = found[0].last_used_at
        if last_used is None or now - last_used >= LAST_USED_PRECISION:
            # Shown at once (GET /api/v1/tokens), written when the request succeeds.
            req.context.token_used_at = now

    def _verified(self, req: falcon.Request, secret: str) -> tuple[CurrentToken, Caller] | None:
        # Kept by hash: no worker holds a usable secret in memory longer than its request.
        key = req.context.token_hash = hash_token(secret)
        if self.cache is None:
            return caller_of(req.context.db, key)
        generation = self.cache.generation()  # read before the database: see lumen.token_cache
        cached = self.cache.get(key, generation)
        if cached is not None and time.monotonic() - cached[2] < CACHED_TOKEN_SECONDS:
            return cached[:2]
        found = caller_of(req.context.db, key)
        if found is None:
            self.cache.drop(key)
        else:
            self.cache.put(key, generation, (*found, time.monotonic()))
        return found

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource, succeeded):
        used_at = getattr(req.context, "token_used_at", None)
        if used_at is None or not succeeded or str(resp.status).startswith(("4", "5")):
            return
        if self.cache is not None:
            # The cached copy says it was used now: no write again within the minute.
            self.cache.update(
                req.context.token_hash,
                lambda entry: (dataclasses.replace(entry[0], last_used_at=used_at), *entry[1:]),
            )
        # The last statement of the request's transaction: its row lock lasts only to the
        # commit, and on SQLite a long upload does not hold the write lock while it streams.
        # A concurrent request of the same token that wrote it first makes this a no-op.
        req.context.db.execute(
            update(Token)
            .where(
                Token.id == req.context.token.id,
                Token.last_used_at.is_(None)
                | (Token.last_used_at <= used_at - LAST_USED_PRECISION),
            )
            .values(last_used_at=used_at)
            .execution_options(synchronize_session=False)
        )
