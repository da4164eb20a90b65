"""pgbench's `SELECT 1` against fjord and against PostgreSQL itself, in every protocol mode."""

import re
import statistics
import subprocess

from runner import Measurement

NAME = "pgbench"
DESCRIPTION = "SELECT 1 throughput (pgbench -M simple/extended/prepared, 1 and 8 clients); peer: PostgreSQL"


def pgbench_binary(bench):
    return str(bench.postgres.bin / "pgbench")


def tps(bench, port, database, mode, clients, seconds):
    script = bench.workdir / "select1.sql"
    script.write_text("SELECT 1;\n")
    output = subprocess.run(
        [
            pgbench_binary(bench), "-n", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
            "-M", mode, "-c", str(clients), "-j", str(min(clients, 2)), "-T", str(seconds),
            "-f", str(script), database,
        ],
        capture_output=True,
        text=True,
    )
    if output.returncode != 0:
        raise SystemExit(f"bench: pgbench failed on port {port}: {output.stderr}")
    match = re.search(r"tps = ([0-9.]+)", output.stdout)
    if not match:
        raise SystemExit(f"bench: no tps in pgbench's output: {output.stdout}")
    return float(match.group(1))


def run(bench):
    # Each case runs fjord and PostgreSQL alternately, `--repeat` times each after a short
    # warm-up of both, and compares the medians: one long run per server would let a burst of
    # load from elsewhere on a shared machine land on only one side.
    seconds = 2 if bench.quick else 4
    results = []
    for mode in ("simple", "extended", "prepared"):
        for clients in (1, 8):
            sides = [(bench.fjord.port, "iceberg", []), (bench.postgres.port, "postgres", [])]
            for port, database, _ in sides:
                tps(bench, port, database, mode, clients, 1)
            for _ in range(bench.repeat):
                for port, database, runs in sides:
                    runs.append(tps(bench, port, database, mode, clients, seconds))
            fjord_tps = statistics.median(sides[0][2])
            postgres_tps = statistics.median(sides[1][2])
            # Times per transaction, so that lower is better like every other row; the target
            # (fjord's tps at least PostgreSQL's at 8 clients) is a ratio of at most 1.
            target = 1.0 if clients == 8 else None
            results.append(
                Measurement(NAME, f"-M {mode}, {clients} client{'s' if clients > 1 else ''} (s per 1k tx)", "s",
                            1000 / fjord_tps, "postgres", 1000 / postgres_tps, target_ratio=target)
            )
    return results
