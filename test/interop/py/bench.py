#!/usr/bin/env python3
"""Throughput benchmark for Python kavari 0.2.2.1 (side-by-side with the Go port).

  bench.py --brokers H:P --topic T publish --count N --size BYTES [--impl kavari|raw] [--acks 0|1|all]
  bench.py --brokers H:P --topic T consume --count N [--group G] [--impl kavari|raw] [--timeout S]

Records are InteropMessage records exactly as kavari writes them: key = id,
header msg_type=InteropMessage, value = {"id": "<T>-<seq>", "seq": <seq>, "payload": "<BYTES x 'x'>"}
(the `payload` field is BYTES long; value_bytes in the summary is the real record value size).

--impl kavari  goes through KafkaManager.publish_message / the kavari consumer loop
               (consume applies the bytes-header workaround, otherwise kavari handles nothing;
               --no-workaround shows the defect instead).
--impl raw     plain confluent-kafka with kavari's producer/consumer config, same wire format:
               a baseline for what librdkafka itself does on this machine.

Prints one JSON summary line on stdout, e.g.
  {"bench":"publish","impl":"kavari","count":10000,"size":100,"value_bytes":...,"errors":0,
   "seconds":...,"msgs_per_sec":...,"mib_per_sec":...}
"""
import json
import os
import socket
import sys
import threading
import uuid

import confluent_kafka
import dacite

from interop_common import (DefectDetector, InteropMessage, InteropPayload, base_parser, create_manager,
                            decode_bytes_msg_type_workaround, emit, make_logger, now, register_handler,
                            start_consumer_loop_quietly, stop_manager)


def rates(count: int, total_bytes: int, seconds: float) -> dict:
    s = max(seconds, 1e-9)
    return {"seconds": round(seconds, 3), "msgs_per_sec": round(count / s, 1),
            "mib_per_sec": round(total_bytes / s / (1 << 20), 3)}


def bench_publish(a) -> int:
    body = "x" * a.size
    value_bytes = len(json.dumps({"id": f"{a.topic}-0", "seq": 0, "payload": body}))
    delivered = 0
    errors = 0
    total = 0
    if a.impl == "kavari":
        logger, _ = make_logger(a.log_level)
        register_handler(a.topic, lambda p: None)  # kavari_create fails with no registered topic
        mgr = create_manager(a.brokers, f"bench-pub-{uuid.uuid4().hex[:8]}", logger, acks=a.acks)

        def cb(msg, err):
            nonlocal delivered, errors, total
            if err is None and msg is not None and msg.error() is None:
                delivered += 1
                total += len(msg.value())
            else:
                errors += 1

        t0 = now()
        for i in range(a.count):
            try:
                mgr.publish_message(InteropMessage(f"{a.topic}-{i}", i, body), cb)
            except Exception:  # noqa: BLE001
                errors += 1
        stop_manager(mgr, started=False)
        seconds = now() - t0
    else:
        p = confluent_kafka.Producer({"bootstrap.servers": a.brokers, "client.id": socket.gethostname(),
                                      "acks": a.acks, "message.timeout.ms": 30000,
                                      "queue.buffering.max.messages": 100000})

        def cb(err, msg):
            nonlocal delivered, errors, total
            if err is None:
                delivered += 1
                total += len(msg.value())
            else:
                errors += 1

        t0 = now()
        for i in range(a.count):
            m = InteropMessage(f"{a.topic}-{i}", i, body)
            while True:
                try:
                    p.produce(a.topic, value=m.to_json(), key=m.get_partition_key(),
                              headers={"msg_type": "InteropMessage"}, on_delivery=cb)
                    break
                except BufferError:
                    p.poll(0.05)
            p.poll(0)
        p.flush(60)
        seconds = now() - t0
    out = {"bench": "publish", "impl": a.impl, "count": delivered, "size": a.size, "value_bytes": value_bytes,
           "errors": errors}
    out.update(rates(delivered, total, seconds))
    emit(out)
    return 0 if delivered == a.count else 1


def run_with_timeout(fn, timeout: float) -> "tuple[float, bool]":
    """Run fn in a daemon thread; return (seconds waited, still running)."""
    t0 = now()
    t = threading.Thread(target=fn, daemon=True, name="bench-stop")
    t.start()
    t.join(timeout)
    return now() - t0, t.is_alive()


def bench_consume(a) -> int:
    group = a.group or f"bench-con-{uuid.uuid4().hex[:8]}"
    count = 0
    total = 0
    first = None
    done = threading.Event()
    out = {"bench": "consume", "impl": a.impl, "group": group}
    if a.impl == "kavari":
        logger, rec = make_logger(a.log_level)
        lock = threading.Lock()

        def on_message(p: InteropPayload) -> None:
            nonlocal count, total, first
            with lock:
                if first is None:
                    first = now()
                count += 1
                total += len(json.dumps(p.__dict__))  # same bytes as the record value kavari wrote
                if count >= a.count:
                    done.set()

        handler_cls = register_handler(a.topic, on_message)
        mgr = create_manager(a.brokers, group, logger)
        h = handler_cls()
        mgr.set_consumer_provider(lambda cls: h)
        if not a.no_workaround:
            decode_bytes_msg_type_workaround(mgr)
        out["workaround_bytes_header"] = not a.no_workaround
        det = DefectDetector(mgr, rec)
        t0 = now()
        start_consumer_loop_quietly(mgr)
        deadline = t0 + a.timeout
        while not done.is_set() and now() < deadline and not det.defects:
            done.wait(0.2)
        t_end = now()
        # kavari commits every record asynchronously (kafka_consumer_manager.py:104); at
        # tens of thousands of records per second the commits pile up and the consumer's
        # close waits for each to time out (librdkafka REQTMOUT, 60 s apiece). Bound it.
        stop_s, stuck = run_with_timeout(lambda: stop_manager(mgr, started=True), a.stop_timeout)
        out["stop_seconds"] = round(stop_s, 3)
        if stuck:
            out["stop_timed_out"] = True
        if det.defects:
            out["defects"] = [d["defect"] for d in det.defects]
    else:
        c = confluent_kafka.Consumer({"bootstrap.servers": a.brokers, "group.id": group,
                                      "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        c.subscribe([a.topic])
        t0 = now()
        deadline = t0 + a.timeout
        while count < a.count and now() < deadline:
            for m in c.consume(num_messages=1000, timeout=1.0):
                if m.error():
                    continue
                hv = dict(m.headers() or []).get("msg_type")
                if hv != b"InteropMessage":
                    continue
                p = dacite.from_dict(InteropPayload, json.loads(m.value()))
                if first is None:
                    first = now()
                count += 1
                total += len(m.value())
            if count >= a.count:
                break
        t_end = now()
        try:
            c.commit(asynchronous=False)
        except Exception:  # noqa: BLE001
            pass
        c.close()
    out.update({"count": count, "value_bytes_total": total})
    out.update(rates(count, total, t_end - t0))
    if first is not None:
        steady = rates(count, total, t_end - first)
        out.update({"seconds_after_first": steady["seconds"], "msgs_per_sec_after_first": steady["msgs_per_sec"]})
    if count < a.count:
        out["timeout"] = True
    emit(out)
    return 0 if count >= a.count else 1


def main() -> int:
    p = base_parser(__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("publish")
    pp.add_argument("--count", type=int, required=True)
    pp.add_argument("--size", type=int, default=100, help="bytes in the payload field")
    pp.add_argument("--impl", choices=["kavari", "raw"], default="kavari")
    pp.add_argument("--acks", choices=["0", "1", "all"], default="1",
                    help="producer acks (kavari_create's default is 1; the Go benchmark passes all)")
    pc = sub.add_parser("consume")
    pc.add_argument("--count", type=int, required=True)
    pc.add_argument("--group", default="")
    pc.add_argument("--impl", choices=["kavari", "raw"], default="kavari")
    pc.add_argument("--timeout", type=float, default=300.0)
    pc.add_argument("--no-workaround", action="store_true")
    pc.add_argument("--stop-timeout", type=float, default=20.0,
                    help="seconds to wait for kavari's consumer to stop; then exit without it (reported)")
    a = p.parse_args()
    return bench_publish(a) if a.cmd == "publish" else bench_consume(a)


if __name__ == "__main__":
    rc = main()
    sys.stdout.flush()
    # A consumer stop that timed out leaves librdkafka threads waiting on commits that
    # will never be answered in time; interpreter shutdown would wait for them too.
    os._exit(rc)
