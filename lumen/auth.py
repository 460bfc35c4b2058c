"""Passwords (argon2) and bearer tokens; the middleware that resolves the caller."""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import timedelta

import falcon
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from lumen.models import Token, User, utcnow

_hasher = PasswordHasher()
# Verified when the username is unknown, so a wrong username costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash("lumen-timing-equaliser")
_BEARER = re.compile(r"^Bearer ([A-Za-z0-9_-]{20,128})$")
# Expired tokens deleted each time a token is issued: bounded work per login, and more than one
# login makes, so they never pile up.
PURGE_BATCH = 100
# last_used_at is written at most this often per token, so reads do not write on every request.
LAST_USED_PRECISION = timedelta(minutes=1)


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


def revoke_all_tokens(session: Session, user: User) -> int:
    """Delete every token of the user (every session, this one too); returns how many."""
    result = session.execute(
        delete(Token).where(Token.user_id == user.id).execution_options(synchronize_session=False)
    )
    return result.rowcount


def unauthorized(description: str) -> falcon.HTTPUnauthorized:
    return falcon.HTTPUnauthorized(
        title="Unauthorized", description=description, challenges=["Bearer"]
    )


def require_user(req: falcon.Request) -> User:
    """The caller, or a 401 for an anonymous request."""
    if req.context.user is None:
        raise unauthorized("Authorization: a valid bearer token is required")
    return req.context.user


class AuthMiddleware:
    """Resolves ``Authorization: Bearer <token>`` into ``req.context.user`` (None when absent),
    after routing. A header that is present but malformed, expired or revoked is a 401 on every
    route, so a client learns at once that its token is bad; a resource that sets
    ``authenticate = False`` (probes, the API document) is answered whatever the header says,
    without opening a database session."""

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource, params):
        header = req.get_header("Authorization")
        if header is None or req.method == "OPTIONS":
            return
        if not getattr(resource, "authenticate", True):
            return
        match = _BEARER.match(header.strip())
        if match is None:
            raise unauthorized("Authorization: must be 'Bearer <token>'")
        row = req.context.db.execute(
            select(Token, User)
            .join(User, User.id == Token.user_id)
            .where(Token.token_hash == hash_token(match[1]))
        ).first()
        now = utcnow()
        if row is None or row.Token.expires_at <= now:
            raise unauthorized("Authorization: the token is invalid, expired or revoked")
        req.context.token, req.context.user = row.Token, row.User
        last_used = row.Token.last_used_at
        if last_used is None or now - last_used >= LAST_USED_PRECISION:
            # Shown at once (GET /api/v1/tokens), written when the request succeeds.
            set_committed_value(row.Token, "last_used_at", now)
            req.context.token_used_at = now

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource, succeeded):
        used_at = getattr(req.context, "token_used_at", None)
        if used_at is None or not succeeded or str(resp.status).startswith(("4", "5")):
            return
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
