package kavaritest_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/transport"
	"github.com/kavari-go/kavari/internal/transport/transporttest"
	"github.com/kavari-go/kavari/kavaritest"
)

// The Harness fails where a Client on Kafka would: these tests hold it to
// what kavari.New and a broker without topic auto-creation do.

type audit struct {
	kavari.Message `kavari:"topic=audit,key=OrderID"`
	OrderID        string `json:"order_id"`
}

// auditing registers on reg an order handler that publishes an audit record
// with the Harness's client (set once New returned), and returns the
// handler's publish errors.
func auditing(t *testing.T, reg *kavari.Registry, client func() *kavari.Client) *[]error {
	t.Helper()
	var errs []error
	if err := kavari.RegisterFuncOn(reg, &order{}, func(ctx context.Context, m *order) error {
		_, err := client().Publish(ctx, &audit{OrderID: m.ID})
		errs = append(errs, err)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return &errs
}

// A handler publishing to a topic the broker does not have (no auto-creation,
// the default) fails on Kafka, and its record is dead-lettered: so in the
// Harness.
func TestHandlerPublishToUnknownTopicFails(t *testing.T) {
	reg := kavari.NewRegistry()
	var h *kavaritest.Harness
	errs := auditing(t, reg, func() *kavari.Client { return h.Client() })
	h = kavaritest.New(t, quick(reg))
	out := h.Deliver(t.Context(), &order{ID: "o-1"})
	if out.Result != kavaritest.DeadLettered || out.Kind != kavari.KindHandler {
		t.Fatalf("outcome %v: want dead-lettered (handler), as on a broker without the topic", out)
	}
	if len(*errs) == 0 || !errors.Is((*errs)[0], kavari.ErrUnknownTopic) {
		t.Fatalf("the handler's Publish returned %v, want an error matching kavari.ErrUnknownTopic", *errs)
	}
	if n := len(h.PublishedTo("audit")); n != 0 {
		t.Errorf("%d records on the unknown topic", n)
	}
}

// The topics of registered and declared types exist (with their dead-letter
// topics), whether or not anything was delivered yet; CreateTopics adds
// others; Publish.AllowAutoCreate creates any topic on first use, as the
// broker would.
func TestKnownTopicsArePublishable(t *testing.T) {
	t.Run("declared", func(t *testing.T) {
		reg := kavari.NewRegistry()
		if err := reg.Declare(&audit{}); err != nil {
			t.Fatal(err)
		}
		var h *kavaritest.Harness
		auditing(t, reg, func() *kavari.Client { return h.Client() })
		h = kavaritest.New(t, quick(reg))
		// Before any Deliver: the test publishes itself.
		if _, err := h.Client().Publish(t.Context(), &audit{OrderID: "o-0"}); err != nil {
			t.Fatalf("Publish to a declared type's topic: %v", err)
		}
		if out := h.Deliver(t.Context(), &order{ID: "o-1"}); out.Result != kavaritest.Handled {
			t.Fatalf("outcome %v", out)
		}
		if n := len(h.PublishedTo("audit")); n != 2 {
			t.Errorf("%d audit records, want 2", n)
		}
	})
	t.Run("CreateTopics", func(t *testing.T) {
		reg := kavari.NewRegistry()
		var h *kavaritest.Harness
		auditing(t, reg, func() *kavari.Client { return h.Client() })
		h = kavaritest.New(t, quick(reg))
		h.CreateTopics("audit")
		if out := h.Deliver(t.Context(), &order{ID: "o-1"}); out.Result != kavaritest.Handled {
			t.Fatalf("outcome %v", out)
		}
	})
	t.Run("AllowAutoCreate", func(t *testing.T) {
		reg := kavari.NewRegistry()
		var h *kavaritest.Harness
		auditing(t, reg, func() *kavari.Client { return h.Client() })
		cfg := quick(reg)
		cfg.Publish.AllowAutoCreate = true
		h = kavaritest.New(t, cfg)
		if out := h.Deliver(t.Context(), &order{ID: "o-1"}); out.Result != kavaritest.Handled {
			t.Fatalf("outcome %v", out)
		}
	})
}

// New refuses what kavari.New refuses for the configured Transport, with the
// same error; what the Transport accepts, New accepts.
func TestNewValidatesAsKavariNew(t *testing.T) {
	withInstance := func(tr kavari.Transport) kavari.Config {
		cfg := quick(kavari.NewRegistry())
		cfg.Brokers = []string{"localhost:9092"}
		cfg.Transport = tr
		cfg.Consume.InstanceID = "billing-1"
		return cfg
	}
	franzBatch := quick(kavari.NewRegistry())
	franzBatch.Brokers = []string{"localhost:9092"}
	franzBatch.Transport = kavari.FranzGo
	franzBatch.Publish.BatchTimeout = 5
	for name, cfg := range map[string]kavari.Config{
		"InstanceID on KafkaGo":    withInstance(kavari.KafkaGo),
		"BatchTimeout on FranzGo":  franzBatch,
		"InstanceID on FranzGo ok": withInstance(kavari.FranzGo),
	} {
		t.Run(name, func(t *testing.T) {
			k, newErr := kavari.New(cfg)
			if k != nil {
				_ = k.Stop(t.Context())
			}
			ft := &exampleT{} // panics on Fatalf
			defer ft.done()
			failure := func() (msg any) {
				defer func() { msg = recover() }()
				kavaritest.New(ft, cfg)
				return nil
			}()
			if newErr == nil {
				if failure != nil {
					t.Fatalf("kavari.New accepts the Config, kavaritest.New refuses it: %v", failure)
				}
				return
			}
			if s, _ := failure.(string); !strings.Contains(s, newErr.Error()) {
				t.Fatalf("kavari.New refuses the Config with %q; kavaritest.New: %v", newErr, failure)
			}
		})
	}
}

// Receipts and delivered records name the partition the configured
// partitioner picks, as on Kafka: Murmur2 by default, CRC32 when set.
func TestPartitionsAreTheConfiguredPartitioners(t *testing.T) {
	for _, part := range []kavari.Partitioner{kavari.Murmur2, kavari.CRC32} {
		t.Run(map[kavari.Partitioner]string{kavari.Murmur2: "Murmur2", kavari.CRC32: "CRC32"}[part], func(t *testing.T) {
			reg := kavari.NewRegistry()
			if err := kavari.RegisterFuncOn(reg, &order{}, func(ctx context.Context, m *order) error { return nil }); err != nil {
				t.Fatal(err)
			}
			cfg := quick(reg)
			cfg.Topics.Partitions = 7
			cfg.Publish.Partitioner = part
			h := kavaritest.New(t, cfg)
			tpart := map[kavari.Partitioner]transport.Partitioner{kavari.Murmur2: transport.Murmur2, kavari.CRC32: transport.CRC32}[part]
			for i := range 40 {
				key := fmt.Sprintf("order-%d", i)
				want := transporttest.Expected(tpart, []byte(key), 7)
				r, err := h.Client().Publish(t.Context(), &order{ID: key})
				if err != nil {
					t.Fatal(err)
				}
				if r.Partition != want {
					t.Fatalf("key %q: receipt names partition %d, the configured partitioner picks %d", key, r.Partition, want)
				}
				if out := h.Deliver(t.Context(), &order{ID: key}); out.Record.Partition != want {
					t.Fatalf("key %q: delivered on partition %d, the configured partitioner picks %d", key, out.Record.Partition, want)
				}
			}
		})
	}
}
