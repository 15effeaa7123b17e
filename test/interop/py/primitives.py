#!/usr/bin/env python3
"""Python kavari 0.2.2.1 messages whose payload is a primitive (str, int, float, bool, bytes).

The value on the wire is KafkaMessage.to_json() = f"{payload}" (kavari/kafka_message.py:30-36),
read back by KafkaMessageDeserializer.deserialize (kavari/kafka_message_deserializer.py:10-21):
int/float/bool/bytes -> payload_type(raw), str -> raw.decode("utf-8").

Values travel on the command line as JSON specs [{"type": "int", "text": "42", "key": "k"}, ...]:
str: the text itself; int/float: int(text)/float(text); bool: text == "True"; bytes: bytes.fromhex(text).

Subcommands (stdout: JSON lines):
  encode  --spec S                 {"type", "key", "value_hex"}: to_json() of each message, UTF-8, as confluent-kafka sends it
  decode  --raw R                  R = [{"type", "value_hex"}]; {"type", "repr", "pytype"} from kavari's deserializer
  publish --brokers B --topic T --spec S
                                   publish_message() each; {"delivered", "type", "key", "value_hex", "partition", "offset"}
  consume --brokers B --topic T --group G --expect E [--workaround-bytes-header] [--timeout S]
                                   E = [{"type", "repr"}]; prints {"type", "repr", "pytype"} per handled
                                   payload and {"handled", "missing", ...} at the end; exit 0 iff all of E were seen
"""
import json
import sys
import threading

from kavari import KafkaMessage, KafkaMessageConsumer, kafka_message_handler
from kavari.kafka_message_deserializer import KafkaMessageDeserializer

from interop_common import (DefectDetector, base_parser, create_manager, decode_bytes_msg_type_workaround, emit,
                            make_logger, now, start_consumer_loop_quietly, stop_manager)


class _Keyed(KafkaMessage):
    def __init__(self, payload, key: str = "1"):
        super().__init__()
        self.payload = payload
        self._key = key

    def get_partition_key(self) -> str:
        return self._key


# Class-level `payload: T` annotations: kavari reads self.__annotations__["payload"].
class StrMessage(_Keyed):
    topic = "primitives"
    payload: str


class IntMessage(_Keyed):
    topic = "primitives"
    payload: int


class FloatMessage(_Keyed):
    topic = "primitives"
    payload: float


class BoolMessage(_Keyed):
    topic = "primitives"
    payload: bool


class BytesMessage(_Keyed):
    topic = "primitives"
    payload: bytes


CLASSES = {"str": StrMessage, "int": IntMessage, "float": FloatMessage, "bool": BoolMessage, "bytes": BytesMessage}
NAMES = {cls.__name__: t for t, cls in CLASSES.items()}


def value_of(t: str, text: str):
    return {"str": str, "int": int, "float": float, "bool": lambda s: s == "True", "bytes": bytes.fromhex}[t](text)


def message_of(spec):
    return CLASSES[spec["type"]](value_of(spec["type"], spec["text"]), spec.get("key", "1"))


def cmd_encode(a):
    for spec in json.loads(a.spec):
        m = message_of(spec)
        emit({"type": spec["type"], "key": spec.get("key", "1"), "value_hex": m.to_json().encode("utf-8").hex()})
    return 0


def cmd_decode(a):
    d = KafkaMessageDeserializer()
    for r in json.loads(a.raw):
        v = d.deserialize(bytes.fromhex(r["value_hex"]), CLASSES[r["type"]])
        emit({"type": r["type"], "repr": repr(v), "pytype": type(v).__name__})
    return 0


def register_handlers(topic, on_payload):
    for cls in CLASSES.values():
        cls.topic = topic
    handlers = []
    for t, cls in CLASSES.items():
        ann = cls.__annotations__["payload"]

        def handle(self, message_data, _t=t):
            on_payload(_t, message_data)

        handle.__annotations__ = {"message_data": ann, "return": None}
        h = type(f"{cls.__name__}Handler", (KafkaMessageConsumer,), {"handle": handle})
        handlers.append(kafka_message_handler(message_cls=cls)(h))
    return handlers


def cmd_publish(a):
    logger, _ = make_logger(a.log_level)
    register_handlers(a.topic, lambda t, p: None)  # kavari_create needs a subscription
    mgr = create_manager(a.brokers, "primitives-publisher", logger)
    errors = 0
    for spec in json.loads(a.spec):
        m = message_of(spec)
        value_hex = m.to_json().encode("utf-8").hex()

        def on_complete(msg, err, spec=spec, value_hex=value_hex):
            nonlocal errors
            if err is None and msg is not None and msg.error() is None:
                emit({"delivered": True, "type": spec["type"], "key": spec.get("key", "1"), "value_hex": value_hex,
                      "partition": msg.partition(), "offset": msg.offset()})
            else:
                errors += 1
                emit({"delivered": False, "type": spec["type"], "error": str(err)})

        mgr.publish_message(m, on_complete)
    stop_manager(mgr, started=False)
    emit({"published": len(json.loads(a.spec)) - errors, "errors": errors})
    return 0 if errors == 0 else 1


def cmd_consume(a):
    logger, rec = make_logger(a.log_level)
    expect = {(e["type"], e["repr"]) for e in json.loads(a.expect)}
    seen = set()
    done = threading.Event()
    lock = threading.Lock()

    def on_payload(t, payload):
        with lock:
            key = (t, repr(payload))
            if key in expect and key not in seen:
                seen.add(key)
                emit({"type": t, "repr": repr(payload), "pytype": type(payload).__name__})
            if expect <= seen:
                done.set()

    handlers = register_handlers(a.topic, on_payload)
    mgr = create_manager(a.brokers, a.group, logger)
    instances = {h: h() for h in handlers}
    mgr.set_consumer_provider(lambda cls: instances.get(cls))
    if a.workaround_bytes_header:
        decode_bytes_msg_type_workaround(mgr)
    detector = DefectDetector(mgr, rec)
    t0 = now()
    start_consumer_loop_quietly(mgr)
    thread = mgr.kafka_msg_consumer.threadHandle
    stopped_by_defect = False
    while not done.is_set() and now() - t0 < a.timeout:
        if not thread.is_alive():
            detector.add("consumer_thread_died", where="kavari/kafka_consumer_manager.py run()")
            stopped_by_defect = True
            break
        if detector.defects and not a.workaround_bytes_header:
            stopped_by_defect = True
            break
        done.wait(0.2)
    stop_manager(mgr, started=True)
    summary = {"handled": len(seen), "missing": sorted([list(k) for k in expect - seen]),
               "seconds": round(now() - t0, 3), "workaround_bytes_header": a.workaround_bytes_header}
    if detector.defects:
        summary["defects"] = [d["defect"] for d in detector.defects]
    emit(summary)
    if done.is_set():
        return 0
    return 2 if stopped_by_defect else 1


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("encode", "decode", "publish", "consume"):
        print(__doc__, file=sys.stderr)
        return 64
    cmd = sys.argv.pop(1)
    if cmd in ("encode", "decode"):
        import argparse
        p = argparse.ArgumentParser()
        p.add_argument("--spec", default="[]")
        p.add_argument("--raw", default="[]")
    else:
        p = base_parser(__doc__)
        p.add_argument("--spec", default="[]")
        p.add_argument("--group", default="")
        p.add_argument("--expect", default="[]")
        p.add_argument("--timeout", type=float, default=60.0)
        p.add_argument("--workaround-bytes-header", action="store_true")
    a = p.parse_args()
    return {"encode": cmd_encode, "decode": cmd_decode, "publish": cmd_publish, "consume": cmd_consume}[cmd](a)


if __name__ == "__main__":
    sys.exit(main())
