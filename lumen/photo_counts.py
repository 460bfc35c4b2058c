"""How many photos a list holds, read from counters instead of counted: ``photo_totals`` (per
visibility, over all owners) and ``owner_photo_counts`` (per owner and visibility).

Triggers on ``photos`` (migration core_0005) keep both in the transaction of every write,
whatever makes it: an upload, a delete, a visibility change, a user deleted with their photos
(ON DELETE CASCADE), a restore, ``lumen seed``. So X-Total-Count stays exact and costs a
primary-key read whatever the size of the table. ``lumen storage check`` compares them with
COUNT(*) and ``--fix`` computes them again.
"""

from __future__ import annotations

from sqlalchemy import delete, func, insert, literal, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from lumen.models import OwnerPhotoCount, Photo, PhotoTotal


def total_of(visibility: str) -> ColumnElement[int]:
    """The number of photos of ``visibility``, as a scalar subquery (the sum of the shards)."""
    return (
        select(func.coalesce(func.sum(PhotoTotal.n), 0))
        .where(PhotoTotal.visibility == visibility)
        .scalar_subquery()
    )


def owner_count_of(owner_id, visibility: str) -> ColumnElement[int]:
    """The number of ``owner_id``'s photos of ``visibility``, as a scalar subquery."""
    return (
        select(func.coalesce(func.sum(OwnerPhotoCount.n), 0))
        .where(OwnerPhotoCount.owner_id == owner_id, OwnerPhotoCount.visibility == visibility)
        .scalar_subquery()
    )


def owner_counts(session: Session, owner_id) -> dict[str, int]:
    """visibility -> how many photos of it ``owner_id`` has (absent: none)."""
    rows = session.execute(
        select(OwnerPhotoCount.visibility, OwnerPhotoCount.n).where(
            OwnerPhotoCount.owner_id == owner_id
        )
    )
    return {visibility: n for visibility, n in rows}


# --- checking and repairing ----------------------------------------------------------------------


def _counted(session) -> tuple[dict, dict]:
    owners = {
        (str(owner), visibility): n
        for owner, visibility, n in session.execute(
            select(Photo.owner_id, Photo.visibility, func.count()).group_by(
                Photo.owner_id, Photo.visibility
            )
        )
    }
    totals: dict[str, int] = {}
    for (_, visibility), n in owners.items():
        totals[visibility] = totals.get(visibility, 0) + n
    return owners, totals


def _kept(session) -> tuple[dict, dict]:
    owners = {
        (str(owner), visibility): n
        for owner, visibility, n in session.execute(
            select(OwnerPhotoCount.owner_id, OwnerPhotoCount.visibility, OwnerPhotoCount.n)
        )
    }
    totals = dict(
        session.execute(
            select(PhotoTotal.visibility, func.sum(PhotoTotal.n)).group_by(PhotoTotal.visibility)
        ).all()
    )
    return owners, totals


def _differences(counted: dict, kept: dict, name) -> list[str]:
    return [
        f"{name(key)}: the counter says {kept.get(key, 0)}, COUNT(*) says {counted.get(key, 0)}"
        for key in sorted(set(counted) | set(kept), key=str)
        if counted.get(key, 0) != kept.get(key, 0)
    ]


def wrong_counters(engine: Engine) -> list[str]:
    """Every counter that differs from COUNT(*) over the photos, said in a line each. The
    counts and the counters are read in one snapshot (REPEATABLE READ on PostgreSQL; a read
    transaction is one snapshot on SQLite), so concurrent writes do not show as differences."""
    options = {"isolation_level": "REPEATABLE READ"} if engine.dialect.name == "postgresql" else {}
    with engine.connect().execution_options(**options) as connection, connection.begin():
        counted_owners, counted_totals = _counted(connection)
        kept_owners, kept_totals = _kept(connection)
    return _differences(
        counted_totals, {k: int(v) for k, v in kept_totals.items()}, lambda v: f"photos {v}"
    ) + _differences(counted_owners, kept_owners, lambda key: f"user {key[0]} photos {key[1]}")


def refill(session: Session) -> None:
    """Compute every counter again from the photos. Writers wait meanwhile: on PostgreSQL the
    photos are locked against writes first, on SQLite the first DELETE takes the write lock."""
    if session.bind.dialect.name == "postgresql":
        session.execute(text("LOCK TABLE photos IN SHARE MODE"))
    session.execute(delete(OwnerPhotoCount))
    session.execute(delete(PhotoTotal))
    by_owner = select(Photo.owner_id, Photo.visibility, func.count()).group_by(
        Photo.owner_id, Photo.visibility
    )
    session.execute(insert(OwnerPhotoCount).from_select(["owner_id", "visibility", "n"], by_owner))
    by_visibility = select(Photo.visibility, literal(0), func.count()).group_by(Photo.visibility)
    session.execute(insert(PhotoTotal).from_select(["visibility", "shard", "n"], by_visibility))
