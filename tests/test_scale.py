"""Lists whose cost does not grow with the table: counters kept by triggers, keyset cursors,
the bound on offset, and `lumen seed --bulk`. On both backends."""

from __future__ import annotations

import base64
import os
import random
import re
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import OperationalError

from lumen import photo_counts, photo_lists
from lumen.bulk_seed import bulk_seed, file_pool_size
from lumen.maintenance import check_storage
from lumen.models import OwnerPhotoCount, Photo, User
from lumen.resources.paging import MAX_OFFSET, Cursor, Page
from tests.conftest import multipart

pytestmark = pytest.mark.integration
BASE = datetime(2026, 1, 1, tzinfo=UTC)


def add_user(session, name=None) -> User:
    user = User(username=name or f"u{uuid.uuid4().hex[:10]}", password_hash="x")
    session.add(user)
    session.flush()
    return user


def add_photo(session, owner_id, created_at, visibility="public", location_id=None) -> Photo:
    photo = Photo(
        owner_id=owner_id,
        visibility=visibility,
        location_id=location_id,
        width=1,
        height=1,
        content_type="image/jpeg",
        size_bytes=1,
        sha256=uuid.uuid4().hex * 2,
        thumb_sha256="t" * 64,
        thumb_content_type="image/webp",
        thumb_size_bytes=1,
        created_at=created_at,
        updated_at=created_at,
    )
    session.add(photo)
    return photo


def true_counts(session, viewer_id=None, owner_id=None) -> int:
    where = [Photo.visibility == "public"]
    if viewer_id is not None:
        where = [(Photo.visibility == "public") | (Photo.owner_id == viewer_id)]
    if owner_id is not None:
        where.append(Photo.owner_id == owner_id)
    return session.scalar(select(func.count()).select_from(Photo).where(*where))


# --- counters -------------------------------------------------------------------------------------


def at_once(work, count: int) -> None:
    """Run ``work(0)`` to ``work(count - 1)`` in threads at the same time, and wait for all."""
    threads = [threading.Thread(target=work, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_counters_stay_exact_under_concurrent_writers(app):
    """Threads upload, delete and flip the visibility of photos at once, each change its own
    transaction: the counters end equal to COUNT(*) (no lost update), and the lists' totals
    and the profiles say the same."""
    lumen = app.lumen
    with lumen.unit_of_work() as session:
        owners = [add_user(session).id for _ in range(3)]
    errors, retried = [], []

    def work(seed: int):
        # Each thread changes only photos it made (two deleting one row would be a conflict
        # of the test's own making), but all share the owners' and the totals' counter rows.
        rng, mine = random.Random(seed), []
        for step in range(40):
            try:
                with lumen.unit_of_work() as session:
                    action = rng.random()
                    if action < 0.5 or not mine:
                        created = BASE + timedelta(seconds=seed * 1000 + step)
                        visibility = rng.choice(("public", "private"))
                        photo = add_photo(session, rng.choice(owners), created, visibility)
                        session.flush()
                        made = photo.id
                    elif action < 0.75:
                        session.delete(session.get(Photo, mine.pop(rng.randrange(len(mine)))))
                        made = None
                    else:
                        photo = session.get(Photo, rng.choice(mine))
                        photo.visibility = "private" if photo.visibility == "public" else "public"
                        made = None
                if made is not None:
                    mine.append(made)
            except OperationalError as exc:  # a PostgreSQL deadlock victim is refused whole
                retried.append(exc)
            except Exception as exc:
                errors.append(exc)

    at_once(work, 4)
    assert errors == []
    assert len(retried) < 5
    with lumen.Session() as session:
        assert photo_counts.wrong_counters(lumen.engine) == []
        assert session.scalar(select(func.count()).select_from(Photo)) > 20
        for owner in owners:
            public, everything = (
                true_counts(session, owner_id=owner),
                true_counts(session, owner, owner),
            )
            assert session.scalar(photo_lists.total_query(None, owner)) == public
            assert session.scalar(photo_lists.total_query(User(id=owner), owner)) == everything
            assert session.scalar(photo_lists.total_query(User(id=owner))) == true_counts(
                session, owner
            )
        assert session.scalar(photo_lists.total_query(None)) == true_counts(session)


def test_totals_through_the_api_follow_every_kind_of_write(client, api, app):
    """Upload, visibility change, delete, and a user deleted with their photos (ON DELETE
    CASCADE, which no Python code sees): X-Total-Count and photo_count follow each."""
    alice, bob = api.user(), api.user()

    def totals():
        anonymous = client.simulate_get("/api/v1/photos").headers["x-total-count"]
        signed_in = client.simulate_get("/api/v1/photos", headers=alice["headers"])
        own = client.simulate_get(f"/api/v1/users/{alice['id']}", headers=alice["headers"])
        return int(anonymous), int(signed_in.headers["x-total-count"]), own.json["photo_count"]

    first = api.upload(alice)
    api.upload(alice, image=jpeg_of(2), visibility="private")
    api.upload(bob, image=jpeg_of(3))
    assert totals() == (2, 3, 2)
    changed = client.simulate_patch(
        f"/api/v1/photos/{first['id']}", json={"visibility": "private"}, headers=alice["headers"]
    )
    assert changed.status_code == 200
    assert totals() == (1, 3, 2)
    gone = client.simulate_delete(f"/api/v1/photos/{first['id']}", headers=alice["headers"])
    assert gone.status_code == 204
    assert totals() == (1, 2, 1)
    with app.lumen.unit_of_work() as session:
        session.execute(delete(User).where(User.id == uuid.UUID(bob["id"])))
    assert totals() == (0, 1, 1)
    with app.lumen.Session() as session:
        assert photo_counts.wrong_counters(app.lumen.engine) == []
        assert (
            session.scalar(
                select(func.count())
                .select_from(OwnerPhotoCount)
                .where(OwnerPhotoCount.owner_id == uuid.UUID(bob["id"]))
            )
            == 0
        )


def test_counters_stay_exact_under_concurrent_requests(client, api, app):
    """The same through the API: threads upload, edit the visibility of and delete their
    photos at once (real upload path: files, quotas, locks, events)."""
    users = [api.user() for _ in range(2)]
    errors = []

    def work(seed: int):
        rng, mine = random.Random(seed), []
        user = users[seed % 2]
        try:
            for step in range(8):
                if step < 4 or not mine:
                    image = jpeg_of(seed * 16 + step + 1)
                    body, content_type = multipart({"file": ("p.jpg", image)})
                    headers = {**user["headers"], "Content-Type": content_type}
                    made = client.simulate_post("/api/v1/photos", body=body, headers=headers)
                    assert made.status_code == 201, made.text
                    mine.append(made.json["id"])
                elif rng.random() < 0.5:
                    gone = client.simulate_delete(
                        f"/api/v1/photos/{mine.pop()}", headers=user["headers"]
                    )
                    assert gone.status_code == 204, gone.text
                else:
                    edited = client.simulate_patch(
                        f"/api/v1/photos/{rng.choice(mine)}",
                        json={"visibility": rng.choice(("public", "private"))},
                        headers=user["headers"],
                    )
                    assert edited.status_code == 200, edited.text
        except Exception as exc:
            errors.append(exc)

    at_once(work, 4)
    assert errors == []
    assert photo_counts.wrong_counters(app.lumen.engine) == []
    with app.lumen.Session() as session:
        everything = session.scalar(select(func.count()).select_from(Photo))
        assert 8 <= everything < 16  # 16 uploads, some deleted
        assert int(client.simulate_get("/api/v1/photos").headers["x-total-count"]) == (
            true_counts(session)
        )


def jpeg_of(n: int) -> bytes:
    from tests.conftest import jpeg

    return jpeg(color=(n % 256, n * 37 % 256, 200))  # distinct bytes for n < 256


def test_storage_check_finds_wrong_counters_and_fix_repairs_them(app):
    lumen = app.lumen
    with lumen.unit_of_work() as session:
        owner = add_user(session)
        for n in range(3):
            add_photo(session, owner.id, BASE + timedelta(seconds=n))
    with lumen.unit_of_work() as session:
        session.execute(text("UPDATE photo_totals SET n = n + 7"))
        session.execute(update(OwnerPhotoCount).values(n=OwnerPhotoCount.n - 1))
    report = check_storage(lumen, progress=False)
    assert not report.clean
    assert any(line.startswith("photos public: the counter says") for line in report.wrong_counters)
    assert f"user {owner.id} photos public: the counter says 2, COUNT(*) says 3" in (
        report.wrong_counters
    )
    check_storage(lumen, fix=True, progress=False)
    with lumen.Session() as session:
        assert photo_counts.wrong_counters(lumen.engine) == []
    assert check_storage(lumen, progress=False).wrong_counters == []


# --- cursors --------------------------------------------------------------------------------------


def link_of(result, rel: str) -> str | None:
    for part in (result.headers.get("link") or "").split(", "):
        match = re.fullmatch(r'<([^>]*)>; rel="(\w+)"', part)
        if match and match[2] == rel:
            return match[1]
    return None


def follow(client, link: str, headers=None):
    parts = urlsplit(link)
    params = {name: values[0] for name, values in parse_qs(parts.query).items()}
    result = client.simulate_get(parts.path, params=params, headers=headers)
    assert result.status_code == 200, result.text
    return result


def test_a_cursor_walk_sees_every_photo_once_while_rows_come_and_go(client, api, app):
    """A signed-in member walks the list (public photos and their own private ones, two
    index slices merged) by next links while photos are added and deleted between pages:
    each photo that stays is seen exactly once, in order; deleted ones never; then the prev
    links walk back over the same pages."""
    me = api.user()
    lumen = app.lumen
    with lumen.unit_of_work() as session:
        other = add_user(session)
        me_id = uuid.UUID(me["id"])
        # Equal timestamps on purpose: the id breaks ties.
        for n in range(40):
            owner, visibility = [(me_id, "private"), (other.id, "public"), (me_id, "public")][n % 3]
            add_photo(session, owner, BASE + timedelta(seconds=n // 2), visibility)
        add_photo(session, other.id, BASE + timedelta(seconds=5), "private")  # never seen
    with lumen.Session() as session:
        expected = [
            str(p.id)
            for p in session.scalars(
                select(Photo)
                .where((Photo.visibility == "public") | (Photo.owner_id == me_id))
                .order_by(Photo.created_at.desc(), Photo.id.desc())
            )
        ]
    assert len(expected) == 40
    headers = me["headers"]
    page = client.simulate_get("/api/v1/photos", params={"limit": 6}, headers=headers)
    seen, deleted, pages = [], set(), []
    rng = random.Random(7)
    while True:
        pages.append([item["id"] for item in page.json])
        seen += pages[-1]
        assert int(page.headers["x-total-count"]) == true_total(lumen, me_id)
        with lumen.unit_of_work() as session:
            add_photo(session, other.id, datetime.now(UTC))  # newer than any cursor
            ahead = [i for i in expected if i not in seen and i not in deleted]
            for photo_id in rng.sample(ahead, min(2, len(ahead))):
                session.delete(session.get(Photo, uuid.UUID(photo_id)))
                deleted.add(photo_id)
        link = link_of(page, "next")
        if link is None:
            break
        assert "offset=" not in link and "cursor=" in link
        page = follow(client, link, headers)
    assert len(seen) == len(set(seen))
    assert seen == [i for i in expected if i not in deleted]
    # Back again: prev from the last page gives the same pages, save the rows deleted since.
    back = []
    while (link := link_of(page, "prev")) is not None:
        page = follow(client, link, headers)
        back.insert(0, [item["id"] for item in page.json])
    flat = [i for chunk in back for i in chunk] + pages[-1]
    assert flat == [i for i in seen if i not in deleted][: len(flat)]
    assert flat[-len(pages[-1]) :] == pages[-1]


def true_total(lumen, viewer_id) -> int:
    with lumen.Session() as session:
        return true_counts(session, viewer_id)


def test_cursor_and_offset_reach_the_same_pages_on_every_list(client, api):
    owner = api.user()
    for n in range(7):
        api.upload(owner, image=jpeg_of(n + 10), visibility="private" if n % 3 else "public")
    lists = [
        ("/api/v1/photos", {}, None),
        ("/api/v1/photos", {}, owner["headers"]),
        ("/api/v1/photos", {"owner_id": owner["id"]}, owner["headers"]),
        (f"/api/v1/users/{owner['id']}/photos", {}, None),
        (f"/api/v1/users/{owner['id']}/photos", {}, owner["headers"]),
    ]
    for path, params, headers in lists:
        everything = client.simulate_get(path, params={**params, "limit": 100}, headers=headers)
        ids = [item["id"] for item in everything.json]
        walked, page = [], client.simulate_get(path, params={**params, "limit": 2}, headers=headers)
        while True:
            walked += [item["id"] for item in page.json]
            link = link_of(page, "next")
            if link is None:
                break
            page = follow(client, link, headers)
        assert walked == ids, path
        for offset in range(len(ids)):
            page = client.simulate_get(
                path, params={**params, "limit": 2, "offset": offset}, headers=headers
            )
            assert [item["id"] for item in page.json] == ids[offset : offset + 2]


def _forged(payload: bytes) -> str:
    return base64.urlsafe_b64encode(payload + b"\0\0\0\0").decode().rstrip("=")


def test_a_forged_or_garbled_cursor_is_a_400_naming_cursor(client, api):
    owner = api.user()
    for n in range(3):
        api.upload(owner, image=jpeg_of(n + 20))
    good = parse_qs(urlsplit(link_of(client.simulate_get("/api/v1/photos?limit=1"), "next")).query)[
        "cursor"
    ][0]
    flipped = good[:5] + ("A" if good[5] != "A" else "B") + good[6:]
    for cursor in [
        "x",
        "not a cursor",
        good[:-3],
        flipped,
        good + "A",
        _forged(b"n1." + b"0" * 32),
        "=" * 8,
        "é",
        "A" * 200,
    ]:
        result = client.simulate_get("/api/v1/photos", params={"cursor": cursor})
        assert result.status_code == 400, cursor
        assert result.json["description"].startswith("cursor: must be a cursor"), result.json
    both = client.simulate_get("/api/v1/photos", params={"cursor": good, "offset": "0"})
    assert both.status_code == 400
    assert both.json["description"].startswith("cursor: cannot be given with offset")
    assert client.simulate_get("/api/v1/photos", params={"cursor": good}).status_code == 200


def test_offset_is_bounded_and_points_to_the_cursor(client):
    assert client.simulate_get("/api/v1/photos", params={"offset": MAX_OFFSET}).status_code == 200
    for path in ("/api/v1/photos", f"/api/v1/users/{uuid.uuid4()}/photos"):
        result = client.simulate_get(path, params={"offset": MAX_OFFSET + 1})
        if "users" in path:
            assert result.status_code in (400, 404)
            continue
        assert result.status_code == 400
        description = result.json["description"]
        assert description.startswith(f"offset: must be an integer from 0 to {MAX_OFFSET}")
        assert "cursor" in description


def test_cursor_round_trip():
    key = Cursor(datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC), uuid.uuid4(), before=True)
    assert Cursor.decode(key.encode()) == key
    early = Cursor(datetime(1960, 1, 1, tzinfo=UTC), uuid.UUID(int=0))
    assert Cursor.decode(early.encode()) == early


def query_plan(connection, statement) -> str:
    """EXPLAIN (QUERY PLAN) of a statement, its parameters converted as an execution would
    (the cursor's UUID and timestamp included)."""
    compiled = statement.compile(dialect=connection.dialect)
    processors = compiled._bind_processors
    values = {
        name: processors[name](value) if name in processors else value
        for name, value in compiled.construct_params().items()
    }
    if connection.dialect.name == "postgresql":
        rows = connection.exec_driver_sql("EXPLAIN " + str(compiled), values)
        return "\n".join(row[0] for row in rows)
    params = tuple(values[name] for name in compiled.positiontup)
    rows = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled), params)
    return "\n".join(row[-1] for row in rows)


# --- the index gives the order at any depth -------------------------------------------------------


def test_every_list_page_is_an_index_range_read(backend, app):
    """EXPLAIN of each kind of list page, first and deep (by cursor): every slice reads an
    index in the list's order, stopped by the LIMIT; nothing scans the table or sorts it."""
    lumen = app.lumen
    with lumen.unit_of_work() as session:
        owners = [add_user(session) for _ in range(4)]
        for n in range(4000):
            add_photo(
                session,
                owners[n % 4].id,
                BASE + timedelta(seconds=n),
                "private" if n // 4 % 2 else "public",
                location_id=n % 50 + 1,
            )
    with backend[2].begin() as connection:
        connection.execute(text("ANALYZE"))
    me = owners[3]
    deep = Page(limit=20, offset=0, cursor=Cursor(BASE + timedelta(seconds=1500), uuid.uuid4()))
    back = Page(20, 0, Cursor(BASE + timedelta(seconds=1500), uuid.uuid4(), before=True))
    cases = {
        "anonymous": (None, None),
        "signed in": (me, None),
        "another's photos": (me, owners[1].id),
        "own photos": (me, me.id),
    }
    with backend[2].connect() as connection:
        for name, (viewer, owner_id) in cases.items():
            parts = photo_lists.slices(viewer, owner_id)
            for page in (Page.first(), deep, back):
                # Each slice alone: an index range in the list's order, nothing sorted.
                for visibility, owner in parts:
                    query = photo_lists.slice_query(visibility, owner, None, page, 21)
                    plan = query_plan(connection, query)
                    assert "Sort" not in plan and "TEMP B-TREE" not in plan, (name, plan)
                    assert "ix_photos_" in plan, (name, plan)
                # The page: its slices merged (a sort of at most 2 x 21 rows), no table scan.
                plan = query_plan(connection, photo_lists.page_query(viewer, page, owner_id))
                assert "Seq Scan" not in plan and "SCAN photos" not in plan, (name, plan)
                if backend[0] == "postgresql":
                    assert plan.count("Index Scan") == len(parts), (name, plan)
                    assert plan.count("Limit") == len(parts) + (len(parts) > 1), (name, plan)
                else:
                    assert plan.count("USING INDEX ix_photos_") == len(parts), (name, plan)
            total = query_plan(connection, photo_lists.total_query(viewer, owner_id))
            assert "photos" not in total.replace("photo_totals", "").replace(
                "owner_photo_counts", ""
            ), (name, total)


# --- lumen seed --bulk ----------------------------------------------------------------------------


def test_bulk_seed_leaves_storage_clean_and_every_count_right(app):
    lumen = app.lumen
    assert file_pool_size(3, 50) == 17 and file_pool_size(100, 50) == 8
    assert bulk_seed(lumen, 3, 50, progress=False) == (3, 50)
    report = check_storage(lumen, progress=False)
    assert report.clean, report
    with lumen.Session() as session:
        assert session.scalar(select(func.count()).select_from(Photo)) == 50
        assert photo_counts.wrong_counters(lumen.engine) == []
        shas = session.execute(select(Photo.owner_id, Photo.sha256)).all()
        assert len(set(shas)) == 50  # no owner holds the same bytes twice
        assert len({sha for _, sha in shas}) == 17
        public = true_counts(session)
        assert 25 < public < 50  # about a fifth private
    root = Path(lumen.settings.storage_path)
    assert len([p for p in root.rglob("*") if p.is_file() and len(p.name) == 64]) == 17 * 2
    with pytest.raises(ValueError, match="--users"):
        bulk_seed(lumen, 0, 5, progress=False)


def test_lumen_seed_bulk_command(app, environ, monkeypatch):
    from click.testing import CliRunner

    from lumen.cli import Context, cli

    for name in [n for n in os.environ if n.startswith(("DB_", "LUMEN_", "REDIS_"))]:
        monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    args = ["seed", "--users", "2", "--photos", "30", "--bulk"]
    result = CliRunner().invoke(cli, args, obj=Context())
    assert result.exit_code == 0, result.output
    assert "created 2 users and 30 photos" in result.output
    checked = CliRunner().invoke(cli, ["storage", "check"], obj=Context())
    assert checked.exit_code == 0, checked.output
    assert "found 0 wrong photo counters" in checked.output
    refused = CliRunner().invoke(cli, ["seed", "--users", "0", "--bulk"], obj=Context())
    assert refused.exit_code == 2 and "--users" in refused.output
