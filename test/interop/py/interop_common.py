"""Shared helpers for the Python kavari 0.2.2.1 interop scripts.

The message class lives in this importable module on purpose: kavari's registry
re-imports message classes by ``importlib.import_module(cls.__module__)`` +
``getattr(module, cls.__name__)`` (kavari/message_type_registry.py:14-15,30-36).

Wire format produced for InteropMessage (see PYTHON_KAVARI.md):
  key     = id (UTF-8)
  value   = json.dumps(payload.__dict__) -> {"id": "...", "seq": 1, "payload": "..."}
  headers = [("msg_type", b"InteropMessage")]
"""

import argparse
import contextlib
import json
import logging
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import kavari
from kavari import FibonacciRetryPolicy, KafkaMessage, KafkaMessageConsumer, kafka_message_handler


@dataclass
class InteropPayload:
    id: str
    seq: int
    payload: str


class InteropMessage(KafkaMessage):
    """kavari message: fields id/seq/payload carried in the ``payload`` dataclass."""

    topic = "interop"  # overwritten from the CLI before any registration / publish
    payload: InteropPayload

    def __init__(self, id: str, seq: int, payload: str):
        super().__init__()
        self.payload = InteropPayload(id=id, seq=seq, payload=payload)

    def get_partition_key(self) -> str:
        return self.payload.id


def emit(obj: Dict[str, Any]) -> None:
    """One machine-readable JSON line on stdout."""
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--brokers", required=True, help="bootstrap servers, host:port")
    p.add_argument("--topic", required=True)
    p.add_argument("--log-level", default="WARNING", help="kavari logger level (logs go to stderr)")
    return p


class RecordingHandler(logging.Handler):
    """Keeps kavari's log records so the scripts can turn known failure modes into JSON."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: List[logging.LogRecord] = []
        self._records_lock = threading.Lock()  # NB: logging.Handler already owns self.lock
        self.listeners: List[Callable[[logging.LogRecord], None]] = []

    def emit(self, record: logging.LogRecord) -> None:
        with self._records_lock:
            self.records.append(record)
        for fn in self.listeners:
            fn(record)


def make_logger(level: str, name: str = "kavari-interop") -> "tuple[logging.Logger, RecordingHandler]":
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setLevel(getattr(logging, level.upper(), logging.WARNING))
    stderr.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(stderr)
    rec = RecordingHandler()
    rec.setLevel(logging.WARNING)  # kavari logs one INFO per publish; keep only problems
    logger.addHandler(rec)
    return logger, rec


_registered_topics: Dict[str, type] = {}


def register_handler(topic: str, on_message: Callable[[InteropPayload], None]) -> type:
    """Register a KafkaMessageConsumer for InteropMessage with kavari's decorator.

    Must run before kavari_create(): the consumer subscribes to the registry's topics
    at construction (kavari/kafka_consumer_manager.py:23,25) and kavari_create raises
    KafkaException(_INVALID_ARG) when that list is empty.
    """
    InteropMessage.topic = topic

    @kafka_message_handler(message_cls=InteropMessage)
    class InteropHandler(KafkaMessageConsumer):
        def handle(self, message_data: InteropPayload) -> None:
            on_message(message_data)

    _registered_topics[topic] = InteropHandler
    return InteropHandler


def create_manager(brokers: str, group: str, logger: logging.Logger, max_attempts: int = 3,
                   acks: str = "1") -> kavari.KafkaManager:
    return kavari.kavari_create(
        bootstrap_servers=brokers,
        group_id=group,
        delivery_retry_policy=FibonacciRetryPolicy(max_attempts=max_attempts),
        publishing_retry_policy=FibonacciRetryPolicy(max_attempts=max_attempts),
        logger=logger,
        auto_commit=False,
        auto_offset_reset="earliest",
        acks=acks,
    )


def start_consumer_loop_quietly(manager: kavari.KafkaManager) -> None:
    """start_consumer_loop() print()s to stdout (kafka_consumer_manager.py:39); keep stdout JSON-only."""
    with contextlib.redirect_stdout(sys.stderr):
        manager.start_consumer_loop()


def decode_bytes_msg_type_workaround(manager: kavari.KafkaManager) -> None:
    """Opt-in workaround for defect `msg_type_header_is_bytes`.

    confluent-kafka returns header values as bytes, so kavari looks up b"InteropMessage"
    in a registry keyed by str and skips every record. Decoding the header value restores
    the intended routing; everything else stays kavari's own code path.
    """
    kcm = manager.kafka_msg_consumer
    original = kcm.get_header_value

    def get_header_value(headers, key):
        v = original(headers, key)
        return v.decode("utf-8") if isinstance(v, (bytes, bytearray)) else v

    kcm.get_header_value = get_header_value


class DefectDetector:
    """Observes (without changing) kavari's consumer to name the defect that blocks receiving."""

    def __init__(self, manager: kavari.KafkaManager, rec: RecordingHandler):
        self.defects: List[Dict[str, Any]] = []
        self._seen = set()
        self.lock = threading.Lock()
        self.event = threading.Event()
        self.last_header: Any = None
        kcm = manager.kafka_msg_consumer
        inner = kcm.get_header_value  # may already be the workaround

        def observed(headers, key):
            self.last_header = ("<no headers: None>" if headers is None else None)
            v = inner(headers, key)
            self.last_header = v
            return v

        kcm.get_header_value = observed
        rec.listeners.append(self._on_log)
        prev_hook = threading.excepthook

        def hook(args):
            if args.thread is not None and args.thread.name == "Kafka consumer thread":
                self.add("consumer_thread_died", exception=f"{args.exc_type.__name__}: {args.exc_value}",
                         last_msg_type_header=repr(self.last_header),
                         where="kavari/kafka_consumer_manager.py run() (uncaught exception ends the thread)")
            prev_hook(args)

        threading.excepthook = hook

    def add(self, code: str, **detail: Any) -> None:
        with self.lock:
            if code in self._seen:
                return
            self._seen.add(code)
            d = {"defect": code}
            d.update(detail)
            self.defects.append(d)
        emit(d)
        self.event.set()

    def _on_log(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg.startswith("Missing registered message type"):
            hv = self.last_header
            if isinstance(hv, (bytes, bytearray)):
                self.add("msg_type_header_is_bytes",
                         header_value=repr(hv),
                         detail="confluent-kafka returns header values as bytes; kavari looks the bytes up in a "
                                "registry keyed by the str class name, misses, logs a warning, commits and skips "
                                "the record (never calls the handler)",
                         where="kavari/kafka_consumer_manager.py:28-32,56,64-69; kavari/message_type_registry.py:43,51")
            else:
                self.add("unknown_msg_type", header_value=repr(hv),
                         where="kavari/kafka_consumer_manager.py:64-69")
        elif msg.startswith("Missing message type"):
            self.add("missing_msg_type_header", where="kavari/kafka_consumer_manager.py:57-61")
        elif msg.startswith("Kafka: Unable to deserialize"):
            self.add("deserialize_failed", detail=msg[:300], where="kavari/kafka_consumer_manager.py:91-95")
        elif msg.startswith("Kafka: Failed to process message"):
            self.add("handler_failed", detail=msg[:300], where="kavari/kafka_consumer_manager.py:105-107")


def stop_manager(manager: kavari.KafkaManager, started: bool) -> None:
    """stop_consumer_loop() never closes the confluent Consumer (no LeaveGroup); close it here.

    close() waits for kavari's per-message async commits still in flight. After a burst of
    ~10k records on a Kafka 4.1 broker with the default group.coordinator.append.linger.ms
    they take ~60 s (socket.timeout.ms) to time out; skipping close() does not help because
    librdkafka's destroy at interpreter exit waits the same. With
    group.coordinator.append.linger.ms=0 on the broker it takes ~3 s.
    """
    if started:
        manager.stop_consumer_loop()
    else:
        manager.kafka_client.stop()
    try:
        manager.kafka_msg_consumer.consumer.close()
    except Exception:  # noqa: BLE001 - best effort
        pass


def now() -> float:
    return time.monotonic()
