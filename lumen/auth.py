"""Passwords (argon2) and bearer tokens; the middleware that resolves the caller."""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import timedelta

import falcon
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from lumen.models import Token, User, utcnow

_hasher = PasswordHasher()
# Verified when the username is unknown, so a wrong username costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash("lumen-timing-equaliser")
_BEARER = re.compile(r"^Bearer ([A-Za-z0-9_-]{20,128})$")


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


def issue_token(session: Session, user: User, ttl_hours: int) -> tuple[str, Token]:
    secret = secrets.token_urlsafe(32)
    token = Token(
        user_id=user.id,
        token_hash=hash_token(secret),
        expires_at=utcnow() + timedelta(hours=ttl_hours),
    )
    session.add(token)
    session.flush()
    return secret, token


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
        if row is None or row.Token.expires_at <= utcnow():
            raise unauthorized("Authorization: the token is invalid, expired or revoked")
        req.context.token, req.context.user = row.Token, row.User
