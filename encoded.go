package kavari

import (
	"context"

	"github.com/kavari-go/kavari/internal/transport"
)

// Encoded is a message validated and encoded as Publish would send it: its
// topic (after Config.Topics.Name), partition key, value (the type's codec)
// and headers (msg_type, ce_id, ce_time, content-type, ..., and those of
// WithHeaders). Encode returns it; PublishEncoded sends it later, possibly
// from another process, with the same ce_id. A store that keeps it (such as
// the transactional outbox, module github.com/kavari-go/kavari/outbox) keeps
// these four fields.
type Encoded struct {
	Topic   string
	Key     []byte // nil: no key
	Value   []byte
	Headers []Header

	// pending is the record of a PublishEncoded of this value whose
	// outcome is unknown and that the producer may still write (see
	// PublishEncoded); nil otherwise.
	pending *transport.Record
}

// ID returns the ce_id header of e ("" when it has none).
func (e *Encoded) ID() string {
	for _, h := range e.Headers {
		if h.Key == HeaderID {
			return string(h.Value)
		}
	}
	return ""
}

// Encode validates and encodes msg exactly as Publish would, without sending
// it: an invalid message returns an error matching ErrInvalid, one over
// Config.Publish.MaxMessageBytes ErrTooLarge. HookPublishBefore hooks are
// not called (a message that is never sent would leave them without their
// HookPublishAfter call); PublishEncoded calls the HookPublishAfter hooks.
func (k *Client) Encode(ctx context.Context, msg Msg) (Encoded, error) {
	return k.pub.encodeOnly(ctx, msg)
}

// PublishEncoded sends messages returned by Encode as PublishBatch sends
// messages: through the Client's producer and partitioner, waiting for all
// in-sync replicas, retrying each failed one with Config.Publish.Retry. It
// returns one receipt per message, in order (Receipt.Message is nil), and
// nil or a *BatchError listing the messages not published (a message over
// the broker's limit matches ErrTooLarge, a topic the brokers do not know
// ErrUnknownTopic). The messages are not validated again.
//
// A message whose publish failed with its outcome unknown
// (PublishError.MayHaveBeenWritten) may still be written by the producer:
// on FranzGo the idempotent producer keeps a record it sent until the
// broker answers, however long Kafka is down, and the Client's retry
// policy gives up long before. PublishEncoded then keeps that write in the
// Encoded value itself (the element of the slice passed as msgs...), and
// publishing the same value again waits for that write instead of sending
// a second copy, so the message is stored once. An Encoded built anew
// (say, read again from a store) knows nothing of an earlier write: the
// message may then be stored twice, with the same ce_id. A value must not
// be published by two calls at once.
func (k *Client) PublishEncoded(ctx context.Context, msgs ...Encoded) ([]Receipt, error) {
	return k.pub.publishEncoded(ctx, msgs)
}
