"""Start-up: exec of `fjord serve` to the first successful SELECT 1, and idle memory."""

import time

from runner import Measurement, can_connect, wait_for

NAME = "startup"
DESCRIPTION = "time from exec to the first SELECT 1, and idle RSS (PostgreSQL's start as the peer)"


def run(bench):
    fjord, postgres = bench.fjord, bench.postgres
    fjord_times, postgres_times, rss = [], [], []
    fjord.stop()
    for _ in range(bench.repeat):
        fjord_times.append(fjord.start())
        time.sleep(0.5)  # idle: let start-up work settle before reading memory
        rss.append(fjord.rss_mb())
        fjord.stop()
        postgres.stop()
        started = time.monotonic()
        postgres.start()
        wait_for(lambda: can_connect(postgres.port), 30, "postgres")
        postgres_times.append(time.monotonic() - started)
    fjord.start()  # leave it running for the next workloads
    median = lambda values: sorted(values)[len(values) // 2]
    return [
        Measurement(NAME, "exec to first SELECT 1", "s", median(fjord_times), "postgres", median(postgres_times), target_absolute=1.0),
        Measurement(NAME, "idle RSS", "MB", median(rss), "-", None, target_absolute=100.0),
    ]
