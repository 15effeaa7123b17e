package kavari

import (
	"context"
	"errors"

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
	rec, err := k.pub.enc.encode(ctx, msg)
	if err != nil {
		return Encoded{}, err
	}
	e := Encoded{Topic: rec.Topic, Key: rec.Key, Value: rec.Value, Headers: make([]Header, len(rec.Headers))}
	for i, h := range rec.Headers {
		e.Headers[i] = Header{Key: h.Key, Value: h.Value}
	}
	return e, nil
}

// PublishEncoded sends messages returned by Encode as PublishBatch sends
// messages: through the Client's producer and partitioner, waiting for all
// in-sync replicas, retrying each failed one with Config.Publish.Retry. It
// returns one receipt per message, in order (Receipt.Message is nil), and
// nil or a *BatchError listing the messages not published (a message over
// the broker's limit matches ErrTooLarge, a topic the brokers do not know
// ErrUnknownTopic). The messages are not validated again.
func (k *Client) PublishEncoded(ctx context.Context, msgs ...Encoded) ([]Receipt, error) {
	receipts := make([]Receipt, len(msgs))
	recs := make([]*transport.Record, len(msgs))
	for i := range msgs {
		m := &msgs[i]
		rec := &transport.Record{Topic: m.Topic, Key: m.Key, Value: m.Value, Headers: make([]transport.Header, len(m.Headers))}
		for j, h := range m.Headers {
			rec.Headers[j] = transport.Header{Key: h.Key, Value: h.Value}
		}
		recs[i] = rec
		receipts[i] = receiptOf(nil, rec, false)
	}
	if k.pub.isClosed() {
		be := &BatchError{}
		for i, rec := range recs {
			pe := publishErrorOf(rec, ErrClosed)
			pe.Index = i
			be.Failed = append(be.Failed, pe)
		}
		return receipts, be
	}
	if len(recs) == 0 {
		return receipts, nil
	}
	errs := k.pub.writeObserved(ctx, nil, recs)
	var be *BatchError
	for i, rec := range recs {
		var err error
		if errs != nil {
			err = errs[i]
		}
		if err == nil {
			receipts[i] = receiptOf(nil, rec, true)
			continue
		}
		if be == nil {
			be = &BatchError{}
		}
		var pe *PublishError
		if !errors.As(err, &pe) {
			pe = publishErrorOf(rec, err)
		}
		pe.Index = i
		be.Failed = append(be.Failed, pe)
	}
	if be != nil {
		return receipts, be
	}
	return receipts, nil
}
