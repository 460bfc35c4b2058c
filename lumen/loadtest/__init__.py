"""``lumen loadtest``: the release gate. Prepare a target's data (``prepare``), run Locust's
scenarios (``loadtests/locustfile.py``) headless against it (``locust_run``), on a local
deployment of its own when no URL is given (``local``), and judge the run against the release
thresholds (``thresholds``). Locust comes with the ``load`` extra."""
