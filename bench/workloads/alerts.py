"""Alerts: event-to-alert latency of a rule in `fjord ingest`, and a stateful rule over 1M keys.

Latency: events arrive on a topic at a steady rate (10k and 100k events/s) and about a hundred
marker events a second record when they were produced. A per-record rule fires on each marker.
Its latency is from producing the marker to reading its alert from the rule's Kafka topic, and to
receiving it on the sidecar's live feed (`/alerts/stream`, the server-sent events the alert page
follows). The peer, measured in the same run on the same markers, is a bare consumer reading the
markers straight from the input topic: the broker's own produce-to-consume latency, the floor
under any rule.

State: a grouped rule keeping a count per visitor over 1M distinct visitors (2M events, each
visitor twice): records per second the rule evaluated (from /metrics) beside a bare consumer
reading the same events, and the sidecar's memory per key held. The sidecar lands the same
events in Iceberg meanwhile, as it would in production.
"""

import json
import multiprocessing
import statistics
import time
import urllib.request

from runner import Measurement, rss_mb, wait_for
from workloads import ingest
from workloads.ingest import consume_rate, create_topic, producer

NAME = "alerts"
DESCRIPTION = "event-to-alert latency p50/p99 (Kafka and live feed) vs the broker's own; a rule over 1M keys"

INPUT = "bench-alert-events"
ALERTS = "bench-alerts"
STATE_INPUT = "bench-visitors"
# The readers' fetch wait: tansu holds each fetch this long, so both readers get the same.
FETCH_WAIT_MS = 10
MARKERS_PER_SECOND = 100


def event(i, visitor, kind="event"):
    return (
        f'{{"event_id":"e-{i}","event_time":"2026-11-21T10:{(i // 60) % 60:02d}:{i % 60:02d}Z",'
        f'"visitor_id":"v-{visitor}","cat_id":"c-{i % 500}","interaction_type":"like",'
        f'"kind":"{kind}","seq":{i}}}'
    ).encode()


class Sidecar(ingest.Sidecar):
    """`fjord ingest` with one pipeline over `topic` and the given rules, on both cores, its
    consumers at their own fetch waits (the rule's default is the one measured)."""

    def __init__(self, bench, bootstrap, name, topic, rules):
        super().__init__(bench, bootstrap, name, f"bench.{name.replace('-', '_')}", topic,
                         extra=rules, pin=False, fetch_wait_ms=None, log_level="warn")

    def metrics(self):
        """The rules' counters, by metric name with labels."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as response:
            text = response.read().decode()
        values = {}
        for line in text.splitlines():
            if line.startswith("fjord_rule_"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values

    def rss_mb(self):
        return rss_mb(self.process.pid)

    def tail(self):
        return "".join(open(self.log).readlines()[-15:])


def follow_topic(bootstrap, topic, group, markers_only, arrivals, ready, stop):
    """In a process of its own (so that reading every event does not hold up the others): puts
    (seq, arrival time) on `arrivals` for each marker that arrives on `topic`, until `stop`."""
    from confluent_kafka import Consumer

    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "latest",
        "enable.auto.commit": False,
        "fetch.wait.max.ms": FETCH_WAIT_MS,
    })
    consumer.subscribe([topic])
    while not consumer.assignment():
        consumer.poll(0.1)
    ready.set()
    while not stop.is_set():
        # What has arrived, at once; else wait for the next message (a timed consume would
        # wait out its timeout for a full batch, and add that to every delay).
        messages = consumer.consume(num_messages=10_000, timeout=0)
        if not messages:
            message = consumer.poll(0.05)
            messages = [message] if message is not None else []
        for message in messages:
            if message.error():
                continue
            now = time.monotonic()
            value = message.value()
            if markers_only and b'"marker"' not in value:
                continue
            arrivals.put((json.loads(value)["seq"], now))
    consumer.close()


def follow_feed(port, arrivals, ready, stop):
    """In a process of its own: puts (seq, arrival time) on `arrivals` for each marker alert on
    the live feed (server-sent events)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/alerts/stream", timeout=30) as stream:
        ready.set()
        for line in stream:
            if stop.is_set():
                return
            if line.startswith(b"data:"):
                now = time.monotonic()
                alert = json.loads(line[5:])
                if alert.get("rule") == "markers":
                    arrivals.put((alert["seq"], now))


def latency(bench, bootstrap, rate, seconds):
    """p50/p99 seconds from producing a marker to its alert on Kafka, on the live feed, and to
    the marker itself read straight from the input topic."""
    name = f"latency-{rate}-{time.monotonic_ns()}"
    sidecar = Sidecar(bench, bootstrap, name, INPUT, f"""
[ingest.rules.markers]
sql = "SELECT seq, kind FROM bench WHERE kind = 'marker'"
key = "seq"
kafka_topic = "{ALERTS}"
start_from = "latest"
""")
    sent = {}
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    readers = {
        "kafka": (follow_topic, (bootstrap, ALERTS, f"{name}-alerts", False)),
        "feed": (follow_feed, (sidecar.port,)),
        "direct": (follow_topic, (bootstrap, INPUT, f"{name}-direct", True)),
    }
    queues, processes = {}, []
    try:
        # The rule holds its partitions before the first event: wait for its /health.
        wait_for(lambda: rule_running(sidecar), 30, "the rule")
        for what, (target, args) in readers.items():
            queues[what] = context.Queue()
            ready = context.Event()
            process = context.Process(target=target, args=(*args, queues[what], ready, stop), daemon=True)
            process.start()
            processes.append(process)
            if not ready.wait(30):
                raise RuntimeError(f"the {what} reader did not start")
        time.sleep(1)
        p = producer(bootstrap, linger_ms=5)
        i = 0
        per_tick = rate // MARKERS_PER_SECOND
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            tick = time.monotonic()
            for _ in range(per_tick - 1):
                p.produce(INPUT, key=str(i % 1000), value=event(i, i % 997))
                i += 1
            sent[i] = time.monotonic()
            p.produce(INPUT, key="marker", value=event(i, 0, kind="marker"))
            p.poll(0)
            i += 1
            time.sleep(max(0.0, 1 / MARKERS_PER_SECOND - (time.monotonic() - tick)))
        achieved = i / (time.monotonic() - started)
        p.flush(60)
        seen = {what: {} for what in readers}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and min(len(s) for s in seen.values()) < len(sent):
            for what, queue in queues.items():
                while not queue.empty():
                    seq, arrived = queue.get()
                    seen[what].setdefault(seq, arrived)
            time.sleep(0.1)
    finally:
        stop.set()
        for process in processes:
            process.join(5)
            if process.is_alive():
                process.kill()
        sidecar.stop()
    via_kafka, via_feed, direct = seen["kafka"], seen["feed"], seen["direct"]
    missing = {what: len(sent) - len(seen) for what, seen in
               (("kafka", via_kafka), ("feed", via_feed), ("direct", direct)) if len(seen) < len(sent)}
    if missing:
        raise RuntimeError(f"markers missing at {rate} events/s: {missing}\n{sidecar.tail()}")

    def percentiles(seen):
        delays = sorted(seen[seq] - sent[seq] for seq in sent)
        return statistics.median(delays), delays[min(len(delays) - 1, int(len(delays) * 0.99))]

    return achieved, percentiles(via_kafka), percentiles(via_feed), percentiles(direct)


def rule_running(sidecar):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{sidecar.port}/health", timeout=5) as response:
            health = json.loads(response.read())
    except OSError:  # 503 while a pipeline or rule is not running yet
        return False
    rules = health.get("rules", {}).values()
    return bool(rules) and all(rule.get("status") == "ok" for rule in rules)


def state_rate(bench, bootstrap, events):
    """Seconds per million events for a count per visitor over 1M visitors, and MB per 1M keys."""
    name = f"state-{time.monotonic_ns()}"
    sidecar = Sidecar(bench, bootstrap, name, STATE_INPUT, """
[ingest.rules.visitors]
sql = "SELECT visitor_id, count(*) AS visits FROM bench GROUP BY visitor_id HAVING count(*) > 5"
key = "visitor_id"
""")
    try:
        rss_before = sidecar.rss_mb()
        first = None
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            values = sidecar.metrics()
            records = values.get('fjord_rule_records_total{rule="visitors"}', 0)
            now = time.monotonic()
            if records > 0 and first is None:
                first = (now, records)
            if records >= events:
                keys = values.get('fjord_rule_keys{rule="visitors"}', 0)
                seconds = (now - first[0]) / (records - first[1]) * 1e6
                return seconds, keys, sidecar.rss_mb() - rss_before
            time.sleep(0.05)
        raise RuntimeError(f"the rule did not read every event within 15 minutes\n{sidecar.tail()}")
    finally:
        sidecar.stop()


def run(bench):
    bootstrap = bench.tansu.bootstrap
    for topic in (INPUT, ALERTS, STATE_INPUT):
        create_topic(bootstrap, topic)
    seconds = 10 if bench.quick else 20
    measurements = []
    lines = []
    for rate in (10_000, 100_000):
        achieved, kafka, feed, direct = latency(bench, bootstrap, rate, seconds)
        label = f"{rate // 1000}k events/s"
        lines.append(
            f"at {label} (achieved {achieved:,.0f}): alert on Kafka p50 {kafka[0] * 1000:.1f} ms, "
            f"p99 {kafka[1] * 1000:.1f} ms; on the live feed p50 {feed[0] * 1000:.1f} ms, "
            f"p99 {feed[1] * 1000:.1f} ms; the marker itself read directly p50 {direct[0] * 1000:.1f} ms, "
            f"p99 {direct[1] * 1000:.1f} ms"
        )
        target = 0.1 if rate == 10_000 else None
        measurements += [
            Measurement(NAME, f"event to Kafka alert p50 at {label}", "s", kafka[0], "broker alone (marker read back)", direct[0]),
            Measurement(NAME, f"event to Kafka alert p99 at {label}", "s", kafka[1], "broker alone (marker read back)", direct[1],
                        target_absolute=target),
            Measurement(NAME, f"event to live feed p99 at {label}", "s", feed[1], "broker alone (marker read back)", direct[1],
                        target_absolute=target),
        ]
    visitors = 1_000_000
    events = 2 * visitors
    p = producer(bootstrap)
    for i in range(events):
        while True:
            try:
                p.produce(STATE_INPUT, key=str(i % 1000), value=event(i, i % visitors))
                break
            except BufferError:
                p.poll(0.05)
    p.flush(120)
    fjord_seconds, keys, grown_mb = state_rate(bench, bootstrap, events)
    # The same fetch wait as the rule's consumer (fjord's default for rules).
    peer_seconds = consume_rate(bootstrap, events, STATE_INPUT, FETCH_WAIT_MS)
    per_million_keys = grown_mb / keys * 1e6 if keys else float("nan")
    lines.append(
        f"count per visitor over {keys:,.0f} keys: {1e6 / fjord_seconds:,.0f} events/s (bare consumer "
        f"{1e6 / peer_seconds:,.0f} events/s), sidecar memory +{grown_mb:,.0f} MB "
        f"({per_million_keys:,.0f} MB per 1M keys)"
    )
    print("bench: alerts: " + "; ".join(lines), flush=True)
    measurements += [
        Measurement(NAME, "s per 1M events, count per key over 1M keys", "s", fjord_seconds,
                    "bare consumer (read only)", peer_seconds),
        Measurement(NAME, "sidecar memory for 1M keys of state", "MB", per_million_keys, "-", None),
    ]
    return measurements
