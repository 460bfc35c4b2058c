"""Redis behind a circuit breaker: short timeouts, no retries, and no call at all while the
breaker is open, so a Redis that is down or slow costs requests (almost) nothing.

Entries are Redis hashes ``{s: stamp, v: value}``. The stamp is the list of the entry's
generation values when its value was read from the database; a lookup answers only when the
stamp still matches, and a store writes only when it still matches (check-and-set in one
script), which closes the cache-aside race: see docs/cache.md.

A lookup first peeks: one transaction of plain commands (the fences, the generations, the
entry, and about once a second the lookups and misses this process counted: stats.py) that
answers every hit in one round trip with no script to run; only a peek that finds no valid
entry runs the lookup script, which makes missing generations and takes the stampede lock.

The namespace epoch (a generation every entry depends on) is renewed whenever this process may
have missed an invalidation: its breaker opened, an invalidation failed, or Redis lost its
scripts (it restarted: NOSCRIPT).

A change purged before its commit also fences its tags (a Redis set per tag holding the
change's id) until its purge after the commit: while fenced, no entry of those tags is served
or stored, so a reader that loads the old row during the commit cannot leave it behind even if
the purge after the commit never arrives.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import NoScriptError, RedisError

from lumen_plugins.cache.breaker import CLOSED, Breaker
from lumen_plugins.cache.keys import Entry, Keys
from lumen_plugins.cache.stats import BUCKET_TTL_SECONDS, Stats, current_minute

log = logging.getLogger(__name__)

LOCK_TTL_MS = 5000
# A fence whose change never purged after its commit (its process died in between) lapses after
# this long; the commit it guards happens within milliseconds of the fence.
FENCE_TTL_SECONDS = 600
# While an invalidation is owed, the namespace is renewed in the background this often, so an
# idle process does not leave other workers serving what it could not invalidate.
RECOVERY_INTERVAL_SECONDS = 0.5

# KEYS: data, lock, generations..., fences...
# ARGV: fresh token, lock token ('' = do not lock), lock ttl ms, number of generations
# A missing generation is created with the lock's short TTL only: a read of something never
# stored (a 404, an id that does not exist) leaves no key that outlives its lock. A store
# extends the generations it depends on to the entry's TTL. A fenced entry is a miss that
# neither locks nor may be stored: {2, stamp}.
LOOKUP = """
local last = 2 + tonumber(ARGV[4])
local stamp = {}
for i = 3, last do
  local generation = redis.call('GET', KEYS[i])
  if not generation then
    generation = ARGV[1] .. i
    redis.call('SET', KEYS[i], generation, 'PX', ARGV[3])
  end
  stamp[#stamp + 1] = generation
end
stamp = table.concat(stamp, ':')
local fenced = false
for i = last + 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then fenced = true break end
end
local entry = redis.call('HMGET', KEYS[1], 's', 'v')
if entry[1] == stamp and not fenced then return {1, entry[2]} end
if fenced then return {2, stamp} end
local locked = 0
if ARGV[2] ~= '' and redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then
  locked = 1
end
return {0, stamp, locked}
"""

# Stores only if every generation still has the value the stamp was read with and no tag is
# fenced; the entry and its generations then live for the TTL (a generation always outlives
# the entries stamped with it). KEYS: data, lock, generations..., fences...
# ARGV: stamp, value, ttl s, lock token ('' = none), number of generations
STORE = """
local last = 2 + tonumber(ARGV[5])
local current = {}
for i = 3, last do
  local generation = redis.call('GET', KEYS[i])
  if not generation then current = nil break end
  current[#current + 1] = generation
end
for i = last + 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then current = nil break end
end
local stored = 0
if current and table.concat(current, ':') == ARGV[1] then
  redis.call('HSET', KEYS[1], 's', ARGV[1], 'v', ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  for i = 3, last do redis.call('EXPIRE', KEYS[i], ARGV[3]) end
  stored = 1
end
if ARGV[4] ~= '' and redis.call('GET', KEYS[2]) == ARGV[4] then redis.call('DEL', KEYS[2]) end
return stored
"""

# KEYS: lock   ARGV: lock token
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Unavailable(Exception):
    """Redis is not to be used for this call (breaker open, or the call failed)."""


@dataclass(frozen=True)
class Lookup:
    value: bytes | None  # set on a hit
    stamp: bytes | None  # set on a miss: what a store must still match
    lock_token: str | None  # set when this caller holds the stampede lock
    fenced: bool = False  # a change is committing: load, and do not store


def fresh_token() -> str:
    return secrets.token_hex(8)


class _Script:
    def __init__(self, prefix: str, body: str):
        # The prefix makes each deployment's scripts distinct: another deployment loading its
        # scripts after a restart must not hide the restart from this one.
        self.text = f"-- lumen cache {prefix}\n{body}"
        self.sha = hashlib.sha1(self.text.encode()).hexdigest()


class RedisStore:
    def __init__(
        self,
        client: redis.Redis,
        calls,
        keys: Keys,
        ttl_seconds: int,
        breaker: Breaker,
        stats: Stats,
    ):
        self.client = client
        self.calls = calls  # lumen.redis_calls: the lookups and stores of requests
        self.keys = keys
        self.ttl = ttl_seconds
        self.bucket_ttl = min(BUCKET_TTL_SECONDS, ttl_seconds)
        self.breaker = breaker
        self.stats = stats
        self.scripts = {name: _Script(keys.prefix, body) for name, body in _SCRIPTS.items()}
        # The peek's constant commands, packed once.
        self._multi, self._exec = calls.pack("MULTI"), calls.pack("EXEC")
        self._scripts_known = calls.pack("SCRIPT", "EXISTS", self.scripts["lookup"].sha)
        self._lock = threading.Lock()
        self._renewals_owed = 0
        self._renewals_done = 0
        # (fence, change) pairs whose removal failed: made good with the namespace renewal.
        self._fences_owed: set[tuple[str, str]] = set()
        self._recovery: threading.Thread | None = None
        self._closed = threading.Event()

    # --- entries -----------------------------------------------------------------------------

    def lookup(self, entry: Entry, *, lock: bool, count: bool) -> Lookup:
        """The entry's value, or its current stamp (and the stampede lock if asked and free).
        ``count``: a reader's first lookup, counted in the statistics once Redis answered it (a
        hit, or a miss: the database answers)."""
        if count:
            deferred = self.calls.take(("cache", entry.data))
            if deferred is None:
                value = self._call(lambda: self._peeked(entry, self._peek(entry)))
            else:
                value = self._call(lambda: self._peeked(entry, _replies(deferred)))
            self.stats.owe("lookups")
            if value is not None:
                return Lookup(value=value, stamp=None, lock_token=None)
            self.stats.owe("missed")  # unless the script finds it stored since, below
        token = fresh_token() if lock else ""
        reply = self._call(lambda: self._evalsha("lookup", *self._lookup_args(entry, token)))
        found = _lookup(reply, token)
        if count and found.value is not None:
            self.stats.owe("missed", -1)
        return found

    def defer_peek(self, entry: Entry) -> None:
        """Send the peek of ``entry`` with this request's next round trip (lumen.prefetch); the
        request's lookup of the entry then takes its replies instead of peeking itself."""
        if self.breaker.state == CLOSED and not self.renewal_owed:
            owed = self.stats.take_owed()
            self.calls.defer(
                ("cache", entry.data),
                self._peek_commands(entry, owed),
                on_unsent=(lambda: self.stats.give_back(owed)) if owed else None,
            )

    def _peek(self, entry: Entry) -> list:
        return self.calls.pipeline(self._peek_commands(entry, self.stats.take_owed()))

    def _peek_commands(self, entry: Entry, owed: dict[tuple[int, str], int]) -> list[tuple]:
        """A peek, in one transaction: whether Redis still has this deployment's scripts (a
        Redis that restarted has not: it may have come back with entries whose invalidation
        was lost, see _scripts_lost), the generations, the entry's stamp and value, and how
        many of its tags are fenced; and the lookups and misses ``owed`` to the stats."""
        fenced = [("EXISTS", *entry.fences)] if entry.fences else []
        return [
            self._multi,
            self._scripts_known,
            ("MGET", *entry.generations),
            ("HMGET", entry.data, "s", "v"),
            *fenced,
            *self._owed_commands(owed),
            self._exec,
        ]

    def _owed_commands(self, owed: dict[tuple[int, str], int]) -> list[tuple]:
        commands, buckets = [], set()
        for (minute, field), amount in owed.items():
            bucket = self.keys.stats_bucket(minute)
            commands.append(("HINCRBY", bucket, field, amount))
            buckets.add(bucket)
        return commands + [("EXPIRE", bucket, self.bucket_ttl) for bucket in sorted(buckets)]

    def flush_stats(self) -> None:
        """Send the lookups and misses this process still owes Redis (a failure loses them)."""
        commands = self._owed_commands(self.stats.take_owed(now=True))
        if commands:
            self._call(lambda: self.calls.pipeline(commands))

    def _peeked(self, entry: Entry, replies: list) -> bytes | None:
        """The entry's value if the peek's replies find it valid: every generation present and
        equal to the entry's stamp, and no tag fenced."""
        results = replies[-1]
        (scripts_known,), generations, (stamp, value) = results[:3]
        if not scripts_known:
            self._scripts_lost()
            return None
        if (entry.fences and results[3]) or stamp is None or None in generations:
            return None
        return value if stamp == b":".join(generations) else None

    def store(self, entry: Entry, stamp: bytes, value: bytes, lock_token: str | None) -> bool:
        """Write the value if the entry's generations still match ``stamp`` and none of its tags
        is fenced; free the lock."""
        keys, args = self._store_args(entry, stamp, value, lock_token or "")
        return bool(self._call(lambda: self._evalsha("store", keys, args)))

    def release(self, entry: Entry, lock_token: str) -> None:
        self._call(lambda: self._evalsha("release", [entry.lock], [lock_token]))

    def lookup_many(self, entries: list[Entry]) -> list[Lookup]:
        """Pipelined lookups without counting or locking (warm-up)."""

        def run():
            self._ensure_scripts()
            pipe = self.client.pipeline(transaction=False)
            for entry in entries:
                self._queue(pipe, "lookup", *self._lookup_args(entry, ""))
            return pipe.execute()

        return [_lookup(reply, "") for reply in self._call(run)]

    def store_many(self, items: list[tuple[Entry, bytes, bytes]]) -> int:
        """Pipelined check-and-set stores of (entry, stamp, value); how many were written."""

        def run():
            pipe = self.client.pipeline(transaction=False)
            for entry, stamp, value in items:
                self._queue(pipe, "store", *self._store_args(entry, stamp, value, ""))
            return sum(pipe.execute())

        return self._call(run)

    def _lookup_args(self, entry: Entry, token: str) -> tuple[list, list]:
        keys = [entry.data, entry.lock, *entry.generations, *entry.fences]
        return keys, [fresh_token(), token, LOCK_TTL_MS, len(entry.generations)]

    def _store_args(self, entry: Entry, stamp: bytes, value: bytes, token: str):
        keys = [entry.data, entry.lock, *entry.generations, *entry.fences]
        return keys, [stamp, value, self.ttl, token, len(entry.generations)]

    # --- invalidation ------------------------------------------------------------------------

    def invalidate(
        self, generations: tuple[str, ...], fences: tuple[str, ...] = (), change: str | None = None
    ) -> bool:
        """Bump the generations that exist, in one transaction, and take ``change`` out of
        ``fences``. A missing generation has no entry stamped with it, and a reader whose lookup
        made it can no longer store: nothing to do, and no key is made for a tag nobody reads.

        Tried even while the breaker is open: skipping it would let another worker, which can
        reach Redis, serve what this write changed. On failure the namespace is renewed (and the
        fences lifted) as soon as Redis answers this process again.
        """
        released = [(fence, change) for fence in fences] if change is not None else []

        def run():
            pipe = self.client.pipeline(transaction=True)
            for generation in generations:
                pipe.set(generation, fresh_token(), ex=self.ttl, xx=True)
            for fence, member in released:
                pipe.srem(fence, member)
            self._count(pipe, "invalidations", 1)
            pipe.execute()
            return True

        try:
            return self._call(run, probe=True)
        except Unavailable:
            with self._lock:
                self._fences_owed.update(released)
            self._owe_renewal()
            return False

    def fence(self, generations: tuple[str, ...], fences: tuple[str, ...], change: str) -> None:
        """Bump the generations and put ``change`` in every fence, in one transaction: from now
        until ``invalidate`` takes it out, no entry depending on them is served or stored.
        Raises Unavailable when Redis does not confirm it (tried even with the breaker open)."""

        def run():
            pipe = self.client.pipeline(transaction=True)
            for generation in generations:
                pipe.set(generation, fresh_token(), ex=self.ttl, xx=True)
            for fence in fences:
                pipe.sadd(fence, change)
                pipe.expire(fence, FENCE_TTL_SECONDS)
            pipe.execute()

        self._call(run, probe=True)

    # --- the calls, the breaker and recovery ---------------------------------------------------

    def _call(self, operation: Callable[[], Any], probe: bool = False) -> Any:
        if not (probe or self.breaker.allow()):
            raise Unavailable
        try:
            if self.renewal_owed:
                self._renew_namespace()
            result = operation()
        except Exception as exc:  # a RedisError, or anything else: no request fails for Redis
            self.stats.error()
            if self.breaker.failed():
                self.stats.breaker(is_open=True)
                self._owe_renewal()
                log.warning(
                    "cache: Redis unreachable, serving from the database",
                    extra={"error": repr(exc), "cooldown_s": self.breaker.cooldown},
                )
            else:
                log.warning("cache: Redis call failed", extra={"error": repr(exc)})
            raise Unavailable from exc
        self._succeeded()
        return result

    def _succeeded(self) -> None:
        if self.breaker.succeeded():
            self.stats.breaker(is_open=False)
            log.info("cache: Redis answers again")
        errors = self.stats.take_unreported_errors()
        if errors:
            # Counted while Redis was not answering; one extra round trip after an episode.
            pipe = self.client.pipeline(transaction=False)
            self._count(pipe, "errors", errors)
            try:
                pipe.execute()
            except RedisError:
                self.stats.give_back_errors(errors)

    def _evalsha(self, name: str, keys: list, args: list) -> Any:
        script = self.scripts[name]
        try:
            return self.calls.evalsha(script.sha, keys, args)
        except NoScriptError:
            self._scripts_lost()
            return self.calls.evalsha(script.sha, keys, args)

    def _queue(self, pipe, name: str, keys: list, args: list) -> None:
        pipe.evalsha(self.scripts[name].sha, len(keys), *keys, *args)

    def _ensure_scripts(self) -> None:
        if not all(self.client.script_exists(*(s.sha for s in self.scripts.values()))):
            self._scripts_lost()

    def _scripts_lost(self) -> None:
        # Redis restarted (or its scripts were flushed): it may have come back with entries
        # whose invalidation failed while it was away. Renew first, load the scripts second,
        # so any process that finds the scripts loaded knows the namespace was renewed.
        self._renew_namespace("Redis has not seen this deployment's scripts (new or restarted)")
        for script in self.scripts.values():
            self.client.script_load(script.text)

    @property
    def renewal_owed(self) -> bool:
        return self._renewals_owed != self._renewals_done

    def _owe_renewal(self) -> None:
        with self._lock:
            self._renewals_owed += 1
            if self._recovery is None and not self._closed.is_set():
                self._recovery = threading.Thread(
                    target=self._recover_in_background, name="lumen-cache-recovery", daemon=True
                )
                self._recovery.start()

    def _renew_namespace(self, reason: str = "an invalidation may have been missed") -> None:
        owed = self._renewals_owed
        with self._lock:
            fences = list(self._fences_owed)
        self.client.set(self.keys.epoch, fresh_token(), ex=self.ttl)
        if fences:
            pipe = self.client.pipeline(transaction=False)
            for fence, change in fences:
                pipe.srem(fence, change)
            pipe.execute()
        with self._lock:
            self._fences_owed.difference_update(fences)
            self._renewals_done = max(self._renewals_done, owed)
        log.warning(
            "cache namespace renewed: entries written before are no longer served",
            extra={"reason": reason},
        )

    def _recover_in_background(self) -> None:
        while not self._closed.wait(RECOVERY_INTERVAL_SECONDS):
            if self.renewal_owed:
                try:
                    self._renew_namespace()
                except Exception:
                    continue
                self._succeeded()
            with self._lock:
                if not self.renewal_owed:
                    self._recovery = None
                    return

    def _count(self, pipe, kind: str, amount: int) -> None:
        bucket = self.keys.stats_bucket(current_minute())
        pipe.hincrby(bucket, kind, amount)
        pipe.expire(bucket, self.bucket_ttl)

    # --- operations (CLI, health) --------------------------------------------------------------

    def minute_buckets(self, minutes: int) -> list[dict]:
        self.flush_stats()  # this process's own figures are exact; the others' at most a second old
        now = current_minute()

        def run():
            pipe = self.client.pipeline(transaction=False)
            for minute in range(now - minutes + 1, now + 1):
                pipe.hgetall(self.keys.stats_bucket(minute))
            return pipe.execute()

        return self._call(run)

    def try_lock(self, name: str, seconds: int) -> str | None:
        """A short-lived lock under ``temp:``; its token, or None if another process holds it."""
        token, key = fresh_token(), self.keys.temp(name)
        taken = self._call(lambda: self.client.set(key, token, nx=True, ex=seconds))
        return token if taken else None

    def unlock(self, name: str, token: str) -> None:
        self._call(lambda: self._evalsha("release", [self.keys.temp(name)], [token]))

    def clear(self) -> int:
        """Delete every key of this deployment (SCAN, never KEYS); how many were deleted."""
        deleted = 0
        batch = []
        for key in self.client.scan_iter(match=self.keys.pattern, count=1000):
            batch.append(key)
            if len(batch) == 500:
                deleted += self.client.unlink(*batch)
                batch = []
        if batch:
            deleted += self.client.unlink(*batch)
        return deleted

    def close(self) -> None:
        try:
            self.flush_stats()
        except Unavailable:
            pass  # counted, as an error, where it failed
        self._closed.set()
        recovery = self._recovery
        if recovery is not None:
            recovery.join(timeout=2)


_SCRIPTS = {"lookup": LOOKUP, "store": STORE, "release": RELEASE}


def _replies(deferred) -> list:
    if deferred.error is not None:
        raise deferred.error
    return deferred.replies


def _lookup(reply: list, token: str) -> Lookup:
    if reply[0] == 1:
        return Lookup(value=reply[1], stamp=None, lock_token=None)
    if reply[0] == 2:
        return Lookup(value=None, stamp=reply[1], lock_token=None, fenced=True)
    return Lookup(value=None, stamp=reply[1], lock_token=token if reply[2] == 1 else None)
