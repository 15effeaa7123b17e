#!/usr/bin/env python3
"""Consume InteropMessage records through Python kavari's consumer loop.

Registers a handler with @kafka_message_handler(message_cls=InteropMessage), installs it via
KafkaManager.set_consumer_provider and runs start_consumer_loop().

stdout (JSON lines):
  {"id": "...", "seq": 0, "payload": "..."}    per handled message
  {"defect": "<code>", ...}                     when kavari drops/crashes instead of handling
  {"handled": N, "seconds": S, ...}             final summary (N counts only ids with --prefix, if given)
Exit status: 0 iff --count messages were handled; 2 if a defect stopped it early; 1 on timeout.

Python kavari 0.2.2.1 never routes records because confluent-kafka hands header values
over as bytes (defect "msg_type_header_is_bytes"). --workaround-bytes-header decodes the
header value before kavari's registry lookup so the rest of kavari's path can be exercised.
"""
import sys
import threading

from interop_common import (DefectDetector, base_parser, create_manager, decode_bytes_msg_type_workaround,
                            emit, make_logger, now, register_handler, start_consumer_loop_quietly, stop_manager)


def main() -> int:
    p = base_parser(__doc__)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds")
    p.add_argument("--workaround-bytes-header", action="store_true",
                   help="decode the msg_type header bytes before kavari's lookup (see module doc)")
    p.add_argument("--keep-going", action="store_true",
                   help="do not stop at the first defect; wait for --count or --timeout")
    p.add_argument("--quiet", action="store_true", help="do not print one line per message")
    p.add_argument("--prefix", default="",
                   help="count (and print) only messages whose id starts with this; others on the topic "
                        "(earlier runs) are handled and ignored")
    a = p.parse_args()

    logger, rec = make_logger(a.log_level)
    handled = 0
    ids = set()
    done = threading.Event()
    lock = threading.Lock()

    def on_message(payload) -> None:
        nonlocal handled
        if a.prefix and not str(payload.id).startswith(a.prefix):
            return
        with lock:
            handled += 1
            ids.add(payload.id)
            if not a.quiet:
                emit({"id": payload.id, "seq": payload.seq, "payload": payload.payload})
            if handled >= a.count:
                done.set()

    handler_cls = register_handler(a.topic, on_message)
    mgr = create_manager(a.brokers, a.group, logger)
    handler = handler_cls()
    mgr.set_consumer_provider(lambda cls: handler if cls is handler_cls else None)
    if a.workaround_bytes_header:
        decode_bytes_msg_type_workaround(mgr)
    detector = DefectDetector(mgr, rec)

    t0 = now()
    start_consumer_loop_quietly(mgr)
    thread = mgr.kafka_msg_consumer.threadHandle
    deadline = t0 + a.timeout
    stopped_by_defect = False
    while not done.is_set():
        left = deadline - now()
        if left <= 0:
            break
        if not thread.is_alive():
            detector.add("consumer_thread_died", where="kavari/kafka_consumer_manager.py run()")
            stopped_by_defect = True
            break
        if detector.defects and not a.keep_going:
            stopped_by_defect = True
            break
        done.wait(min(0.2, left))
    seconds = now() - t0
    stop_manager(mgr, started=True)
    summary = {"handled": handled, "seconds": round(seconds, 3), "unique_ids": len(ids),
               "expected": a.count, "workaround_bytes_header": a.workaround_bytes_header}
    if detector.defects:
        summary["defects"] = [d["defect"] for d in detector.defects]
    if not done.is_set() and not stopped_by_defect:
        summary["timeout"] = True
    emit(summary)
    if handled >= a.count:
        return 0
    return 2 if stopped_by_defect else 1


if __name__ == "__main__":
    sys.exit(main())
