"""Files shared by several photos (identical bytes) under concurrent uploads and deletes: no
committed photo ever loses its file."""

from concurrent.futures import ThreadPoolExecutor

from tests.conftest import jpeg, multipart


def upload(client, user, data):
    body, content_type = multipart({"file": ("a.jpg", data)})
    return client.simulate_post(
        "/api/v1/photos", body=body, headers={**user["headers"], "Content-Type": content_type}
    )


def test_a_double_submit_gives_one_photo_and_a_409_naming_it(client, api):
    user = api.user()
    data = jpeg(400, 300)
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: upload(client, user, data), range(2)))
    statuses = sorted(r.status_code for r in results)
    assert statuses == [201, 409]
    created = next(r for r in results if r.status_code == 201).json
    conflict = next(r for r in results if r.status_code == 409).json
    assert conflict["existing_id"] == created["id"]
    assert client.simulate_get(created["urls"]["original"]).content == data
    assert client.simulate_get(created["urls"]["thumbnail"]).status_code == 200


def test_uploads_and_deletes_of_the_same_bytes_never_lose_a_file(client, api):
    data = jpeg(300, 200)
    users = [api.user(), api.user()]
    problems = []

    def churn(user):
        for _ in range(12):
            made = upload(client, user, data)
            if made.status_code != 201:
                problems.append(("upload", made.status_code, made.text))
                continue
            photo = made.json
            for size in ("original", "thumbnail"):
                got = client.simulate_get(photo["urls"][size])
                if got.status_code != 200:
                    problems.append((size, got.status_code))
            gone = client.simulate_delete(f"/api/v1/photos/{photo['id']}", headers=user["headers"])
            if gone.status_code != 204:
                problems.append(("delete", gone.status_code))

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(churn, users))
    assert problems == []


def test_an_edit_and_a_delete_of_one_photo_at_once_are_never_a_500(client, api, monkeypatch):
    """The edit holds the photo while the delete tries to remove it: the delete waits for the
    edit (it used to remove the row under it, and the edit's UPDATE matched nothing: 500)."""
    import threading

    from lumen import events

    user = api.user()
    photo = api.upload(user)
    url = f"/api/v1/photos/{photo['id']}"
    deleted, answers = threading.Event(), {}
    real = events.apply_changes

    def slow_apply(target, values):
        # The edit has read the photo: let the delete run now, and give it time to finish.
        threading.Thread(target=delete, daemon=True).start()
        deleted.wait(timeout=1.0)
        return real(target, values)

    def delete():
        answers["delete"] = client.simulate_delete(url, headers=user["headers"]).status_code
        deleted.set()

    monkeypatch.setattr(events, "apply_changes", slow_apply)
    edited = client.simulate_patch(url, json={"caption": "edited"}, headers=user["headers"])
    monkeypatch.setattr(events, "apply_changes", real)
    assert deleted.wait(timeout=30)
    assert (edited.status_code, answers["delete"]) == (200, 204)
    assert client.simulate_get(url, headers=user["headers"]).status_code == 404
    # And the other way round: a delete first, the edit then finds nothing.
    second = api.upload(user)
    url = f"/api/v1/photos/{second['id']}"
    assert client.simulate_delete(url, headers=user["headers"]).status_code == 204
    assert (
        client.simulate_patch(url, json={"caption": "x"}, headers=user["headers"]).status_code
        == 404
    )
