"""Redis commands on the hot paths (cache lookups, rate-limit checks, the token cache) at the
least cost per round trip.

redis-py's ordinary call checks a connection out of the pool and back, runs it under a retry
policy, records observability attributes and applies response callbacks: together about twice
the round trip itself on loopback (96 against 28 µs of CPU for a GET on the development
machine), and more again under load. Here each thread keeps one connection of the client's
pool (so the client's URL, password, timeouts and TLS settings apply), and a call packs its
commands, sends them in one write and reads the replies there. Replies are raw (bytes,
integers, lists); errors are redis-py's exceptions. A connection that fails is dropped, and
the next call on that thread connects anew.

Commands can also wait for the thread's next round trip (``defer``): a read a request is
certain to make (the cache's lookup of the photo it asks for) then rides in the same write as
the next command someone sends (the rate limit's check), and a cache hit costs one round trip
instead of two. The request's end ``discard``s whatever it deferred, sent or not, so nothing
read for one request is ever used by another.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import hiredis
import redis
from redis._parsers.hiredis import NOT_ENOUGH_DATA, _HiredisParser
from redis.exceptions import ResponseError


class Deferred:
    """Commands waiting for the thread's next round trip; once it is made, their replies, or
    the error that stopped them. ``on_unused`` runs when the request ends with the replies
    read but never taken, ``on_unsent`` when it ends before they were sent."""

    __slots__ = ("commands", "replies", "error", "on_unused", "on_unsent")

    def __init__(
        self,
        commands: Sequence[Sequence[Any]],
        on_unused: Callable[[], None] | None,
        on_unsent: Callable[[], None] | None = None,
    ):
        self.commands = commands
        self.replies: list[Any] | None = None
        self.error: BaseException | None = None
        self.on_unused = on_unused
        self.on_unsent = on_unsent

    @property
    def sent(self) -> bool:
        return self.replies is not None or self.error is not None


class RedisCalls:
    """Pipelined commands on ``client``'s pool, one connection per thread."""

    def __init__(self, client: redis.Redis):
        self.pool = client.connection_pool
        self._local = threading.local()
        # A forked child must not share its parent's sockets: it starts with no connection.
        # (Asking os.getpid() on every call instead is a system call, three times a request.)
        forgotten = weakref.WeakMethod(self._forget_connections)
        os.register_at_fork(after_in_child=lambda: (forget := forgotten()) and forget())

    @staticmethod
    def pack(*command: Any) -> bytes:
        """``command`` in the wire format, for a caller that sends the same command often."""
        return hiredis.pack_command(command)

    def execute(self, *command: Any) -> Any:
        """One command's reply."""
        return self.pipeline((command,))[0]

    def evalsha(self, sha: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        return self.execute("EVALSHA", sha, len(keys), *keys, *args)

    def pipeline(self, commands: Sequence[Sequence[Any] | bytes]) -> list[Any]:
        """The replies of ``commands``, sent in one write after the commands this thread
        deferred, and read in order. An error reply is raised once every reply is read, so the
        connection stays in step; a deferred command's error goes to its Deferred."""
        state = self._state()
        waiting, state.waiting = state.waiting, []
        everything = [command for deferred in waiting for command in deferred.commands]
        everything += commands
        try:
            replies = self._exchange(state, everything)
        except BaseException as exc:
            for deferred in waiting:
                deferred.error = exc
            raise
        start = 0
        for deferred in waiting:
            deferred.replies = replies[start : start + len(deferred.commands)]
            deferred.error = next((r for r in deferred.replies if _is_error(r)), None)
            start += len(deferred.commands)
        own = replies[start:]
        error = next((reply for reply in own if _is_error(reply)), None)
        if error is not None:
            raise error
        return own

    # --- deferred commands --------------------------------------------------------------------

    def defer(
        self,
        name: Hashable,
        commands: Sequence[Sequence[Any]],
        on_unused: Callable[[], None] | None = None,
        on_unsent: Callable[[], None] | None = None,
    ) -> Deferred:
        """Queue ``commands`` for this thread's next round trip, under ``name`` for ``take``."""
        state = self._state()
        deferred = Deferred(commands, on_unused, on_unsent)
        state.waiting.append(deferred)
        state.named[name] = deferred
        return deferred

    def take(self, name: Hashable) -> Deferred | None:
        """The Deferred queued under ``name`` in this request, sent now if it has not been."""
        deferred = self._state().named.pop(name, None)
        if deferred is not None and not deferred.sent:
            try:
                self.pipeline(())
            except redis.RedisError:
                pass  # the error is the Deferred's
        return deferred

    def discard(self) -> None:
        """The request is over: drop what it deferred, sent or not."""
        state = getattr(self._local, "state", None)
        if state is None or not state.named:
            return
        named, state.named, state.waiting = state.named, {}, []
        for deferred in named.values():
            if deferred.replies is not None and deferred.on_unused is not None:
                deferred.on_unused()
            elif not deferred.sent and deferred.on_unsent is not None:
                deferred.on_unsent()

    # --- the connection -----------------------------------------------------------------------

    def _forget_connections(self) -> None:
        self._local = threading.local()

    def _state(self) -> _ThreadState:
        state = getattr(self._local, "state", None)
        if state is None:
            state = self._local.state = _ThreadState()
        return state

    def _exchange(self, state: _ThreadState, commands: list) -> list[Any]:
        if not commands:
            return []
        connection = state.connection
        if connection is None:
            connection = state.connection = self.pool.get_connection()
        try:
            # hiredis packs a command in a fifth of the time of the connection's packer; a
            # command given as bytes was packed once by its caller (``pack``).
            packed = b"".join(
                [c if isinstance(c, bytes) else hiredis.pack_command(c) for c in commands]
            )
            connection.send_packed_command([packed], check_health=False)
            replies = _read_replies(connection, len(commands))
        except BaseException:
            state.connection = None
            connection.disconnect()
            self.pool.release(connection)
            raise
        return replies


class _ThreadState:
    __slots__ = ("connection", "waiting", "named")

    def __init__(self):
        self.connection = None
        self.waiting: list[Deferred] = []
        self.named: dict[Hashable, Deferred] = {}


def _read_replies(connection, count: int) -> list[Any]:
    """``count`` replies, error replies as values. Straight from the connection's parser: the
    connection's own ``read_response`` formats its address for an error message it may never
    raise and raises each error reply, on every reply (about a third of a cache peek's CPU)."""
    if connection.protocol in (3, "3"):  # push notifications are interleaved: redis-py's way
        replies = []
        for _ in range(count):
            try:
                replies.append(connection.read_response())
            except ResponseError as exc:
                replies.append(exc)
        return replies
    parser = connection._parser
    try:
        if type(parser) is _HiredisParser and parser._next_response is NOT_ENOUGH_DATA:
            replies = _read_from_hiredis(parser, count)
        else:
            replies = [parser.read_response() for _ in range(count)]
    except OSError as exc:  # a reset, or a timeout the parser let through: redis-py's errors
        kind = redis.TimeoutError if isinstance(exc, socket.timeout) else redis.ConnectionError
        raise kind(f"Error while reading from {connection._host_error()}: {exc.args}") from None
    if connection.health_check_interval:
        connection.next_health_check = time.monotonic() + connection.health_check_interval
    return replies


def _read_from_hiredis(parser: _HiredisParser, count: int) -> list[Any]:
    """What the parser's ``read_response`` reads, ``count`` times, in one loop: its checks
    around each reply cost as much as hiredis parsing it, six times in a cache peek. A reply
    that says the server cannot serve (BusyLoadingError and the like) is raised, as there."""
    reader, replies = parser._reader, []
    if reader is None:
        raise redis.ConnectionError("Connection closed by server.")
    while len(replies) < count:
        reply = reader.gets()
        if reply is NOT_ENOUGH_DATA:
            parser.read_from_socket()
        else:
            replies.append(reply)
    for reply in replies:
        if isinstance(reply, redis.ConnectionError):
            raise reply
        if type(reply) is list and reply and isinstance(reply[0], redis.ConnectionError):
            raise reply[0]
    return replies


def _is_error(reply: Any) -> bool:
    return isinstance(reply, ResponseError)
