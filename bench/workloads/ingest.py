"""Ingest: JSON events from tansu into Iceberg with `fjord ingest` pinned to one core.

Throughput: a topic is filled with small cafe-like events first; the time `fjord ingest` takes
from its first commit to the last record committed (read from its /metrics) is set beside the
time a bare librdkafka consumer (confluent-kafka) takes just to read the same events: the floor
of reading them at all. Freshness: events arrive at a steady rate while marker events record when
they were produced; a client of fjord serve polls for the markers, and the delay until each is
visible in a SELECT gives p50 and p99. Files: the mean size of the data files committed under
that load, and after `fjord maintain` merged the small files of the last throughput run's table
(the target: 32 MB, or the whole table in one file when it holds less).
"""

import json
import os
import re
import statistics
import subprocess
import threading
import time
import urllib.request

from runner import Measurement, free_port, wait_for

NAME = "ingest"
DESCRIPTION = "fjord ingest on one core: events/s (vs a bare consumer reading them), freshness p50/p99, file size"

TOPIC = "bench-events"
# Freshness is measured on a topic of its own, so that no backlog stands before the markers.
FRESH_TOPIC = "bench-fresh"
PARTITIONS = 4
# tansu 0.6 holds every fetch for fetch.wait.max.ms even when it has records, so reading speed
# is records per fetch / that wait (500 ms by default: about 110k events/s whoever reads).
# Apache Kafka answers at once when records wait. Both readers get the same, shorter wait.
FETCH_WAIT_MS = 20


def event(i, kind="event"):
    return (
        f'{{"event_id":"e-{i}","event_time":"2026-11-21T10:{(i // 60) % 60:02d}:{i % 60:02d}Z",'
        f'"visitor_id":"v-{i % 997}","cat_id":"c-{i % 11000}","interaction_type":"like",'
        f'"duration_seconds":{i % 600},"kind":"{kind}","seq":{i}}}'
    ).encode()


def producer(bootstrap, linger_ms=20):
    from confluent_kafka import Producer

    return Producer({"bootstrap.servers": bootstrap, "linger.ms": linger_ms, "queue.buffering.max.messages": 1_000_000})


def produce(bootstrap, topic, start, count):
    p = producer(bootstrap)
    for i in range(start, start + count):
        while True:
            try:
                p.produce(topic, key=str(i % 1000), value=event(i))
                break
            except BufferError:
                p.poll(0.05)
    p.flush(60)


def create_topic(bootstrap, topic):
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, PARTITIONS, 1)]).values():
        future.result(30)


def metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        match = re.match(r'^(\w+)\{pipeline="bench"\} ([0-9.e+-]+)$', line)
        if match:
            values[match.group(1)] = float(match.group(2))
        match = re.match(r'^fjord_ingest_phase_seconds_total\{pipeline="bench",phase="(\w+)"\} ([0-9.e+-]+)$', line)
        if match:
            values[f"phase_{match.group(1)}"] = float(match.group(2))
    return values


PHASES = ("decode", "write", "commit")


def cpu_seconds(pid):
    """User plus system CPU time of a process, all its threads (librdkafka's too)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Sidecar:
    """`fjord ingest` with one pipeline `bench` over `topic` into `table`, then `extra` TOML.
    Pinned to one core unless `pin` is false; `fetch_wait_ms` (None: librdkafka's own) goes to
    every consumer through [ingest.kafka.properties]."""

    def __init__(self, bench, bootstrap, group, table, topic=TOPIC, extra="", pin=True,
                 fetch_wait_ms=FETCH_WAIT_MS, log_level="info"):
        self.port = free_port()
        config = bench.fjord.dir / f"ingest-{group}.toml"
        self.config = config
        properties = (
            f'[ingest.kafka.properties]\n"fetch.wait.max.ms" = "{fetch_wait_ms}"\n'
            if fetch_wait_ms is not None else ""
        )
        config.write_text(
            f"""[server]
default_catalog = "iceberg"
[demo]
build_on_start = false
[catalogs.iceberg]
type = "iceberg"
warehouse = "warehouse"
[ingest]
http_listen = "127.0.0.1:{self.port}"
[ingest.kafka]
bootstrap_servers = "{bootstrap}"
group_id = "{group}"
{properties}[ingest.pipelines.bench]
topics = ["{topic}"]
table = "{table}"
event_time = "event_time"
{extra}"""
        )
        command = [bench.fjord.bin, "--log", log_level, "ingest", "--config", str(config)]
        # One core, as the ingest target is stated per core.
        if pin:
            command = ["taskset", "-c", "0", *command]
        self.log = bench.fjord.dir / f"ingest-{group}.log"
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
        wait_for(self.answers, 30, "fjord ingest")

    def answers(self):
        try:
            metrics(self.port)
            return True
        except OSError:
            return False

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=60)


def ingest_rate(bench, bootstrap, events):
    """Seconds per million events, from the first record read to the last record committed
    (the last commit waits for the idle flush): wall time, CPU time of the sidecar (all
    threads, on its one core), and wall time per phase."""
    table = f"bench.events_{time.monotonic_ns()}"
    sidecar = Sidecar(bench, bootstrap, f"rate-{time.monotonic_ns()}", table)
    first = None
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            values = metrics(sidecar.port)
            cpu = cpu_seconds(sidecar.process.pid)
            committed = values.get("fjord_ingest_committed_records_total", 0)
            now = time.monotonic()
            if values.get("fjord_ingest_records_total", 0) > 0 and first is None:
                first = (now, committed, cpu, values)
            if committed >= events:
                per_million = 1e6 / (committed - first[1])
                phases = {
                    phase: (values.get(f"phase_{phase}", 0) - first[3].get(f"phase_{phase}", 0)) * per_million
                    for phase in PHASES
                }
                return (now - first[0]) * per_million, (cpu - first[2]) * per_million, phases, (sidecar.config, table)
            time.sleep(0.05)
        raise RuntimeError("fjord ingest did not commit every event within 10 minutes")
    finally:
        sidecar.stop()


def consume_rate(bootstrap, events, topic=TOPIC, fetch_wait_ms=FETCH_WAIT_MS):
    """Seconds per million events for a bare consumer that only reads `topic` from the start."""
    from confluent_kafka import Consumer

    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"bare-{time.monotonic_ns()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "fetch.wait.max.ms": fetch_wait_ms,
    })
    consumer.subscribe([topic])
    seen, first = 0, None
    deadline = time.monotonic() + 600
    while seen < events and time.monotonic() < deadline:
        for message in consumer.consume(num_messages=10_000, timeout=0.5):
            if message.error():
                continue
            if first is None:
                first = (time.monotonic(), seen)
            seen += 1
    elapsed = time.monotonic() - first[0]
    consumer.close()
    return elapsed / (seen - first[1]) * 1e6


def freshness(bench, bootstrap, rate, seconds):
    """p50 and p99 seconds from producing a marker to seeing it in a SELECT through fjord serve,
    with `rate` events/s arriving; and the mean data file size committed meanwhile."""
    table = f"bench.fresh_{time.monotonic_ns()}"
    sidecar = Sidecar(bench, bootstrap, f"fresh-{time.monotonic_ns()}", table, FRESH_TOPIC)
    sent = {}
    stop = threading.Event()

    def load():
        p = producer(bootstrap)
        i, marker = 10_000_000, 0
        started = time.monotonic()
        while not stop.is_set() and time.monotonic() - started < seconds:
            tick = time.monotonic()
            for _ in range(rate // 10):
                p.produce(FRESH_TOPIC, key=str(i % 1000), value=event(i))
                i += 1
            sent[i] = time.monotonic()
            p.produce(FRESH_TOPIC, key="marker", value=event(i, kind="marker"))
            i += 1
            marker += 1
            p.poll(0)
            time.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))
        p.flush(60)

    seen = {}
    last_error = None
    try:
        thread = threading.Thread(target=load)
        thread.start()
        conn = bench.fjord.connect()
        try:
            deadline = time.monotonic() + seconds + 60
            while time.monotonic() < deadline:
                try:
                    rows = conn.execute(f"SELECT seq FROM iceberg.{table} WHERE kind = 'marker'").fetchall()
                except Exception as error:  # the table appears with the first commit
                    last_error = error
                    rows = []
                    conn.close()
                    conn = bench.fjord.connect()
                now = time.monotonic()
                for (seq,) in rows:
                    seen.setdefault(seq, now)
                if not thread.is_alive() and sent and len(seen) >= len(sent):
                    break
                time.sleep(0.05)
        finally:
            conn.close()
        thread.join()
        values = metrics(sidecar.port)
    finally:
        stop.set()
        sidecar.stop()
    if len(seen) < len(sent):
        tail = "".join(open(sidecar.log).readlines()[-15:])
        raise RuntimeError(f"only {len(seen)} of {len(sent)} markers became visible (last error: {last_error})\n{tail}")
    # Steady state: the markers sent once the first one was visible (the table exists and the
    # sidecar holds its partitions), not the ones waiting for start-up.
    started = min(seen.values())
    delays = sorted(seen[seq] - sent[seq] for seq in sent if sent[seq] >= started)
    p50 = statistics.median(delays)
    p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
    files = values.get("fjord_ingest_files_total", 0)
    mean_file_mb = values.get("fjord_ingest_file_bytes_total", 0) / files / 1e6 if files else 0.0
    return p50, p99, mean_file_mb


def compact(bench, config, table):
    """`fjord maintain` on a table the sidecar landed: seconds, and the files before and after."""
    started = time.monotonic()
    result = subprocess.run(
        [bench.fjord.bin, "--log", "warn", "maintain", "--config", str(config), "--table", table,
         "--older-than", "0s", "--retain-last", "1"],
        capture_output=True, text=True, timeout=1800,
    )
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"fjord maintain failed: {result.stdout}{result.stderr}")
    line = next((l for l in result.stdout.splitlines() if "small files" in l), None)
    if line is None:
        raise RuntimeError(f"fjord maintain printed no compaction line: {result.stdout}")
    # "t: 1804 small files (2104.4 MiB) in 3 partitions -> 5 files (2071.0 MiB); ..."
    words = line.replace("(", " ").replace(")", " ").replace(";", " ").split()
    merged = int(words[words.index("small") - 1])
    merged_mib = float(words[words.index("small") + 2])
    arrow = words.index("->")
    written = int(words[arrow + 1])
    written_mib = float(words[arrow + 3])
    return seconds, merged, merged_mib, written, written_mib


def run(bench):
    tansu = bench.tansu
    bootstrap = tansu.bootstrap
    create_topic(bootstrap, TOPIC)
    events = 1_000_000 if bench.quick else 3_000_000
    produce(bootstrap, TOPIC, 0, events)
    fjord_times, fjord_cpu, peer_times, phases = [], [], [], []
    for _ in range(1 if bench.quick else 3):
        seconds, cpu, phase, landed = ingest_rate(bench, bootstrap, events)
        fjord_times.append(seconds)
        fjord_cpu.append(cpu)
        phases.append(phase)
        peer_times.append(consume_rate(bootstrap, events))
    # The last run's table, as the sidecar left it: its small files merged by `fjord maintain`.
    compact_seconds, merged, merged_mib, written, written_mib = compact(bench, *landed)
    mean_compacted_mb = written_mib * 1.048576 / written if written else 0.0
    rate = 20_000 if bench.quick else 50_000
    create_topic(bootstrap, FRESH_TOPIC)
    p50, p99, mean_file_mb = freshness(bench, bootstrap, rate, 20 if bench.quick else 40)
    median = statistics.median
    fjord_rate = 1e6 / median(fjord_times)
    cpu_rate = 1e6 / median(fjord_cpu)
    phase_text = ", ".join(f"{phase} {median([p[phase] for p in phases]):.2f} s" for phase in PHASES)
    print(f"bench: ingest: {fjord_rate:,.0f} events/s on one core (wall); {cpu_rate:,.0f} events per CPU-second "
          f"of the sidecar; bare consumer {1e6 / median(peer_times):,.0f} events/s; per 1M events: {phase_text}; "
          f"freshness at {rate:,} events/s: p50 {p50:.2f} s, p99 {p99:.2f} s; mean file {mean_file_mb:.1f} MB; "
          f"compaction of {events:,} events: {merged} files ({merged_mib:.1f} MiB) -> {written} files "
          f"({written_mib:.1f} MiB) in {compact_seconds:.1f} s, mean file {mean_compacted_mb:.1f} MB", flush=True)
    return [
        Measurement(NAME, "s per 1M JSON events, one core", "s", median(fjord_times),
                    "bare consumer (read only)", median(peer_times), target_absolute=5.0),
        Measurement(NAME, "CPU s per 1M JSON events (sidecar)", "s", median(fjord_cpu),
                    "-", None, target_absolute=5.0),
        Measurement(NAME, f"freshness p50 at {rate // 1000}k events/s", "s", p50, "-", None),
        Measurement(NAME, f"freshness p99 at {rate // 1000}k events/s", "s", p99, "-", None, target_absolute=5.0),
        Measurement(NAME, f"mean data file at {rate // 1000}k events/s, as committed", "MB", mean_file_mb, "-", None),
        # 32 MB, or the whole table in one file when it holds less than that.
        Measurement(NAME, f"mean data file after fjord maintain (table {written_mib * 1.048576:.0f} MB)", "MB",
                    mean_compacted_mb, "-", None, target_minimum=min(32.0, written_mib * 1.048576 * 0.99)),
        Measurement(NAME, "s per 1M events compacted", "s", compact_seconds * 1e6 / events,
                    "ingest (one core)", median(fjord_times)),
    ]
