"""The core's tables: users, their tokens, and photos."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Stable constraint names, so Alembic migrations can refer to them on every database.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

VISIBILITIES = ("public", "private")
# The largest value an INTEGER column holds: the bound of every integer id and offset.
MAX_INTEGER = 2**31 - 1


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """A timestamp that is always timezone-aware UTC in Python, whatever the database keeps
    (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given for a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    username: Mapped[str] = mapped_column(String(32), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    display_name: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Token(Base):
    __tablename__ = "tokens"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    # Only a hash of the secret is kept: a leaked table gives no usable token.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Indexed: issuing a token purges a bounded batch of expired ones, oldest first.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    # When the token last served a request, to within a minute (null until then).
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Photo(Base):
    __tablename__ = "photos"
    __table_args__ = (
        UniqueConstraint("owner_id", "sha256", name="uq_photos_owner_id_sha256"),
        # The lists' keyset order (created_at, id) within each of their equality filters, so
        # a page at any depth is an index range read (lumen.photo_lists).
        Index("ix_photos_visibility_created_id", "visibility", "created_at", "id"),
        Index(
            "ix_photos_owner_visibility_created_id", "owner_id", "visibility", "created_at", "id"
        ),
        Index(
            "ix_photos_location_visibility_created_id",
            "location_id",
            "visibility",
            "created_at",
            "id",
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    caption: Mapped[str | None] = mapped_column(Text)
    visibility: Mapped[str] = mapped_column(String(10), default="public")
    # Cities live in the locations plugin's tables, which may be absent: no foreign key.
    location_id: Mapped[int | None] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    content_type: Mapped[str] = mapped_column(String(32))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    thumb_sha256: Mapped[str] = mapped_column(String(64), index=True)
    thumb_content_type: Mapped[str] = mapped_column(String(32))
    thumb_size_bytes: Mapped[int] = mapped_column(BigInteger)
    # The copy served to anyone but the owner when the original carries location metadata
    # (EXIF GPS...): a file of its own, content-addressed like the others. Null: the original
    # carries none and is served to everyone.
    public_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    public_size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    taken_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class PhotoTotal(Base):
    """The number of photos of each visibility, over all owners, in a few shards: the sum of
    a visibility's shards is its exact count. Kept by triggers on photos (core_0005) in the
    transaction of every write; shards spread concurrent writers over several rows."""

    __tablename__ = "photo_totals"

    visibility: Mapped[str] = mapped_column(String(10), primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    n: Mapped[int] = mapped_column(BigInteger)


class OwnerPhotoCount(Base):
    """The number of a user's photos of each visibility, kept by the same triggers."""

    __tablename__ = "owner_photo_counts"

    owner_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    visibility: Mapped[str] = mapped_column(String(10), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)


class Maintenance(Base):
    """Maintenance mode, for every worker of every host: a row means writes are refused."""

    __tablename__ = "maintenance"

    # One row at most: id is always 1.
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    message: Mapped[str] = mapped_column(Text)
    retry_after: Mapped[int] = mapped_column(Integer)
    since: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
