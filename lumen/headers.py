"""Response headers that several middleware add to: one way to do each."""

from __future__ import annotations

import functools

import falcon
from falcon.util import http_status_to_code


def headers_of(resp: falcon.Response) -> dict[str, str]:
    """The response's headers as falcon keeps them: a dict by lower-case name. Reading and
    writing it directly skips what ``get_header`` and ``set_header`` do on every call (lower-case
    the name, compare it with Set-Cookie, ``str`` the value), which the middleware of every
    answer did a dozen times: a tenth of a cached read's instructions. Names go in lower-case,
    values as str; cookies never go through it (``set_cookie``)."""
    return resp._headers


def lower_case_names(headers: dict[str, str]) -> dict[str, str]:
    """``headers`` as ``headers_of`` holds them, to ``update`` a response's with in one call."""
    lowered = {name.lower(): str(value) for name, value in headers.items()}
    if "set-cookie" in lowered:
        raise ValueError("Set-Cookie goes through resp.set_cookie, not a block of headers")
    return lowered


def add_vary(resp: falcon.Response, *names: str) -> None:
    """Add ``names`` to the response's Vary header, keeping what other middleware put there."""
    headers = headers_of(resp)
    current = headers.get("vary")
    merged = _merged_vary(current, names)
    if merged != current:
        headers["vary"] = merged


@functools.lru_cache(maxsize=256)  # the few combinations the middleware make, on every answer
def _merged_vary(current: str | None, names: tuple[str, ...]) -> str | None:
    if current is None:
        return ", ".join(names)
    present = {name.strip().lower() for name in current.split(",")}
    if "*" in present:
        return current
    missing = [name for name in names if name.lower() not in present]
    return ", ".join([current, *missing]) if missing else current


@functools.lru_cache(maxsize=64)  # responses' own types, a handful; asked several times each
def is_json(content_type: str | None) -> bool:
    """application/json and the +json types (health+json, problem+json)."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def media_type_of(resp: falcon.Response) -> str:
    """The Content-Type the response will be sent with: falcon gives a body without one its
    default media type (JSON) only when it renders it, after every middleware."""
    # Not the content_type property, whose getter raises and catches a KeyError while the type
    # is unset, as it is for every answer with media.
    return headers_of(resp).get("content-type") or resp.options.default_media_type


_code_of = functools.lru_cache(maxsize=128)(http_status_to_code)  # a few statuses, every answer


def status_of(resp: falcon.Response) -> int:
    """The response's status code: ``resp.status_code``, which parses the status each time it is
    asked (several middleware ask on every answer), once per status."""
    return _code_of(resp.status)
