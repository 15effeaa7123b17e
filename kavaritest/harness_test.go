package kavaritest_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/kavaritest"
)

type order struct {
	kavari.Message `kavari:"topic=orders,key=ID"`
	ID             string `json:"id" validate:"required"`
	Seq            int    `json:"seq" validate:"gte=0"`
}

type invoice struct {
	kavari.Message `kavari:"topic=invoices,key=OrderID"`
	OrderID        string `json:"order_id"`
}

// quick is a Config whose handler retries take no noticeable time.
func quick(reg *kavari.Registry) kavari.Config {
	return kavari.Config{Registry: reg, Consume: kavari.ConsumeConfig{Retry: kavari.ConstantRetry(time.Millisecond, 3)}}
}

func TestDeliverHandled(t *testing.T) {
	reg := kavari.NewRegistry()
	var got []string
	if err := kavari.RegisterFuncOn(reg, &order{}, func(ctx context.Context, m *order) error {
		got = append(got, m.ID)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	h := kavaritest.New(t, quick(reg))
	out := h.Deliver(t.Context(), &order{ID: "o-1"})
	if out.Result != kavaritest.Handled || out.Attempts != 1 || out.Err != nil {
		t.Fatalf("outcome %v, want handled in 1 attempt", out)
	}
	if out.Record.Topic != "orders" || string(out.Record.Key) != "o-1" {
		t.Errorf("delivered record %+v", out.Record)
	}
	if len(got) != 1 || got[0] != "o-1" {
		t.Errorf("handler saw %v", got)
	}
	if n := len(h.Published()) + len(h.DeadLetters()); n != 0 {
		t.Errorf("the client wrote %d records, want none (Deliver's own are not the client's)", n)
	}
}

func TestDeliverHandlerErrorRetriedThenDeadLettered(t *testing.T) {
	reg := kavari.NewRegistry()
	boom := errors.New("boom")
	calls := 0
	if err := kavari.RegisterFuncOn(reg, &order{}, func(ctx context.Context, m *order) error {
		calls++
		return boom
	}); err != nil {
		t.Fatal(err)
	}
	h := kavaritest.New(t, quick(reg))
	out := h.Deliver(t.Context(), &order{ID: "o-1"})
	if out.Result != kavaritest.DeadLettered || out.Kind != kavari.KindHandler || out.Attempts != 3 || calls != 3 {
		t.Fatalf("outcome %v after %d calls, want dead-lettered (handler) after 3 attempts", out, calls)
	}
	var he *kavari.HandlerError
	if !errors.As(out.Err, &he) || he.Attempts != 3 || !errors.Is(out.Err, boom) {
		t.Errorf("Err %v: want a *kavari.HandlerError wrapping boom", out.Err)
	}
	dls := h.DeadLetters()
	if len(dls) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dls))
	}
	dl := dls[0]
	if dl.Topic != "orders.dlq" || dl.Kind != kavari.KindHandler || dl.Handler != out.Handler || dl.Handler == "" {
		t.Errorf("dead letter %+v (outcome handler %q)", dl, out.Handler)
	}
	if orig, _ := dl.Header(kavari.HeaderOriginalOffset); orig != strconv.FormatInt(out.Record.Offset, 10) {
		t.Errorf("dead letter names offset %s, the record is at %d", orig, out.Record.Offset)
	}
	if m, err := kavaritest.Decode[order](dl.Record); err != nil || m.ID != "o-1" {
		t.Errorf("dead letter's value: %+v, %v", m, err)
	}
	if len(h.Published()) != 0 {
		t.Errorf("Published lists dead letters: %v", h.Published())
	}
}

func TestDeliverInvalidMessageIsDeadLettered(t *testing.T) {
	reg := kavari.NewRegistry()
	calls := 0
	if err := kavari.RegisterFuncOn(reg, &order{}, func(ctx context.Context, m *order) error { calls++; return nil }); err != nil {
		t.Fatal(err)
	}
	h := kavaritest.New(t, quick(reg))
	out := h.Deliver(t.Context(), &order{ID: "o-1", Seq: -1}) // Seq must not be negative
	var de *kavari.DecodeError
	if out.Result != kavaritest.DeadLettered || out.Kind != kavari.KindValidation || !errors.As(out.Err, &de) || calls != 0 || out.Attempts != 0 {
		t.Fatalf("outcome %v, %d handler calls: want dead-lettered (validation) without calling the handler", out, calls)
	}
	if dls := h.DeadLetters(); len(dls) != 1 || dls[0].Kind != kavari.KindValidation {
		t.Errorf("dead letters %+v", dls)
	}
}

func TestDeliverUndecodableRecordIsDeadLettered(t *testing.T) {
	reg := kavari.NewRegistry()
	if err := kavari.RegisterFuncOn(reg, &order{}, func(ctx context.Context, m *order) error { return nil }); err != nil {
		t.Fatal(err)
	}
	h := kavaritest.New(t, quick(reg))
	out := h.DeliverRecord(t.Context(), kavaritest.Record{Topic: "orders", Key: []byte("o-1"), Value: []byte("not json"),
		Headers: []kavari.Header{{Key: kavari.HeaderMsgType, Value: []byte("order")}}})
	if out.Result != kavaritest.DeadLettered || out.Kind != kavari.KindDecode {
		t.Fatalf("outcome %v, want dead-lettered (decode)", out)
	}
	dls := h.DeadLetters()
	if len(dls) != 1 || dls[0].Kind != kavari.KindDecode || string(dls[0].Value) != "not json" {
		t.Fatalf("dead letters %+v", dls)
	}
	if _, err := kavaritest.Decode[order](dls[0].Record); err == nil {
		t.Error("Decode of a value that is not JSON succeeded")
	}
	// No headers at all: a poison record too, of unknown type.
	out = h.DeliverRecord(t.Context(), kavaritest.Record{Topic: "orders", Value: []byte(`{"id":"o-2"}`)})
	if out.Result != kavaritest.DeadLettered || out.Kind != kavari.KindUnknownType {
		t.Fatalf("outcome %v, want dead-lettered (unknown_type)", out)
	}
}

func TestDeliverUnknownTypeRelaxedIsSkipped(t *testing.T) {
	reg := kavari.NewRegistry()
	if err := kavari.RegisterFuncOn(reg, &order{}, func(ctx context.Context, m *order) error { return nil }); err != nil {
		t.Fatal(err)
	}
	cfg := quick(reg)
	cfg.Consume.SkipUnknownTypes = true
	h := kavaritest.New(t, cfg)
	out := h.DeliverRecord(t.Context(), kavaritest.Record{Topic: "orders", Value: []byte(`{}`),
		Headers: []kavari.Header{{Key: kavari.HeaderMsgType, Value: []byte("refund")}}})
	if out.Result != kavaritest.Skipped || len(h.DeadLetters()) != 0 {
		t.Fatalf("outcome %v, dead letters %v: want skipped", out, h.DeadLetters())
	}
}

func TestHandlerPublishShowsInPublished(t *testing.T) {
	reg := kavari.NewRegistry()
	if err := reg.Declare(&invoice{}); err != nil { // published: its topic exists, as on Kafka
		t.Fatal(err)
	}
	h := kavaritest.New(t, quick(reg))
	// Registered after New: the consumer starts at the first Deliver.
	if err := kavari.RegisterFuncOn(reg, &order{}, func(ctx context.Context, m *order) error {
		_, err := h.Client().Publish(ctx, &invoice{OrderID: m.ID})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if out := h.Deliver(t.Context(), &order{ID: "o-7"}); out.Result != kavaritest.Handled {
		t.Fatalf("outcome %v", out)
	}
	pub := h.PublishedTo("invoices")
	if len(pub) != 1 || len(h.Published()) != 1 || len(h.PublishedTo("orders")) != 0 {
		t.Fatalf("published %v", h.Published())
	}
	inv, err := kavaritest.Decode[invoice](pub[0])
	if err != nil || inv.OrderID != "o-7" || string(pub[0].Key) != "o-7" {
		t.Fatalf("published invoice %+v, %v (key %q)", inv, err, pub[0].Key)
	}
	if typ, _ := pub[0].Header(kavari.HeaderMsgType); typ != "invoice" {
		t.Errorf("msg_type %q", typ)
	}
	if _, err := kavaritest.Decode[order](pub[0]); err == nil {
		t.Error("an invoice decoded as an order")
	}
}

func TestDeliverAllKeepsOrderPerKey(t *testing.T) {
	reg := kavari.NewRegistry()
	var mu sync.Mutex
	seen := map[string][]int{}
	busy := map[string]bool{}
	overlap := false
	if err := kavari.RegisterFuncOn(reg, &order{}, func(ctx context.Context, m *order) error {
		mu.Lock()
		overlap = overlap || busy[m.ID]
		busy[m.ID] = true
		mu.Unlock()
		runtime.Gosched() // let other keys' handlers run meanwhile
		mu.Lock()
		busy[m.ID] = false
		seen[m.ID] = append(seen[m.ID], m.Seq)
		mu.Unlock()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	cfg := quick(reg)
	cfg.Topics.Partitions = 1 // every key on one partition: the order is the engine's, not the partitioning's
	h := kavaritest.New(t, cfg)
	const keys, per = 4, 25
	var msgs []kavari.Msg
	for n := range per {
		for k := range keys {
			msgs = append(msgs, &order{ID: "k" + strconv.Itoa(k), Seq: n})
		}
	}
	for i, out := range h.DeliverAll(t.Context(), msgs...) {
		if out.Result != kavaritest.Handled {
			t.Fatalf("message %d: %v", i, out)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if overlap {
		t.Error("two records of one key were handled at the same time")
	}
	for k := range keys {
		ns := seen["k"+strconv.Itoa(k)]
		if len(ns) != per {
			t.Fatalf("key k%d: %d handled, want %d", k, len(ns), per)
		}
		for i, n := range ns {
			if n != i {
				t.Fatalf("key k%d handled out of order: %v", k, ns)
			}
		}
	}
}

// Without short retry delays, a synctest bubble makes the default policy
// (Fibonacci from 100 ms, 5 attempts) take no real time; and the bubble
// fails the test if the Harness leaves a goroutine behind.
func TestDeliverInSynctestBubble(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := kavari.NewRegistry()
		if err := kavari.RegisterFuncOn(reg, &order{}, func(ctx context.Context, m *order) error {
			return fmt.Errorf("order %s: no stock", m.ID)
		}); err != nil {
			t.Fatal(err)
		}
		h := kavaritest.New(t, kavari.Config{Registry: reg})
		start := time.Now() // the bubble's clock
		out := h.Deliver(t.Context(), &order{ID: "o-1"})
		if out.Result != kavaritest.DeadLettered || out.Attempts != 5 {
			t.Fatalf("outcome %v, want dead-lettered after the default 5 attempts", out)
		}
		// The waits happened on the bubble's clock: 100+100+200+300 ms.
		if waited := time.Since(start); waited < 700*time.Millisecond {
			t.Errorf("fake time advanced %v, want the retry waits (700 ms)", waited)
		}
	})
}

// Stop, run by t.Cleanup, ends every goroutine the Harness started.
func TestCleanupLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Run("harness", func(t *testing.T) {
		reg := kavari.NewRegistry()
		if err := kavari.RegisterFuncOn(reg, &order{}, func(ctx context.Context, m *order) error { return errors.New("no") }); err != nil {
			t.Fatal(err)
		}
		if err := reg.Declare(&invoice{}); err != nil {
			t.Fatal(err)
		}
		h := kavaritest.New(t, quick(reg))
		h.Deliver(t.Context(), &order{ID: "o-1"})
		h.Deliver(t.Context(), &order{ID: "o-2"})
		if _, err := h.Client().Publish(t.Context(), &invoice{OrderID: "o-1"}); err != nil {
			t.Fatal(err)
		}
	})
	// Goroutines end moments after Stop returned; wait for that, generously.
	for deadline := time.Now().Add(10 * time.Second); runtime.NumGoroutine() > before; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before the Harness, %d after its cleanup:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
	}
}

// A record for a topic no handler consumes would never finish: Deliver says
// so instead of waiting.
func TestDeliverToUnconsumedTopicFails(t *testing.T) {
	reg := kavari.NewRegistry()
	if err := kavari.RegisterFuncOn(reg, &order{}, func(ctx context.Context, m *order) error { return nil }); err != nil {
		t.Fatal(err)
	}
	ft := &exampleT{} // panics on Fatalf
	defer ft.done()
	h := kavaritest.New(ft, quick(reg))
	failure := func() (msg any) {
		defer func() { msg = recover() }()
		h.Deliver(t.Context(), &invoice{OrderID: "o-1"})
		return nil
	}()
	if s, _ := failure.(string); !strings.Contains(s, `no handler consumes topic "invoices" (consumed: orders)`) {
		t.Fatalf("Deliver to an unconsumed topic: %v", failure)
	}
}

// DeliverAll hands a batch handler's records over in batches and reports
// each record's outcome: the poison record the handler names is
// dead-lettered after its retries alone, the others are handled.
func TestDeliverAllBatchPoison(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := kavari.NewRegistry()
		var mu sync.Mutex
		var sizes []int
		if err := kavari.RegisterBatchFuncOn(reg, &order{}, func(ctx context.Context, ms []*order) error {
			mu.Lock()
			sizes = append(sizes, len(ms))
			mu.Unlock()
			for i, m := range ms {
				if m.ID == "poison" {
					return kavari.BatchFailed(i, errors.New("cannot insert"))
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		cfg := quick(reg)
		cfg.Topics.Partitions = 1
		h := kavaritest.New(t, cfg)
		var msgs []kavari.Msg
		for i := 0; i < 9; i++ {
			id := "o-" + strconv.Itoa(i)
			if i == 4 {
				id = "poison"
			}
			msgs = append(msgs, &order{ID: id, Seq: i})
		}
		outs := h.DeliverAll(t.Context(), msgs...)
		for i, o := range outs {
			switch {
			case i == 4:
				if o.Result != kavaritest.DeadLettered || o.Kind != kavari.KindHandler || o.Attempts != 3 {
					t.Errorf("poison: %v, want dead-lettered after 3 attempts", o)
				}
			case o.Result != kavaritest.Handled:
				t.Errorf("record %d: %v, want handled", i, o)
			}
		}
		if dls := h.DeadLetters(); len(dls) != 1 || dls[0].Kind != kavari.KindHandler {
			t.Errorf("dead letters %v", dls)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(sizes) == 0 || sizes[0] != 9 {
			t.Errorf("batch sizes %v: want the nine records in the first batch", sizes)
		}
	})
}
