package outbox_test

import (
	"time"

	"github.com/kavari-go/kavari/test/fault/ledger"
)

// bookLedger enters an outbox test's outcome in led, for the reliability
// report: every committed row (ids) as sent and acknowledged (committed:
// the outbox owes it to the topic), every record of the topic as a
// delivery. A record's time for the order check is its offset (a key
// lives in one partition), not the broker's millisecond timestamp.
func bookLedger(led *ledger.Ledger, ids map[string]bool, recs []published) {
	first := map[string]published{}
	for _, r := range recs {
		if _, ok := first[r.id]; !ok {
			first[r.id] = r
		}
	}
	for id := range ids {
		r := first[id]
		led.Sent(id, r.key, r.seq)
		led.Acked(id)
	}
	for _, r := range recs {
		led.Handled(ledger.Handle{ID: r.id, Key: r.key, Seq: r.seq, At: time.Unix(0, int64(r.partition)<<40|r.offset),
			Proc: "topic", Topic: r.msg.Topic, Partition: r.partition, Offset: r.offset})
	}
}
