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
