"""``lumen loadtest prepare``: the data a load test needs on its target, made repeatable.

Members are created as ``lumen users create`` creates them (so it works with registration
closed) and given a token as a login would; photos come from ``lumen seed``'s generator, owned
by those members; the scenarios read only the public ones, which nobody deletes during the run.
The result is a small JSON file, readable by its owner only: it holds bearer tokens."""

from __future__ import annotations

import json
import os
import secrets
import time
import uuid
from pathlib import Path

from sqlalchemy import select

from lumen.auth import issue_token
from lumen.maintenance import seed
from lumen.models import Photo
from lumen.users import create_user
from lumen.visibility import PUBLIC


def prepare(lumen, members: int, photos: int, origin: str | None, progress: bool = True) -> dict:
    """Create ``members`` users with a token each and ``photos`` photos spread over them;
    return what the scenarios read (tokens included: write it only where ``write`` does)."""
    stamp = f"{int(time.time()):x}"[-6:] + secrets.token_hex(2)
    made, expires_at = [], None
    with lumen.unit_of_work() as session:
        for number in range(members):
            # A password nobody knows: the members sign in with their token only.
            user = create_user(session, f"loadtest_{stamp}_{number}", secrets.token_urlsafe(24))
            secret, token = issue_token(session, user, lumen.settings.token_ttl_hours)
            made.append({"id": str(user.id), "token": secret})
            expires_at = token.expires_at
    owners = [uuid.UUID(member["id"]) for member in made]
    seed(lumen, 0, photos, seed_value=int(stamp, 16), owners=owners, progress=progress)
    with lumen.Session() as session:
        public = session.scalars(
            select(Photo.id)
            .where(Photo.owner_id.in_(owners), Photo.visibility == PUBLIC)
            .order_by(Photo.id)
        ).all()
    return {
        "prepared_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "tokens_expire_at": expires_at.isoformat() if expires_at else None,
        "plugins": list(lumen.plugin_names),
        "origin": origin,
        "members": made,
        "photos": [str(photo_id) for photo_id in public],
    }


def write(data: dict, path: Path) -> None:
    """Write the data file with mode 0600 from the start: it holds bearer tokens."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        json.dump(data, file, indent=1)
    os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT


def default_origin(environ) -> str | None:
    """An origin the deployment allows, for the CORS scenario: the first of ALLOWED_ORIGINS,
    else the development default (staging and production allow none by default)."""
    configured = [o.strip() for o in environ.get("ALLOWED_ORIGINS", "").split(",") if o.strip()]
    configured = [o for o in configured if o not in ("*", "null")]
    if configured:
        return configured[0]
    if environ.get("ENVIRONMENT", "development").lower() == "development":
        return "http://localhost:3000"
    return None
