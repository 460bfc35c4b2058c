"""Moving-window counters on Redis (shared by every worker and host), in memory when Redis is
not configured or does not answer.

The counters are those of the ``limits`` package (its moving window: a list of timestamps per
key, kept by a Lua script on Redis, by its MemoryStorage in memory). A request's operations
(charge and read back, or read only) go to Redis in one pipeline of one script call each
(lumen.redis_calls): one round trip, however many limits the request meets. A policy with a
batch (the default policy's RATE_LIMIT_BATCH) lets each worker admit a caller's requests on its
own between round trips (``Batches``). A Redis error never fails a request: the counting goes on
in memory for RATE_LIMIT_REDIS_RETRY_S seconds, then Redis is tried again.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import redis
from limits.storage import MemoryStorage, RedisStorage

from lumen_plugins.ratelimit.settings import Policy

log = logging.getLogger(__name__)

# limits' acquire_moving_window.lua and moving_window.lua as one script, so an operation is one
# call instead of two (the same list per key, newest first; the same rules), which also records
# requests a worker has already admitted on its own (a batch, see ``Batches``) and drops the
# entries that have left the window, so a list holds no more than its window's requests. The
# list is trimmed once, at the end, and the window's oldest entry found from the tail: five
# commands in the usual case, where a binary search from the head would make about twenty.
# KEYS: the counter. ARGV: now, quota, window (s), cost (0: read only), admitted (entries to
# record whatever the count). Returns {acquired (1/0), oldest timestamp in the window ('' if
# none), entries in the window}.
CHARGE_AND_READ = """
local now, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local expiry, amount = tonumber(ARGV[3]), tonumber(ARGV[4])
local admitted = math.min(tonumber(ARGV[5] or 0), limit)
local target = now - expiry
-- The charge fits when the entry `amount` places before the end of the quota, counted after
-- the admitted ones are recorded, has left the window (or there is none).
local acquired = 1
if amount > 0 then
  local place = limit - amount - admitted
  if amount > limit or place < 0 then
    acquired = 0
  else
    local entry = redis.call('lindex', KEYS[1], place)
    if entry and tonumber(entry) >= target then acquired = 0 end
  end
end
local count = admitted + (acquired == 1 and amount or 0)
local length
if count > 0 then
  local entries = {}
  for i = 1, count do entries[i] = now end
  for i = 1, count, 5000 do
    length = redis.call('lpush', KEYS[1], unpack(entries, i, math.min(i + 4999, count)))
  end
  redis.call('expire', KEYS[1], expiry)
else
  length = redis.call('llen', KEYS[1])
end
length = math.min(length, limit)
-- The window's entries are the first of the list, at most `limit`. Those that left it since
-- the last call are at its tail and few: the tail is read first, the rest searched only when
-- the whole tail has left the window.
local TAIL = 64
local found, oldest = nil, nil
if length > 0 then
  local first = math.max(0, length - TAIL)
  local tail = redis.call('lrange', KEYS[1], first, length - 1)
  if tonumber(tail[1]) >= target then
    for i = #tail, 1, -1 do
      if tonumber(tail[i]) >= target then
        found, oldest = first + i - 1, tail[i]
        break
      end
    end
  else
    local low, high = 0, first - 1
    while low <= high do
      local mid = math.floor((low + high) / 2)
      local value = redis.call('lindex', KEYS[1], mid)
      if tonumber(value) >= target then
        found, oldest = mid, value
        low = mid + 1
      else
        high = mid - 1
      end
    end
  end
end
if found then
  redis.call('ltrim', KEYS[1], 0, found)
  return {acquired, oldest, found + 1}
end
redis.call('del', KEYS[1])
return {acquired, '', 0}
"""
CHARGE_AND_READ_SHA = hashlib.sha1(CHARGE_AND_READ.encode()).hexdigest()


class LocalStorage(MemoryStorage):
    """limits' MemoryStorage, its expired entries dropped in line at most once a second,
    rather than by a timer thread it starts anew every 10 ms under traffic (a thread start
    per few requests: a tenth of a photo read)."""

    EXPIRY_SECONDS = 1.0
    _next_expiry = 0.0

    def _MemoryStorage__schedule_expiry(self) -> None:  # replaces the private timer hook
        now = time.monotonic()
        if now >= self._next_expiry:
            self._next_expiry = now + self.EXPIRY_SECONDS
            self._MemoryStorage__expire_events()


@dataclass(slots=True)
class Outcome:
    """What one limit said about one request."""

    policy: Policy
    allowed: bool
    remaining: int
    reset: int  # seconds until the oldest counted request leaves the window (0: none counted)

    @property
    def field(self) -> str:
        """This outcome as an item of the RateLimit field."""
        return f'"{self.policy.name}";r={self.remaining};t={self.reset}'


@dataclass(slots=True)
class Op:
    """One operation on a counter: charge ``cost`` (0: only read), and read back unless
    ``read`` is False."""

    policy: Policy
    who: str
    cost: int = 1
    read: bool = True

    @property
    def key(self) -> str:
        return self.policy.item.key_for(self.policy.name, self.who)

    @property
    def batch_key(self) -> tuple[str, str]:
        """The counter's name among this worker's batches (cheaper than ``key``)."""
        return (self.policy.name, self.who)


def _outcome(
    policy: Policy, acquired: bool, window: tuple[float, int] | None, now: float
) -> Outcome:
    if not window:
        return Outcome(policy, acquired, policy.quota, 0)
    oldest, count = window
    # Redis hands timestamps back with 14 significant digits: never more than the window.
    reset = min(policy.window, max(0, math.ceil(oldest + policy.window - now - 0.001)))
    return Outcome(policy, acquired, max(0, policy.quota - count), reset if count else 0)


# A batch's requests are recorded in Redis at the time of its round trip, which is at most
# this share of the window after they came: they count a little longer, never shorter.
BATCH_AGE_SHARE = 0.1


class _Batch:
    """What one worker knows of one counter between its round trips to Redis."""

    __slots__ = ("count", "oldest", "admitted", "since")

    def __init__(self):
        self.count = 0  # requests in the window at the last round trip
        self.oldest = 0.0  # the oldest of them (epoch seconds), when count
        self.admitted = 0  # requests admitted here since then, not yet recorded in Redis
        self.since = 0.0  # when the first of those came


class Batches:
    """The requests of batched policies that this worker admitted without a round trip.

    A worker that has asked Redis about a counter knows how full its window was; until the
    counter is within one request of its quota, it admits up to ``policy.batch - 1`` more on its
    own, and the next request records them in Redis with its own check. So a caller's window is
    checked in Redis once every ``batch`` requests on each worker instead of on every request,
    and the quota can be exceeded by at most what the other workers admitted on their own in
    the meantime: ``batch - 1`` each. Counts are never decayed here (the window only empties in
    Redis), so a counter near its quota is asked about on every request."""

    KEYS_KEPT = 10_000  # the least recently used go; each loses at most batch - 1 unrecorded

    def __init__(self):
        self._batches: OrderedDict[tuple[str, str], _Batch] = OrderedDict()
        self._lock = threading.Lock()

    def admit(self, policy: Policy, who: str, now: float) -> Outcome | None:
        """The outcome of admitting one request of ``who`` here, or None when Redis must be
        asked."""
        with self._lock:
            batch = self._batches.get((policy.name, who))
            if (
                batch is None
                or batch.admitted >= policy.batch - 1
                or batch.count + batch.admitted >= policy.quota
                or (batch.admitted and now - batch.since >= policy.window * BATCH_AGE_SHARE)
            ):
                return None
            if not batch.admitted:
                batch.since = now
            batch.admitted += 1
            count = batch.count + batch.admitted
            oldest = batch.oldest if batch.count else batch.since
        return _outcome(policy, True, (oldest, count), now)

    def take(self, key: tuple[str, str]) -> int:
        """The requests admitted here for ``key`` that Redis has not recorded (now zero)."""
        with self._lock:
            batch = self._batches.get(key)
            if batch is None:
                return 0
            admitted, batch.admitted = batch.admitted, 0
            return admitted

    def synced(self, key: tuple[str, str], window: tuple[float, int] | None) -> None:
        """What Redis answered about ``key``: (oldest, count) of its window, None if empty."""
        with self._lock:
            batch = self._batches.get(key)
            if batch is None:
                batch = self._batches[key] = _Batch()
                if len(self._batches) > self.KEYS_KEPT:
                    self._batches.popitem(last=False)
            else:
                self._batches.move_to_end(key)
            batch.oldest, batch.count = window if window else (0.0, 0)


class Counters:
    """The counters of one app: Redis when it answers, memory otherwise."""

    def __init__(self, client: redis.Redis | None, calls, key_prefix: str, retry_seconds: float):
        self.client = client
        self.calls = calls  # lumen.redis_calls: every check's one round trip
        self.memory = LocalStorage()
        self.batches = Batches()
        self.retry_seconds = retry_seconds
        self.errors = 0
        self._lock = threading.Lock()
        self._memory_until = 0.0  # monotonic: before it, count in memory without asking Redis
        self._degraded = False  # counted in memory since the last Redis error
        self.redis_storage = None
        if client is not None:
            # The core's client (short timeouts, no retries); limits supplies the scripts and
            # the key layout.
            self.redis_storage = RedisStorage(
                "redis://", connection_pool=client.connection_pool, key_prefix=key_prefix
            )
        self.metric_errors = None  # prometheus Counter, set by lumen_metrics

    # --- which storage ----------------------------------------------------------------------

    @property
    def in_memory(self) -> bool:
        return self.client is None or time.monotonic() < self._memory_until

    @property
    def degraded(self) -> bool:
        """Redis failed and has not answered since: true whenever ``in_memory`` is with a
        client, and after the retry wait too, until a check is counted in Redis again."""
        return self._degraded

    def _redis_failed(self, exc: Exception) -> None:
        self._degraded = True
        with self._lock:
            first = time.monotonic() >= self._memory_until
            self._memory_until = time.monotonic() + self.retry_seconds
            self.errors += 1
        if self.metric_errors is not None:
            self.metric_errors.inc()
        if first:
            log.warning(
                "rate limits counted in memory: Redis does not answer",
                extra={"error": type(exc).__name__, "retry_in_s": self.retry_seconds},
            )

    # --- operations ---------------------------------------------------------------------------

    def check(self, policy: Policy, who: str) -> Outcome:
        """Charge one request to ``who`` under ``policy`` and read back: a request's usual one
        operation, admitted by this worker's batch when it can be."""
        if policy.batch > 1 and not self.in_memory:
            admitted = self.batches.admit(policy, who, time.time())
            if admitted is not None:
                return admitted
        return self.run([Op(policy, who)])[0]

    def run(self, ops: list[Op]) -> list[Outcome | None]:
        """Apply ``ops`` in order (in one round trip when Redis counts them); the outcome of
        each op that reads back (else None)."""
        if not ops:
            return []
        if not self.in_memory:
            try:
                outcomes = self._run_redis(ops)
            except redis.RedisError as exc:
                self._redis_failed(exc)
            else:
                if self._degraded:
                    self._degraded = False
                    log.info("rate limits counted in Redis again")
                return outcomes
        return self._run_memory(ops)

    def _run_memory(self, ops: list[Op]) -> list[Outcome | None]:
        results: list[Outcome | None] = []
        for op in ops:
            item = op.policy.item
            acquired = True
            if op.cost:
                acquired = self.memory.acquire_entry(
                    op.key, item.amount, item.get_expiry(), amount=op.cost
                )
            if not op.read:
                results.append(None)
                continue
            now = time.time()
            window = self.memory.get_moving_window(op.key, item.amount, item.get_expiry())
            results.append(_outcome(op.policy, acquired, window, now))
        return results

    def _run_redis(self, ops: list[Op]) -> list[Outcome | None]:
        now = time.time()
        # What this worker admitted on its own is recorded with the check (lost, being served
        # already, if Redis does not answer).
        admitted = [self.batches.take(op.batch_key) if op.policy.batch > 1 else 0 for op in ops]
        try:
            replies = self._pipeline(ops, admitted, now)
        except redis.exceptions.NoScriptError:
            # A restarted or flushed Redis forgot the script: load it, try once more.
            self.client.script_load(CHARGE_AND_READ)
            replies = self._pipeline(ops, admitted, now)
        results: list[Outcome | None] = []
        for op, (acquired, oldest, count) in zip(ops, replies, strict=True):
            found = (float(oldest), int(count)) if count else None
            if op.policy.batch > 1:
                self.batches.synced(op.batch_key, found)
            if not op.read:
                results.append(None)
                continue
            results.append(_outcome(op.policy, bool(acquired), found, now))
        return results

    def _pipeline(self, ops: list[Op], admitted: list[int], now: float) -> list:
        prefixed = self.redis_storage.prefixed_key
        return self.calls.pipeline(
            [
                (
                    "EVALSHA",
                    CHARGE_AND_READ_SHA,
                    1,
                    prefixed(op.key),
                    now,
                    op.policy.quota,
                    op.policy.window,
                    op.cost,
                    extra,
                )
                for op, extra in zip(ops, admitted, strict=True)
            ]
        )

    # --- marks: "this address logged in to this account" ------------------------------------

    def mark(self, key: str, seconds: int) -> None:
        if not self.in_memory:
            try:
                self.client.set(self.redis_storage.prefixed_key(key), 1, ex=seconds)
                return
            except redis.RedisError as exc:
                self._redis_failed(exc)
        self.memory.clear(key)
        self.memory.incr(key, seconds)

    def marked(self, key: str) -> bool:
        if not self.in_memory:
            try:
                return bool(self.client.exists(self.redis_storage.prefixed_key(key)))
            except redis.RedisError as exc:
                self._redis_failed(exc)
        return self.memory.get(key) > 0

    def close(self) -> None:
        self.memory.timer.cancel()
