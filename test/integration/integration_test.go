// Package integration runs kavari end to end against the broker the test
// command provides (a real Apache Kafka under scripts/test.sh and in CI).
package integration

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/internal/testkit"
)

func newKavari(t *testing.T, reg *kavari.Registry, brokers []string, mutate func(*kavari.Config)) *kavari.Client {
	t.Helper()
	cfg := kavari.Config{
		Brokers:  brokers,
		Registry: reg,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		Consume: kavari.ConsumeConfig{
			GroupID:           testenv.ID("it"),
			CommitInterval:    200 * time.Millisecond,
			HeartbeatInterval: 500 * time.Millisecond,
			SessionTimeout:    10 * time.Second,
			DrainTimeout:      5 * time.Second,
		},
	}
	testkit.UseTransport(&cfg)
	if mutate != nil {
		mutate(&cfg)
	}
	k, err := kavari.New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	require.NoError(t, k.EnsureTopics(ctx))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = k.Stop(ctx)
	})
	return k
}

func waitUntil(t *testing.T, timeout time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type keyedEvent struct {
	kavari.Message `kavari:"topic=it-order,key=Key"`
	Run            string `json:"run"`
	Key            string `json:"key"`
	Seq            int    `json:"seq"`
}

// TestPerKeyOrder100KeysX1000 is the workload: 100 keys × 1,000
// messages over 12 partitions, MaxInFlight 64, handlers sleeping a random
// 0–2 ms. Every message is handled, and no key ever sees a message out of
// order or two of its messages at once.
func TestPerKeyOrder100KeysX1000(t *testing.T) {
	brokers, kind := testenv.Brokers(t)
	keys, per := 100, 1000
	if kind == testenv.Embedded || testing.Short() {
		per = 200
	}
	run := testenv.ID("run")
	reg := kavari.NewRegistry()
	var mu sync.Mutex
	next := make(map[string]int, keys)
	busy := make(map[string]bool, keys)
	var violations, handled, dups atomic.Int64
	require.NoError(t, kavari.RegisterFuncOn(reg, &keyedEvent{}, func(ctx context.Context, m *keyedEvent) error {
		if m.Run != run {
			return nil
		}
		mu.Lock()
		if busy[m.Key] {
			violations.Add(1)
		}
		busy[m.Key] = true
		switch want := next[m.Key]; {
		case m.Seq == want:
			next[m.Key] = want + 1
		case m.Seq < want:
			dups.Add(1) // a redelivery would repeat; none is expected without faults
		default:
			violations.Add(1)
			next[m.Key] = m.Seq + 1
		}
		mu.Unlock()
		time.Sleep(time.Duration(rand.IntN(2001)) * time.Microsecond)
		mu.Lock()
		busy[m.Key] = false
		mu.Unlock()
		handled.Add(1)
		return nil
	}))
	k := newKavari(t, reg, brokers, func(c *kavari.Config) { c.Consume.MaxInFlight = 64; c.Topics.Partitions = 12 })
	ctx := context.Background()
	require.NoError(t, k.Start(ctx))

	start := time.Now()
	const chunk = 2000
	batch := make([]kavari.Msg, 0, chunk)
	for s := 0; s < per; s++ {
		for i := 0; i < keys; i++ {
			batch = append(batch, &keyedEvent{Run: run, Key: "key-" + strconv.Itoa(i), Seq: s})
			if len(batch) == chunk {
				_, err := k.PublishBatch(ctx, batch...)
				require.NoError(t, err)
				batch = batch[:0]
			}
		}
	}
	if len(batch) > 0 {
		_, err := k.PublishBatch(ctx, batch...)
		require.NoError(t, err)
	}
	published := time.Since(start)
	total := int64(keys * per)
	waitUntil(t, 5*time.Minute, func() bool { return handled.Load() >= total }, fmt.Sprintf("all %d handled", total))
	t.Logf("%d messages: published in %s, all handled after %s", total, published.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	assert.Zero(t, violations.Load(), "per-key order violations")
	assert.Zero(t, dups.Load(), "duplicates without any fault")
	mu.Lock()
	defer mu.Unlock()
	for i := 0; i < keys; i++ {
		assert.Equal(t, per, next["key-"+strconv.Itoa(i)], "key-%d handled up to", i)
	}
}

type invoiceIssued struct {
	kavari.Message `kavari:"topic=it-billing,key=InvoiceID,name=invoice.issued,version=1"`
	Run            string            `json:"run"`
	InvoiceID      string            `json:"invoice_id" validate:"required"`
	Lines          []invoiceLine     `json:"lines" validate:"min=1,dive"`
	Meta           map[string]string `json:"meta,omitempty"`
	IssuedAt       time.Time         `json:"issued_at"`
	Customer       *customer         `json:"customer" validate:"required"`
}

type invoiceLine struct {
	SKU   string `json:"sku" validate:"required"`
	Cents int64  `json:"cents" validate:"gte=0"`
}

type customer struct {
	ID    int64  `json:"id" validate:"gt=0"`
	Email string `json:"email" validate:"email"`
}

type invoicePaid struct {
	kavari.Message `kavari:"topic=it-billing,key=InvoiceID,name=invoice.paid"`
	Run            string `json:"run"`
	InvoiceID      string `json:"invoice_id" validate:"required"`
}

type shipmentSent struct {
	kavari.Message `kavari:"topic=it-shipping,key=Customer.ID"`
	Run            string   `json:"run"`
	Customer       customer `json:"customer"`
	Parcel         string   `json:"parcel"`
}

// TestSeveralTypesOnSharedAndSeparateTopics round-trips three types: two share
// a topic and are told apart by msg_type, one has its own topic and a nested
// key; nested structs, slices, maps, pointers and times survive the trip.
func TestSeveralTypesOnSharedAndSeparateTopics(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("run")
	reg := kavari.NewRegistry()
	issued := make(chan *invoiceIssued, 100)
	paid := make(chan *invoicePaid, 100)
	shipped := make(chan *shipmentSent, 100)
	require.NoError(t, kavari.RegisterFuncOn(reg, &invoiceIssued{}, func(ctx context.Context, m *invoiceIssued) error {
		if m.Run == run {
			issued <- m
		}
		return nil
	}))
	require.NoError(t, kavari.RegisterFuncOn(reg, &invoicePaid{}, func(ctx context.Context, m *invoicePaid) error {
		if m.Run == run {
			paid <- m
		}
		return nil
	}))
	require.NoError(t, kavari.RegisterFuncOn(reg, &shipmentSent{}, func(ctx context.Context, m *shipmentSent) error {
		if m.Run == run {
			shipped <- m
		}
		return nil
	}))
	k := newKavari(t, reg, brokers, func(c *kavari.Config) { c.Topics.Partitions = 6 })
	ctx := context.Background()
	require.NoError(t, k.Start(ctx))
	at := time.Date(2026, 11, 27, 10, 30, 0, 123456789, time.UTC)
	const n = 20
	for i := 0; i < n; i++ {
		id := "inv-" + strconv.Itoa(i)
		_, err := k.Publish(ctx, &invoiceIssued{
			Run: run, InvoiceID: id, IssuedAt: at,
			Lines:    []invoiceLine{{SKU: "a", Cents: 100}, {SKU: "b", Cents: int64(i)}},
			Meta:     map[string]string{"i": strconv.Itoa(i)},
			Customer: &customer{ID: int64(i + 1), Email: "c@example.com"},
		})
		require.NoError(t, err)
		_, err = k.Publish(ctx, &invoicePaid{Run: run, InvoiceID: id})
		require.NoError(t, err)
		_, err = k.Publish(ctx, &shipmentSent{Run: run, Customer: customer{ID: int64(i + 1), Email: "c@example.com"}, Parcel: id})
		require.NoError(t, err)
	}
	got := map[string]*invoiceIssued{}
	timeout := time.After(2 * time.Minute)
	for p, s := 0, 0; len(got) < n || p < n || s < n; {
		select {
		case m := <-issued:
			got[m.InvoiceID] = m
		case <-paid:
			p++
		case <-shipped:
			s++
		case <-timeout:
			t.Fatalf("handled issued %d, paid %d, shipped %d of %d", len(got), p, s, n)
		}
	}
	m := got["inv-7"]
	require.NotNil(t, m)
	assert.True(t, m.IssuedAt.Equal(at), "time.Time round trip")
	assert.Equal(t, []invoiceLine{{SKU: "a", Cents: 100}, {SKU: "b", Cents: 7}}, m.Lines)
	assert.Equal(t, map[string]string{"i": "7"}, m.Meta)
	assert.Equal(t, &customer{ID: 8, Email: "c@example.com"}, m.Customer)
}

type wideMsg struct {
	kavari.Message `kavari:"topic=it-wide,key=ID"`
	Run            string `json:"run"`
	ID             string `json:"id"`
}

// TestManyPartitions consumes a 48-partition topic with two members of one
// group and PublishAsync traffic: every message handled, every partition used.
func TestManyPartitions(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("run")
	group := testenv.ID("it")
	var mu sync.Mutex
	seen := map[string]bool{}
	parts := map[int]bool{}
	mk := func() *kavari.Client {
		reg := kavari.NewRegistry()
		require.NoError(t, kavari.RegisterFuncOn(reg, &wideMsg{}, func(ctx context.Context, m *wideMsg) error {
			if m.Run == run {
				rec, _ := kavari.RecordFromContext(ctx)
				mu.Lock()
				seen[m.ID] = true
				parts[rec.Partition] = true
				mu.Unlock()
			}
			return nil
		}))
		return newKavari(t, reg, brokers, func(c *kavari.Config) { c.Consume.GroupID = group; c.Topics.Partitions = 48 })
	}
	a, b := mk(), mk()
	ctx := context.Background()
	require.NoError(t, a.Start(ctx))
	require.NoError(t, b.Start(ctx))
	const n = 5000
	var acked, failed atomic.Int64
	for i := 0; i < n; i++ {
		a.PublishAsync(context.Background(), &wideMsg{Run: run, ID: strconv.Itoa(i)}, func(_ kavari.Receipt, err error) {
			if err != nil {
				failed.Add(1)
				return
			}
			acked.Add(1)
		})
	}
	waitUntil(t, 2*time.Minute, func() bool { return acked.Load()+failed.Load() == n }, "async callbacks")
	require.Zero(t, failed.Load())
	waitUntil(t, 2*time.Minute, func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) == n }, "all handled")
	mu.Lock()
	defer mu.Unlock()
	assert.Len(t, parts, 48, "records spread over every partition")
}
