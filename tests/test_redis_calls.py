"""lumen.redis_calls against the real Redis: replies, errors, deferred commands, and a
connection that dies."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading

import pytest
import redis

from lumen.redis_calls import RedisCalls


@pytest.fixture
def calls(redis_url, redis_client):
    client = redis.Redis.from_url(redis_url, socket_timeout=2)
    yield RedisCalls(client)
    client.close()


def test_replies_are_raw_and_in_order(calls, redis_prefix):
    key = f"{redis_prefix}:a"
    assert calls.pipeline([("SET", key, 1.5), ("GET", key), ("EXPIRE", key, 60)]) == [
        b"OK",
        b"1.5",
        1,
    ]
    assert calls.execute("HMGET", f"{redis_prefix}:none", "s", "v") == [None, None]
    # A command packed once by its caller goes as it is.
    assert calls.pipeline([calls.pack("GET", key), ("PING",)]) == [b"1.5", b"PONG"]


def test_an_error_reply_is_raised_after_every_reply_is_read(calls, redis_prefix):
    key = f"{redis_prefix}:b"
    with pytest.raises(redis.ResponseError):
        calls.pipeline([("SET", key, "x"), ("HGET", key, "f"), ("SET", key, "y")])
    # Every command ran and the connection is still in step.
    assert calls.execute("GET", key) == b"y"
    with pytest.raises(redis.exceptions.NoScriptError):
        calls.evalsha("0" * 40, [], [])


def test_deferred_commands_ride_the_next_round_trip(calls, redis_prefix):
    key = f"{redis_prefix}:c"
    calls.execute("SET", key, "v")
    deferred = calls.defer("c", [("GET", key), ("HGET", key, "f")])
    assert not deferred.sent
    assert calls.execute("PING") == b"PONG"  # someone else's command sends it
    assert deferred.sent and deferred.replies[0] == b"v"
    assert isinstance(deferred.error, redis.ResponseError)  # its own error, not the caller's
    assert calls.take("c") is deferred and calls.take("c") is None


def test_take_sends_what_no_one_else_did(calls, redis_prefix):
    calls.execute("SET", f"{redis_prefix}:d", "w")
    calls.defer("d", [("GET", f"{redis_prefix}:d")])
    assert calls.take("d").replies == [b"w"]


def test_discard_drops_what_a_request_deferred_and_says_what_went_unused(calls, redis_prefix):
    unused, unsent = [], []
    calls.defer(
        "sent",
        [("PING",)],
        on_unused=lambda: unused.append("sent"),
        on_unsent=lambda: unsent.append("sent"),
    )
    calls.execute("PING")
    calls.defer(
        "waiting",
        [("PING",)],
        on_unused=lambda: unused.append("waiting"),
        on_unsent=lambda: unsent.append("waiting"),
    )
    calls.discard()
    assert unused == ["sent"]  # the one whose replies were read
    assert unsent == ["waiting"]  # the one that never left
    assert calls.take("sent") is None and calls.take("waiting") is None
    trips = []
    exchange = calls._exchange
    calls._exchange = lambda state, commands: trips.append(commands) or exchange(state, commands)
    calls.execute("PING")
    assert [list(commands) for commands in trips] == [[("PING",)]]  # the discarded one: never sent


def test_each_thread_keeps_its_own_connection_and_deferred_commands(calls, redis_prefix):
    calls.defer("mine", [("PING",)])
    seen = {}

    def other():
        seen["take"] = calls.take("mine")
        seen["client"] = calls.execute("CLIENT", "ID")

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert seen["take"] is None
    assert seen["client"] != calls.execute("CLIENT", "ID")
    assert calls.take("mine").replies == [b"PONG"]


def test_a_dead_connection_fails_once_then_reconnects(calls, redis_client, redis_prefix):
    own = calls.execute("CLIENT", "ID")
    calls.defer("e", [("PING",)])
    redis_client.client_kill_filter(_id=own)
    with pytest.raises(redis.ConnectionError):
        calls.execute("PING")
    assert isinstance(calls.take("e").error, redis.ConnectionError)
    assert calls.execute("PING") == b"PONG"
    assert calls.execute("CLIENT", "ID") != own


def test_a_reply_that_does_not_come_in_time_is_a_timeout_then_it_reconnects(
    redis_url, redis_prefix
):
    client = redis.Redis.from_url(redis_url, socket_timeout=0.2)
    calls = RedisCalls(client)
    try:
        own = calls.execute("CLIENT", "ID")
        with pytest.raises(redis.TimeoutError):
            calls.execute("BLPOP", f"{redis_prefix}:empty", 2)  # blocks past the timeout
        # The late reply never reaches the next command: a new connection answers it.
        assert calls.execute("PING") == b"PONG"
        assert calls.execute("CLIENT", "ID") != own
    finally:
        client.close()


def test_the_health_check_clock_moves_with_each_exchange(redis_url):
    client = redis.Redis.from_url(redis_url, health_check_interval=30)
    calls = RedisCalls(client)
    try:
        calls.execute("PING")
        connection = calls._state().connection
        connection.next_health_check = 0
        calls.pipeline([("PING",), ("PING",)])
        assert connection.next_health_check > 0  # redis-py would not check a busy connection
    finally:
        client.close()


def test_resp3_connections_read_their_replies_too(redis_url, redis_prefix):
    client = redis.Redis.from_url(redis_url, protocol=3)
    calls = RedisCalls(client)
    try:
        key = f"{redis_prefix}:r3"
        assert calls.pipeline([("SET", key, "v"), ("GET", key), ("EXPIRE", key, 60)]) == [
            b"OK",
            b"v",
            True,
        ]
        with pytest.raises(redis.ResponseError):
            calls.pipeline([("HGET", key, "f"), ("PING",)])
        assert calls.execute("GET", key) == b"v"
    finally:
        client.close()


@contextlib.contextmanager
def calls_to_a_stand_in(answer_ping):
    """RedisCalls to a socket on loopback that plays a Redis: +OK to each command of the
    client's set-up, then ``answer_ping(conn, commands)`` for a write holding PING, which
    returns False to hang up."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def peer():
        conn, _ = listener.accept()
        with conn:
            while data := conn.recv(65536):
                if b"PING" not in data:
                    conn.sendall(b"+OK\r\n" * data.count(b"*"))
                elif answer_ping(conn, data.count(b"*")) is False:
                    return

    thread = threading.Thread(target=peer, daemon=True)
    thread.start()
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
    try:
        yield RedisCalls(client)
    finally:
        client.close()
        listener.close()
        thread.join(timeout=5)


def test_a_reset_connection_is_a_connection_error(redis_prefix):
    """A peer that resets the connection (RST, not FIN) once the command arrives: Redis itself
    only ever closes cleanly, so a stand-in plays the peer."""

    def reset(conn, _commands):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return False

    with calls_to_a_stand_in(reset) as calls:
        with pytest.raises(redis.ConnectionError):
            calls.execute("PING")
        assert calls._state().connection is None  # dropped: the next call connects anew


def test_replies_longer_than_one_read_arrive_whole(calls, redis_prefix):
    key = f"{redis_prefix}:big"
    value = bytes(range(256)) * 4096  # 1 MB: many of the parser's 64 KB reads
    calls.execute("SET", key, value, "EX", 60)
    assert calls.pipeline([("GET", key), ("STRLEN", key), ("GET", key)]) == [
        value,
        len(value),
        value,
    ]


def test_a_forked_child_connects_anew_and_the_parent_keeps_its_connection(calls):
    parent_id = calls.execute("CLIENT", "ID")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what it got, and leave without running anything else
        try:
            fresh = calls._state().connection is None
            child_id = calls.execute("CLIENT", "ID")
            os.write(write_end, f"{fresh} {child_id}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as reported:
        fresh, child_id = reported.read().split()
    os.waitpid(pid, 0)
    assert fresh == "True" and int(child_id) != parent_id
    assert calls.execute("CLIENT", "ID") == parent_id  # the child never touched its socket


def test_a_server_that_cannot_serve_yet_is_a_connection_error(redis_prefix):
    """A Redis still loading its data set answers every command with -LOADING: a real one
    cannot be held in that state on demand, so a stand-in plays it."""

    def loading(conn, commands):
        conn.sendall(b"-LOADING Redis is loading the dataset in memory\r\n" * commands)

    with calls_to_a_stand_in(loading) as calls:
        with pytest.raises(redis.exceptions.BusyLoadingError):
            calls.pipeline([("PING",), ("PING",)])
        assert calls._state().connection is None
