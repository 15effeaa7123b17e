package kavari

import (
	"bytes"
	"context"
	"errors"

	"github.com/kavari-go/kavari/internal/transport"
)

// encodeOnly is Client.Encode: msg encoded and validated, no hook called.
func (p *publisher) encodeOnly(ctx context.Context, msg Msg) (Encoded, error) {
	rec, err := p.enc.encode(ctx, msg)
	if err != nil {
		return Encoded{}, err
	}
	e := Encoded{Topic: rec.Topic, Key: rec.Key, Value: rec.Value, Headers: make([]Header, len(rec.Headers))}
	for i, h := range rec.Headers {
		e.Headers[i] = Header{Key: h.Key, Value: h.Value}
	}
	return e, nil
}

// publishEncoded is Client.PublishEncoded.
func (p *publisher) publishEncoded(ctx context.Context, msgs []Encoded) ([]Receipt, error) {
	receipts := make([]Receipt, len(msgs))
	recs := make([]*transport.Record, len(msgs))
	// The new records and their headers, in one allocation each.
	var slab []transport.Record
	var hslab []transport.Header
	for i := range msgs {
		m := &msgs[i]
		rec := m.pending
		if rec == nil || !samePending(rec, m) {
			// A new message, or one changed since its earlier publish.
			if slab == nil {
				slab = make([]transport.Record, len(msgs)-i)
				n := 0
				for _, m := range msgs[i:] {
					n += len(m.Headers)
				}
				hslab = make([]transport.Header, n)
			}
			rec, slab = &slab[0], slab[1:]
			hs := hslab[:len(m.Headers):len(m.Headers)]
			hslab = hslab[len(m.Headers):]
			for j, h := range m.Headers {
				hs[j] = transport.Header{Key: h.Key, Value: h.Value}
			}
			*rec = transport.Record{Topic: m.Topic, Key: m.Key, Value: m.Value, Headers: hs}
		}
		m.pending = nil
		recs[i] = rec
		receipts[i] = receiptOf(nil, rec, false)
	}
	if p.isClosed() {
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
	errs := p.writeObserved(ctx, nil, recs)
	var be *BatchError
	for i, rec := range recs {
		var err error
		if errs != nil {
			err = errs[i]
		}
		if err == nil {
			receipts[i].Partition, receipts[i].Offset = int(rec.Partition), rec.Offset // receiptOf(nil, rec, true)
			continue
		}
		if rec.InFlight != nil {
			// The producer may still write it: a later publish of this
			// value waits for that write (see PublishEncoded).
			msgs[i].pending = rec
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

// samePending reports whether rec, the pending record of m, is still m's
// (the caller may have changed m since).
func samePending(rec *transport.Record, m *Encoded) bool {
	return rec.Topic == m.Topic && bytes.Equal(rec.Key, m.Key) && (rec.Key == nil) == (m.Key == nil) &&
		bytes.Equal(rec.Value, m.Value) && len(rec.Headers) == len(m.Headers)
}
