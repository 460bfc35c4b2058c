"""Batched counting of the default policy (RATE_LIMIT_BATCH), on the machine's Redis: several
Counters on one key prefix stand for the workers of a deployment, as each gunicorn worker and
host keeps its own. Round trips are counted on the calls object each Counters is given."""

from __future__ import annotations

import time

import falcon.testing
import pytest

from lumen.redis_calls import RedisCalls
from lumen_plugins.ratelimit.limiter import Counters, Op
from lumen_plugins.ratelimit.settings import Policy, batch_of, parse_limit, policies
from tests.plugins.test_ratelimit import field_of, limited_app

CALLER = "addr:203.0.113.7"


class CountedCalls(RedisCalls):
    """RedisCalls that count their round trips."""

    round_trips = 0

    def pipeline(self, commands):
        self.round_trips += 1
        return super().pipeline(commands)


def policy(limit: str, batch: int = 10) -> Policy:
    item = parse_limit(limit)
    return Policy("default", "RATE_LIMIT_DEFAULT", item, batch_of(item.amount, batch))


@pytest.fixture
def workers(redis_client, redis_prefix):
    made = []

    def make(count: int) -> list[Counters]:
        for _ in range(count):
            made.append(Counters(redis_client, CountedCalls(redis_client), redis_prefix, 5.0))
        return made[-count:]

    yield make
    for counters in made:
        counters.close()


def recorded(redis_client, counters: Counters, limit: Policy) -> int:
    """How many requests Redis holds in the caller's window."""
    return redis_client.llen(counters.redis_storage.prefixed_key(Op(limit, CALLER).key))


def test_a_worker_asks_redis_once_a_batch_and_records_every_request_it_admitted(
    workers, redis_client
):
    (counters,) = workers(1)
    limit = policy("6000/minute")
    assert limit.batch == 10
    outcomes = [counters.check(limit, CALLER) for _ in range(100)]
    assert all(outcome.allowed for outcome in outcomes)
    # The 1st, 11th, ... 91st asked Redis; each recorded the nine admitted before it.
    assert counters.calls.round_trips == 10
    assert recorded(redis_client, counters, limit) == 91
    # One worker's view of what is left is exact: it counts what it admitted.
    assert [o.remaining for o in outcomes[:12]] == list(range(5999, 5987, -1))


def test_workers_sharing_a_caller_exceed_its_quota_by_their_unrecorded_batches_at_most(
    workers, redis_client
):
    deployment = workers(4)
    limit = policy("500/minute")
    # The worst case: the caller's requests spread evenly over every worker.
    allowed = sum(deployment[n % 4].check(limit, CALLER).allowed for n in range(2000))
    assert 500 <= allowed <= 500 + 3 * (limit.batch - 1)
    # Redis never holds more than the quota.
    assert recorded(redis_client, deployment[0], limit) == 500


def test_a_caller_at_its_quota_is_checked_in_redis_on_every_request(workers):
    first, second = workers(2)
    limit = policy("500/minute")
    exact = Policy(limit.name, limit.variable, limit.item)  # the same counter, no batch
    for _ in range(495):
        first.check(exact, CALLER)
    outcomes = [second.check(limit, CALLER) for _ in range(12)]
    # The first asks Redis (496 of 500); four more fit, admitted here; the fifth records
    # them and is refused, and so is every later one, each asked of Redis.
    assert [o.allowed for o in outcomes] == [True] * 5 + [False] * 7
    assert second.calls.round_trips == 1 + 7


def test_requests_admitted_on_their_own_reach_redis_within_a_tenth_of_the_window(
    workers, redis_client
):
    (counters,) = workers(1)
    limit = policy("1000/second")  # batches of 10; a tenth of the window is 0.1 s
    counters.check(limit, CALLER)
    counters.check(limit, CALLER)  # admitted here
    assert counters.calls.round_trips == 1
    time.sleep(0.15)
    counters.check(limit, CALLER)
    assert counters.calls.round_trips == 2
    assert recorded(redis_client, counters, limit) == 3


def test_only_the_default_policy_is_batched_and_small_quotas_not_at_all(make_app):
    def section(**values):
        defaults = {
            "default": "600/minute",
            "upload": "6000/hour",
            "auth": "6000/minute",
            "username": "6000/hour",
            "batch": 10,
        }
        return {**defaults, **values}

    found = policies(section())
    assert {name: p.batch for name, p in found.items()} == {
        "default": 10,
        "upload": 1,
        "auth": 1,
        "username": 1,
    }
    # A batch is at most a fiftieth of the quota; RATE_LIMIT_BATCH=1 asks Redis every time.
    assert policies(section(default="100/minute"))["default"].batch == 2
    assert policies(section(default="20/minute"))["default"].batch == 1
    assert policies(section(batch=1))["default"].batch == 1


def test_a_batched_app_answers_exact_fields_from_one_worker(
    make_app, redis_url, redis_prefix, redis_client
):
    app = limited_app(make_app, redis_url, redis_prefix, RATE_LIMIT_DEFAULT="6000/minute")
    client = falcon.testing.TestClient(app)
    answers = [client.simulate_get("/api/v1/photos") for _ in range(12)]
    assert [a.status_code for a in answers] == [200] * 12
    assert [field_of(a)[1] for a in answers] == list(range(5999, 5987, -1))
    assert all(55 <= field_of(a)[2] <= 60 for a in answers)
    (key,) = redis_client.scan_iter(f"{redis_prefix}:*")
    assert redis_client.llen(key) == 11  # the 11th request recorded the ten before it


def test_a_limit_check_drops_the_entries_that_left_the_window(workers, redis_client):
    (counters,) = workers(1)
    limit = policy("1000/second", batch=1)
    for _ in range(20):
        counters.check(limit, CALLER)
    assert recorded(redis_client, counters, limit) == 20
    time.sleep(1.1)
    outcome = counters.check(limit, CALLER)
    assert outcome.remaining == 999
    assert recorded(redis_client, counters, limit) == 1  # the list holds its window, not its quota
