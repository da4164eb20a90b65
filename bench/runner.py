"""The benchmark runner: starts the real components, runs the workloads, prints and saves ratios.

A workload is a module in bench/workloads/ with a `NAME`, a `DESCRIPTION` and a
`run(bench) -> list[Measurement]`; adding one is adding a file. Every figure is a median of
`--repeat` timed runs after one warm-up, and is compared with a peer measured in the same run on
the same machine, because these machines are shared and noisy: ratios, not absolute times.
"""

import argparse
import dataclasses
import importlib
import json
import math
import os
import pathlib
import pkgutil
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import psycopg

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


@dataclasses.dataclass
class Measurement:
    workload: str
    case: str
    unit: str  # "s" or "MB"
    fjord: float
    peer_name: str
    peer: float | None
    # The target: fjord / peer must be at most `target_ratio`, or fjord at most `target_absolute`,
    # or fjord at least `target_minimum`.
    target_ratio: float | None = None
    target_absolute: float | None = None
    target_minimum: float | None = None
    # A second figure measured in the same rounds, to read fjord's beside: what the case costs
    # through the least any middle layer could do (PgBouncer in fjord's place, for Postgres).
    reference_name: str | None = None
    reference: float | None = None

    @property
    def ratio(self):
        if self.peer is None or self.peer == 0:
            return None
        return self.fjord / self.peer

    @property
    def target(self):
        if self.target_ratio is not None:
            return f"<= {self.target_ratio:g}x"
        if self.target_absolute is not None:
            return f"< {self.target_absolute:g} {self.unit}"
        if self.target_minimum is not None:
            return f">= {self.target_minimum:g} {self.unit}"
        return "-"

    @property
    def met(self):
        if self.target_ratio is not None and self.ratio is not None:
            return self.ratio <= self.target_ratio
        if self.target_absolute is not None:
            return self.fjord < self.target_absolute
        if self.target_minimum is not None:
            return self.fjord >= self.target_minimum
        return None


def rss_mb(pid):
    """Resident memory of a process, MB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise RuntimeError(f"{what} did not become ready within {timeout} s")


def can_connect(port, dbname="postgres", user="postgres"):
    try:
        with psycopg.connect(host="127.0.0.1", port=port, user=user, dbname=dbname, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


class Postgres:
    """A throwaway PostgreSQL cluster, as the tests use."""

    def __init__(self, workdir):
        bins = sorted(pathlib.Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not bins and not shutil.which("initdb"):
            raise SystemExit("bench: PostgreSQL server binaries are missing (scripts/setup-test-env installs them)")
        self.bin = bins[-1].parent if bins else pathlib.Path(shutil.which("initdb")).parent
        self.dir = pathlib.Path(workdir) / "postgres"
        self.dir.mkdir()
        self.root = os.geteuid() == 0
        if self.root:
            subprocess.run(["chown", "-R", "postgres", str(self.dir)], check=True)
        self.port = free_port()
        self._run("initdb", "-D", str(self.dir / "data"), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")

    def _run(self, program, *args):
        command = [str(self.bin / program), *args]
        if self.root:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)

    def start(self):
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-o", options, "-l", str(self.dir / "log"), "-w", "start")

    def stop(self):
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")

    def connect(self, dbname="postgres"):
        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=dbname, autocommit=True)


class Fjord:
    """`fjord serve` (release build) with its own warehouse."""

    def __init__(self, workdir, postgres, interactions, cats=None):
        self.bin = os.environ["FJORD_BIN"]
        self.dir = pathlib.Path(workdir) / "fjord"
        self.dir.mkdir()
        self.port = free_port()
        self.flight_port = free_port()
        self.config = self.dir / "config.toml"
        self.config.write_text(
            f"""[server]
postgres_listen = "127.0.0.1:{self.port}"
http_listen = "127.0.0.1:{free_port()}"
flight_listen = "127.0.0.1:{self.flight_port}"
[demo]
build_on_start = false
interactions = {interactions}
{f"cats = {cats}" if cats else ""}
[catalogs.iceberg]
type = "iceberg"
warehouse = "warehouse"
[catalogs.postgresql]
type = "postgres"
host = "127.0.0.1"
port = {postgres.port}
database = "workshop"
user = "postgres"
"""
        )
        self.process = None

    @property
    def warehouse(self):
        return self.dir / "warehouse"

    def demo(self):
        subprocess.run([self.bin, "--log", "warn", "demo", "--config", str(self.config)], check=True, stdout=subprocess.DEVNULL)

    def start(self):
        """Starts the server; returns seconds from exec to the first successful SELECT 1."""
        started = time.monotonic()
        self.process = subprocess.Popen(
            [self.bin, "--log", "warn", "serve", "--config", str(self.config), "--no-demo"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: can_connect(self.port, dbname="iceberg", user="bench"), 60, "fjord")
        return time.monotonic() - started

    def rss_mb(self):
        return rss_mb(self.process.pid)

    def stop(self):
        if self.process:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None

    def connect(self):
        return psycopg.connect(host="127.0.0.1", port=self.port, user="bench", dbname="iceberg", autocommit=True)


class PgBouncer:
    """PgBouncer (Debian's) in front of the bench's Postgres, in session mode: a hop that parses
    only the protocol's framing and forwards bytes, the least a server in Postgres's path adds."""

    def __init__(self, workdir, postgres, dbname="workshop"):
        self.bin = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        if not pathlib.Path(self.bin).exists():
            raise SystemExit("bench: pgbouncer is missing (bench/run installs it)")
        self.dir = pathlib.Path(workdir) / "pgbouncer"
        self.dir.mkdir()
        self.port = free_port()
        self.dbname = dbname
        (self.dir / "users.txt").write_text('"postgres" ""\n')
        (self.dir / "pgbouncer.ini").write_text(
            f"""[databases]
{dbname} = host=127.0.0.1 port={postgres.port} dbname={dbname} user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.dir / "users.txt"}
pool_mode = session
logfile = {self.dir / "log"}
"""
        )
        command = [self.bin, str(self.dir / "pgbouncer.ini")]
        # PgBouncer refuses to run as root.
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "postgres", str(self.dir)], check=True)
            command = ["runuser", "-u", "postgres", "--", *command]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: can_connect(self.port, dbname=dbname), 30, "pgbouncer")

    def connect(self):
        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=self.dbname, autocommit=True)

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)


class Tansu:
    """A tansu broker (Kafka protocol) with in-memory storage, for the ingest workloads."""

    def __init__(self):
        self.bin = os.environ.get("FJORD_TANSU") or str(pathlib.Path.home() / ".cache/fjord/tools/bin/tansu")
        if not pathlib.Path(self.bin).exists():
            raise SystemExit("bench: tansu is missing (scripts/install-tansu installs it)")
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        url = f"tcp://{self.bootstrap}"
        self.process = subprocess.Popen(
            [self.bin, "broker", "--storage-engine", "memory://tansu/", "--listener-url", url, "--advertised-listener-url", url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=dict(os.environ, RUST_LOG="warn"),
        )

        def ready():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            except OSError:
                return False

        wait_for(ready, 30, "tansu")

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)


class Bench:
    """What a workload gets: the running components and a timer."""

    def __init__(self, args, workdir, postgres, fjord):
        self.quick = args.quick
        self.repeat = args.repeat
        self.workdir = pathlib.Path(workdir)
        self.postgres = postgres
        self.fjord = fjord
        self._tansu = None

    @property
    def tansu(self):
        """The Kafka broker, started when a workload first asks for it."""
        if self._tansu is None:
            self._tansu = Tansu()
        return self._tansu

    def close(self):
        if self._tansu is not None:
            self._tansu.stop()

    def median(self, action, repeat=None):
        """Median seconds of `action()` over `repeat` runs after one warm-up run."""
        action()
        times = []
        for _ in range(repeat or self.repeat):
            started = time.perf_counter()
            action()
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    def interleaved_medians(self, actions, repeat=None, budget=2.0, most=11):
        """Median seconds of each of `actions` (name -> callable), timed in rounds that run each
        once in turn, after one warm-up round: whatever the machine is doing then falls on every
        engine alike, not on whichever happens to run at that moment. Rounds that take little
        time are repeated until they fill about `budget` seconds (at most `most` rounds), as short
        runs are the noisiest."""
        started = time.perf_counter()
        for action in actions.values():
            action()
        warm_up = time.perf_counter() - started
        rounds = max(repeat or self.repeat, min(most, math.ceil(budget / max(warm_up, 1e-3))))
        times = {name: [] for name in actions}
        for _ in range(rounds):
            for name, action in actions.items():
                started = time.perf_counter()
                action()
                times[name].append(time.perf_counter() - started)
        return {name: statistics.median(values) for name, values in times.items()}


def load_workloads():
    package = ROOT / "bench" / "workloads"
    sys.path.insert(0, str(ROOT / "bench"))
    modules = []
    for info in sorted(pkgutil.iter_modules([str(package)]), key=lambda m: m.name):
        modules.append(importlib.import_module(f"workloads.{info.name}"))
    return modules


def shown(value, unit):
    """A figure for the table: seconds below one as ms or µs, so that lookups do not read 0.000 s."""
    if unit == "s" and 0 < abs(value) < 0.001:
        return f"{value * 1e6:.0f} µs"
    if unit == "s" and 0 < abs(value) < 1:
        return f"{value * 1e3:.1f} ms"
    return f"{value:.3f} {unit}"


def print_table(measurements):
    header = ("workload", "case", "fjord", "peer", "peer median", "ratio", "target", "met")
    rows = []
    for m in measurements:
        rows.append((
            m.workload,
            m.case,
            shown(m.fjord, m.unit),
            m.peer_name,
            "-" if m.peer is None else shown(m.peer, m.unit),
            "-" if m.ratio is None else f"{m.ratio:.2f}x",
            m.target,
            {True: "yes", False: "NO", None: "-"}[m.met],
        ))
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))
    referenced = [m for m in measurements if m.reference is not None and m.peer]
    if referenced:
        print("\nmeasured in the same rounds, for reference:")
        for m in referenced:
            print(f"  {m.workload}: {m.case}: {m.reference_name} {shown(m.reference, m.unit)}, "
                  f"{m.reference / m.peer:.2f}x {m.peer_name} (fjord {m.ratio:.2f}x)")


def save(measurements, args):
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    data = {
        "time": stamp,
        "commit": commit,
        "quick": args.quick,
        "repeat": args.repeat,
        "cores": os.cpu_count(),
        "measurements": [dict(dataclasses.asdict(m), ratio=m.ratio, met=m.met) for m in measurements],
    }
    json_path = RESULTS / f"{stamp}.json"
    json_path.write_text(json.dumps(data, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    compared = [m for m in measurements if m.ratio is not None]
    png_path = RESULTS / f"{stamp}.png"
    if compared:
        figure, axes = plt.subplots(figsize=(9, 0.45 * len(compared) + 1.5))
        labels = [f"{m.workload}: {m.case} (vs {m.peer_name})" for m in compared]
        colors = ["tab:green" if m.met in (True, None) else "tab:red" for m in compared]
        axes.barh(labels, [m.ratio for m in compared], color=colors)
        axes.axvline(1.0, color="black", linewidth=0.8)
        for index, m in enumerate(compared):
            if m.target_ratio is not None:
                axes.plot([m.target_ratio], [index], marker="|", color="black", markersize=14)
        axes.set_xlabel("fjord time / peer time (lower is better; | marks the target)")
        axes.invert_yaxis()
        figure.tight_layout()
        figure.savefig(png_path, dpi=110)
    return json_path, png_path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, fewer runs (about 3 minutes)")
    parser.add_argument("--only", help="comma-separated workload names")
    parser.add_argument("--repeat", type=int, default=None, help="timed runs per case (default 5, quick 3)")
    parser.add_argument("--interactions", type=int, default=None,
                        help="rows of the demo world's cat_interactions_raw (default 1,000,000, quick 200,000)")
    parser.add_argument("--cats", type=int, default=None, help="cats in the demo world's Postgres table (default 11,000)")
    args = parser.parse_args()
    if args.repeat is None:
        args.repeat = 3 if args.quick else 5
    workloads = load_workloads()
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {w.NAME for w in workloads}
        if unknown:
            raise SystemExit(f"bench: unknown workloads {sorted(unknown)}; known: {[w.NAME for w in workloads]}")
        workloads = [w for w in workloads if w.NAME in wanted]
    interactions = args.interactions or (200_000 if args.quick else 1_000_000)
    with tempfile.TemporaryDirectory(prefix="fjord-bench-") as workdir:
        if os.geteuid() == 0:
            os.chmod(workdir, 0o755)
        postgres = Postgres(workdir)
        postgres.start()
        with postgres.connect() as conn:
            conn.execute("CREATE DATABASE workshop")
        fjord = Fjord(workdir, postgres, interactions, args.cats)
        print(f"bench: building the demo world ({interactions} interactions)", flush=True)
        fjord.demo()
        fjord.start()
        bench = Bench(args, workdir, postgres, fjord)
        measurements = []
        try:
            for workload in workloads:
                print(f"bench: {workload.NAME}: {workload.DESCRIPTION}", flush=True)
                measurements.extend(workload.run(bench))
        finally:
            bench.close()
            fjord.stop()
            postgres.stop()
    print()
    print_table(measurements)
    json_path, png_path = save(measurements, args)
    print(f"\nresults: {json_path.relative_to(ROOT)}, chart: {png_path.relative_to(ROOT)}")
    missed = [m for m in measurements if m.met is False]
    print(f"{len(measurements) - len(missed)} targets met or untargeted, {len(missed)} missed")


if __name__ == "__main__":
    main()
