"""The soak (benchmarks/soak.py): ten minutes under Locust with every worker's memory and the
database connections sampled, growth held to the stated bounds. `pytest -m soak` runs it; the
default run leaves it out and smoke-tests the script for 20 s."""

from __future__ import annotations

import pytest

from benchmarks import soak


def run(seconds: int, interval: float) -> dict:
    result = soak.soak(seconds, workers=2, users=6, interval=interval, driver="locust")
    verdict = soak.judge(result, seconds, workers=2, max_rss_growth_mb=25.0)
    print(f"\nFIGURES soak {seconds}s: sent={result['sent']} failed={result['failed']} {verdict}")
    return {**result, **verdict}


@pytest.mark.soak
def test_ten_minutes_under_load_grow_no_worker_and_no_pool():
    outcome = run(600, interval=5.0)
    assert outcome["problems"] == []
    assert outcome["sent"] > 1000


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.reliability
def test_the_soak_script_samples_and_judges_a_short_run():
    outcome = run(20, interval=1.0)
    assert outcome["problems"] == [], outcome
    assert outcome["sent"] > 0 and outcome["failed"] == 0
    assert len(outcome["samples"]) >= 15
    assert set(outcome["rss_growth_mb"]) == set(outcome["workers"])
    # The judge does fail a run: a worker that grew past the bound is named.
    grown = {**outcome, "samples": [dict(s) for s in outcome["samples"]]}
    pid = outcome["workers"][0]
    for sample in grown["samples"][-3:]:
        sample["rss_mb"] = {**sample["rss_mb"], pid: sample["rss_mb"][pid] + 100}
    judged = soak.judge(grown, 20, workers=2, max_rss_growth_mb=25.0)
    assert judged["rss_growth_mb"][pid] > 25
    assert judged["problems"] == [
        f"worker {pid} grew {judged['rss_growth_mb'][pid]} MB (bound 25.0 MB)"
    ]
