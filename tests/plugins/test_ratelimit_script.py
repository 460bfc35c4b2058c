"""The rate limit's one script (CHARGE_AND_READ) on the machine's Redis, against a model of its
rules in Python: whatever the list holds, the same answer and the same list left behind."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lumen_plugins.ratelimit.limiter import CHARGE_AND_READ

NOW = 10_000.0


def model(entries: list[float], limit: int, window: int, cost: int, admitted: int):
    """(acquired, oldest in the window or None, count, list left) for a list newest first."""
    entries = [NOW] * min(admitted, limit) + entries
    acquired = 1
    if cost > 0:
        full = 0 <= limit - cost < len(entries) and entries[limit - cost] >= NOW - window
        if cost > limit or full:
            acquired = 0
        else:
            entries = [NOW] * cost + entries
    kept = [entry for entry in entries[:limit] if entry >= NOW - window]
    return acquired, (kept[-1] if kept else None), len(kept), kept


def run(client, key: str, entries: list[float], limit: int, window: int, cost: int, admitted):
    client.delete(key)
    if entries:
        client.rpush(key, *(repr(entry) for entry in entries))
    acquired, oldest, count = client.eval(
        CHARGE_AND_READ, 1, key, NOW, limit, window, cost, admitted
    )
    left = [float(entry) for entry in client.lrange(key, 0, -1)]
    return acquired, (float(oldest) if oldest else None), count, left


# Ages in half seconds, newest first, so every timestamp is exact in Redis and in Python.
ages = st.lists(st.integers(min_value=0, max_value=400), max_size=300).map(
    lambda values: [NOW - age / 2 for age in sorted(values)]
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    entries=ages,
    limit=st.integers(min_value=1, max_value=250),
    window=st.integers(min_value=1, max_value=150),
    cost=st.integers(min_value=0, max_value=3),
    admitted=st.integers(min_value=0, max_value=20),
)
def test_script_matches_the_model(
    redis_client, redis_prefix, entries, limit, window, cost, admitted
):
    key = f"{redis_prefix}:script"
    assert run(redis_client, key, entries, limit, window, cost, admitted) == model(
        entries, limit, window, cost, admitted
    )


@pytest.mark.parametrize(
    ("expired", "kept"),
    [
        (10, 190),  # the oldest kept entry lies in the tail the script reads first
        (150, 50),  # the whole tail has left the window: searched from the head
        (200, 0),  # nothing left: the key goes
    ],
)
def test_expired_entries_leave_the_list(redis_client, redis_prefix, expired, kept):
    key = f"{redis_prefix}:script"
    entries = [NOW - 1.0] * kept + [NOW - 100.0] * expired
    acquired, oldest, count, left = run(redis_client, key, entries, 500, 60, 0, 0)
    assert (acquired, count, len(left)) == (1, kept, kept)
    assert oldest == (NOW - 1.0 if kept else None)
    assert redis_client.exists(key) == (1 if kept else 0)


def test_a_batch_larger_than_one_push_is_recorded_whole(redis_client, redis_prefix):
    # Entries are pushed 5,000 to a command (Lua's unpack has a limit): 7,000 take two.
    key = f"{redis_prefix}:script"
    assert run(redis_client, key, [NOW - 1.0] * 3, 8000, 60, 1, 7000)[:3] == (1, NOW - 1.0, 7004)
    assert redis_client.llen(key) == 7004
