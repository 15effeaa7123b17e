#!/usr/bin/env python3
"""Publish N InteropMessage records through Python kavari's KafkaManager.publish_message.

stdout (JSON lines):
  {"delivered": true, "id": "P-0", "seq": 0, "partition": 0, "offset": 12}   per delivered message
  {"delivered": false, "id": ..., "error": "..."}                             per failed message
  {"published": N, "errors": E, "seconds": S}                                 final summary
Exit status 0 iff every message was delivered.
"""
import sys

from interop_common import (InteropMessage, base_parser, create_manager, emit, make_logger, now,
                            register_handler, stop_manager)


def main() -> int:
    p = base_parser(__doc__)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--prefix", required=True, help="ids are <prefix>-<seq>")
    p.add_argument("--size", type=int, default=0,
                   help="pad each payload string to at least this many bytes (default: payload-<seq>)")
    p.add_argument("--max-attempts", type=int, default=3, help="FibonacciRetryPolicy max_attempts")
    p.add_argument("--acks", default="1", choices=["0", "1", "all"])
    p.add_argument("--quiet", action="store_true", help="only print the summary line")
    a = p.parse_args()

    logger, _ = make_logger(a.log_level)
    # kavari_create() subscribes its consumer to the registered topics and raises
    # KafkaException(_INVALID_ARG) if there are none, so even a publisher must register one.
    register_handler(a.topic, lambda payload: None)
    mgr = create_manager(a.brokers, f"{a.prefix}-publisher", logger, a.max_attempts, a.acks)

    delivered = 0
    errors = 0
    pending = {}

    def on_complete(msg, err, key=None):
        nonlocal delivered, errors
        m = pending.get(key)
        if err is None and msg is not None and msg.error() is None:
            delivered += 1
            if not a.quiet:
                emit({"delivered": True, "id": m.payload.id, "seq": m.payload.seq,
                      "partition": msg.partition(), "offset": msg.offset()})
        else:
            errors += 1
            emit({"delivered": False, "id": m.payload.id, "seq": m.payload.seq, "error": str(err)})

    t0 = now()
    for i in range(a.count):
        body = f"payload-{i}"
        if a.size > len(body):
            body = body + "x" * (a.size - len(body))
        m = InteropMessage(id=f"{a.prefix}-{i}", seq=i, payload=body)
        pending[i] = m
        try:
            mgr.publish_message(m, lambda msg, err, k=i: on_complete(msg, err, k))
        except Exception as e:  # noqa: BLE001
            errors += 1
            emit({"delivered": False, "id": m.payload.id, "seq": i, "error": f"{type(e).__name__}: {e}"})
    stop_manager(mgr, started=False)  # flush(30)
    seconds = now() - t0
    emit({"published": delivered, "errors": errors, "seconds": round(seconds, 3)})
    return 0 if delivered == a.count and errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
