package kavari

import "github.com/kavari-go/kavari/internal/transport"

// Receipt says what became of one published message. Publish and
// PublishBatch return one per message, and a PublishAsync callback receives
// one. When the message was acknowledged, Partition and Offset say where all
// in-sync replicas stored it (after retries, the write that was stored);
// otherwise they are -1. A Publish or PublishBatch of an exactly-once
// handler (Consume.ExactlyOnce, with its context) returns once the message
// is in the window's transaction, before it is acknowledged: its Partition
// and Offset are -1 (a PublishAsync callback gets them, at the ack).
type Receipt struct {
	Message   Msg    // the message published
	Topic     string // the topic it was sent to; "" when it was refused before sending (invalid)
	Partition int    // -1 unless acknowledged
	Offset    int64  // -1 unless acknowledged
	ID        string // its ce_id header, the same on every retry; "" when refused before sending
}

// receiptOf is msg's receipt for rec: stored when ok.
func receiptOf(msg Msg, rec *transport.Record, ok bool) Receipt {
	r := Receipt{Message: msg, Partition: -1, Offset: -1}
	if rec == nil {
		return r
	}
	r.Topic = rec.Topic
	if id, found := headerValue(rec.Headers, HeaderID); found {
		r.ID = string(id)
	}
	if ok {
		r.Partition, r.Offset = int(rec.Partition), rec.Offset
	}
	return r
}
