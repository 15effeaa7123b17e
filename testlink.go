package kavari

import (
	"context"
	"errors"

	"github.com/kavari-go/kavari/internal/testlink"
	"github.com/kavari-go/kavari/internal/transport"
)

// What package kavaritest reaches through internal/testlink: a client on a
// given transport, told when each consumed record is finished; the
// capabilities of the transport a Config selects; the topics EnsureTopics
// creates; the record
// a message would be published as, unvalidated; and decoding with a
// client's codecs. None of it is API.
func init() {
	testlink.NewClient = func(cfg any, tr transport.Adapter, finished func(*transport.Record)) (any, error) {
		k, err := newWith(cfg.(Config), tr)
		if err != nil || finished == nil {
			return k, err
		}
		if k.hooks == nil {
			k.hooks = &hooks{}
			k.pub.hooks = k.hooks
		}
		k.hooks.finished = append(k.hooks.finished, finished)
		return k, nil
	}
	testlink.ObserveBatches = func(client any, attempt func(*transport.Record)) {
		k := client.(*Client)
		if k.hooks == nil {
			k.hooks = &hooks{}
			k.pub.hooks = k.hooks
		}
		k.hooks.batchAttempt = append(k.hooks.batchAttempt, attempt)
	}
	testlink.Capabilities = func(cfg any) (transport.Capabilities, error) {
		c := cfg.(Config)
		tr, err := c.adapter()
		if err != nil {
			return transport.Capabilities{}, err
		}
		return tr.Capabilities(), nil
	}
	testlink.Topics = func(client any) ([]string, int, error) {
		k := client.(*Client)
		names, err := k.registeredTopics()
		return names, k.cfg.Topics.Partitions, err
	}
	testlink.Encode = func(client any, ctx context.Context, msg any) (transport.Record, error) {
		e := *client.(*Client).pub.enc
		e.noValidate = true
		return e.encode(ctx, msg)
	}
	testlink.Decode = func(client any, value []byte, msg any) (string, error) {
		info, _, err := messageValue(msg)
		if err != nil {
			return "", err
		}
		e := newEncoder("", 0, nil)
		if k, ok := client.(*Client); ok && k != nil {
			e = k.pub.enc
		}
		if value == nil {
			return info.name, errors.New("kavari: the record has no value")
		}
		return info.name, e.codecOf(info).unmarshal(value, msg)
	}
}

// observeBatchRecord tells the observers of internal/testlink that a batch
// handler's attempt holds rec.
func (h *hooks) observeBatchRecord(rec *transport.Record) {
	if h == nil {
		return
	}
	for _, f := range h.batchAttempt {
		f(rec)
	}
}

// onFinished tells the observers of internal/testlink that the consumer
// finished rec.
func (h *hooks) onFinished(rec *transport.Record) {
	if h == nil {
		return
	}
	for _, f := range h.finished {
		f(rec)
	}
}
