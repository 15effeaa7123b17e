package kavari

import "context"

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
func (k *Client) PublishEncoded(ctx context.Context, msgs ...Encoded) ([]Receipt, error) {
	return k.pub.publishEncoded(ctx, msgs)
}
