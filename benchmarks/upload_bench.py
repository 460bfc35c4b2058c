"""Upload throughput (MB/s) and a worker's peak memory per upload size, under gunicorn.

Each size is uploaded to a fresh single-worker server, so the worker's high-water mark of
resident memory (VmHWM) after the upload is that upload's peak. Two files with the same pixels
but different byte sizes (PNG vs JPEG) separate what the bytes cost (nothing is held in memory:
uploads stream to disk) from what decoding the pixels costs (Pillow, needed to validate).

    python -m benchmarks.upload_bench [--uploads 20]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from PIL import Image
from tqdm import tqdm

from benchmarks.harness import gunicorn, migrated_lumen, peak_rss_kb, pg_database, write_results


def noise_image(width: int, height: int, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    Image.frombytes("RGB", (width, height), os.urandom(width * height * 3)).save(
        out, fmt, **options
    )
    return out.getvalue()


def multipart_file(data: bytes) -> tuple[str, str]:
    """Write a multipart body to disk; returns (path, content type)."""
    boundary = uuid.uuid4().hex
    fd, path = tempfile.mkstemp(prefix="upload-body-")
    with os.fdopen(fd, "wb") as out:
        out.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            'filename="photo"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
        )
        out.write(data)
        out.write(f"\r\n--{boundary}--\r\n".encode())
    return path, f"multipart/form-data; boundary={boundary}"


def post(base: str, path: str, content_type: str, token: str) -> int:
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    with open(path, "rb") as body:
        conn.request(
            "POST",
            "/api/v1/photos",
            body=body,
            headers={
                "Content-Type": content_type,
                "Content-Length": str(os.path.getsize(path)),
                "Authorization": f"Bearer {token}",
            },
        )
        status = conn.getresponse().status
    conn.close()
    return status


def json_call(base: str, path: str, body: dict) -> dict:
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    answer = json.loads(conn.getresponse().read())
    conn.close()
    return answer


def login(base: str) -> str:
    name = f"bench{uuid.uuid4().hex[:8]}"
    json_call(base, "/api/v1/users", {"username": name, "password": "benchmark-password"})
    return json_call(base, "/api/v1/tokens", {"username": name, "password": "benchmark-password"})[
        "token"
    ]


def peak_memory(url: str, label: str, data: bytes) -> dict:
    body, content_type = multipart_file(data)
    env = {"DATABASE_URL": url, "LUMEN_PLUGINS": "none", "MAX_UPLOAD_MB": "64"}
    try:
        with gunicorn(env, workers=1) as server:
            base, (worker,) = server.url, server.worker_pids()
            token = login(base)
            small, small_type = multipart_file(noise_image(64, 64, "JPEG"))
            post(base, small, small_type, token)  # warm the worker's imports
            os.unlink(small)
            before = peak_rss_kb(worker)
            status = post(base, body, content_type, token)
            after = peak_rss_kb(worker)
    finally:
        os.unlink(body)
    return {
        "file": label,
        "file_mb": round(len(data) / 2**20, 1),
        "status": status,
        "peak_before_mb": round(before / 1024, 1),
        "peak_after_mb": round(after / 1024, 1),
        "growth_mb": round((after - before) / 1024, 1),
    }


def throughput(url: str, data: bytes, uploads: int, clients: int) -> dict:
    env = {"DATABASE_URL": url, "LUMEN_PLUGINS": "none", "MAX_UPLOAD_MB": "64"}
    with gunicorn(env, workers=2) as server:
        base = server.url
        token = login(base)
        bodies = []
        for _ in range(uploads):  # distinct bytes each: identical ones would be a 409
            unique = data[:-16] + os.urandom(16) if data[:4] == b"\x89PNG" else None
            bodies.append(multipart_file(unique or noise_image(1600, 1200, "JPEG", quality=95)))
        size = sum(os.path.getsize(path) for path, _ in bodies)
        bar = tqdm(total=uploads, desc="uploads", unit="file")
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            statuses = []
            for status in pool.map(lambda b: post(base, b[0], b[1], token), bodies):
                statuses.append(status)
                bar.update()
        elapsed = time.perf_counter() - started
        bar.close()
        for path, _ in bodies:
            os.unlink(path)
    return {
        "uploads": uploads,
        "clients": clients,
        "total_mb": round(size / 2**20, 1),
        "seconds": round(elapsed, 2),
        "mb_per_s": round(size / 2**20 / elapsed, 1),
        "uploads_per_s": round(uploads / elapsed, 1),
        "statuses": sorted(set(statuses)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=20)
    parser.add_argument("--clients", type=int, default=2)
    args = parser.parse_args()
    with pg_database("lumen_bench_upload") as url:
        with migrated_lumen(url):
            pass
        files = [
            ("JPEG 2600x2600, ~5 MB", noise_image(2600, 2600, "JPEG", quality=70)),
            (
                "PNG 2600x2600, ~20 MB (same pixels)",
                noise_image(2600, 2600, "PNG", compress_level=1),
            ),
            ("JPEG 1300x1300, ~1.5 MB", noise_image(1300, 1300, "JPEG", quality=70)),
        ]
        memory = [peak_memory(url, label, data) for label, data in tqdm(files, desc="memory")]
        speed = throughput(url, files[1][1], args.uploads, args.clients)
    path = write_results("upload", {"peak_memory": memory, "throughput_20mb_png": speed})
    for row in memory:
        print(
            f"{row['file']:<40} {row['file_mb']:>5} MB  status {row['status']}  "
            f"worker peak {row['peak_before_mb']} -> {row['peak_after_mb']} MB "
            f"(+{row['growth_mb']} MB)"
        )
    print(
        f"throughput: {speed['mb_per_s']} MB/s, {speed['uploads_per_s']} uploads/s "
        f"({speed['uploads']} x ~{speed['total_mb'] / speed['uploads']:.0f} MB, "
        f"{speed['clients']} clients, statuses {speed['statuses']}); written to {path}"
    )


if __name__ == "__main__":
    main()
