"""lumen.tally: counter increments kept in the process, added to their counters in one go."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter

from lumen import Tally


def own_total(counter: Counter, **labels) -> float:
    """The counter's value read from the counter itself, not through a registry (which would
    flush the tally first)."""
    for family in counter.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels == labels:
                return sample.value
    return 0.0


def test_increments_reach_the_counter_at_a_flush_not_before():
    tally, counter = Tally(), Counter("lumen_test_seen", "Seen.", registry=None)
    tally.inc(counter)
    tally.inc(counter, 2.5)
    assert own_total(counter) == 0
    tally.flush()
    assert own_total(counter) == 3.5
    tally.flush()  # nothing pending: nothing added twice
    assert own_total(counter) == 3.5


def test_reading_the_registry_it_is_registered_on_first_flushes_it():
    registry, tally = CollectorRegistry(), Tally()
    registry.register(tally)
    counter = Counter("lumen_test_read", "Read.", ["kind"], registry=registry)
    for kind in ("a", "b", "a"):
        tally.inc(counter.labels(kind=kind))
    assert registry.get_sample_value("lumen_test_read_total", {"kind": "a"}) == 2
    assert registry.get_sample_value("lumen_test_read_total", {"kind": "b"}) == 1


def test_a_counter_not_registered_is_ignored():
    tally = Tally()
    tally.inc(None)
    tally.flush()


def test_increments_from_many_threads_add_up_exactly():
    tally, counter = Tally(), Counter("lumen_test_threads", "Threads.", registry=None)

    def work():
        for _ in range(5_000):
            tally.inc(counter)

    threads = [threading.Thread(target=work) for _ in range(8)]
    flusher_stop = threading.Event()
    flusher = threading.Thread(
        target=lambda: [tally.flush() for _ in iter(flusher_stop.is_set, True)]
    )
    flusher.start()  # flushes racing the increments lose none and add none twice
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    flusher_stop.set()
    flusher.join()
    tally.flush()
    assert own_total(counter) == 40_000
