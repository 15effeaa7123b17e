package franz_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/internal/transport"
	"github.com/kavari-go/kavari/internal/transport/franz"
	"github.com/kavari-go/kavari/internal/transport/transporttest"
)

// txnHandler records what a transactional consumer delivers; Lost drops
// what it held of the partitions (as the engine does), so after a rewind
// it holds the records delivered again.
type txnHandler struct {
	mu       sync.Mutex
	gen      transport.Generation
	own      map[transport.TopicPartition]bool
	recs     map[transport.TopicPartition][]*transport.Record
	assigns  []transport.Assignment
	lost     int
	revoked  int
	assigned chan struct{}
}

func newTxnHandler() *txnHandler {
	return &txnHandler{own: map[transport.TopicPartition]bool{}, recs: map[transport.TopicPartition][]*transport.Record{}, assigned: make(chan struct{}, 64)}
}

func (h *txnHandler) Assigned(gen transport.Generation, parts []transport.Assignment) {
	h.mu.Lock()
	h.gen = gen
	for _, a := range parts {
		h.own[a.TopicPartition] = true
		h.assigns = append(h.assigns, a)
	}
	h.mu.Unlock()
	h.assigned <- struct{}{}
}

func (h *txnHandler) Revoked(_ transport.Generation, tps []transport.TopicPartition) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.revoked++
	for _, tp := range tps {
		delete(h.own, tp)
		delete(h.recs, tp)
	}
}

func (h *txnHandler) Lost(_ transport.Generation, tps []transport.TopicPartition) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lost++
	for _, tp := range tps {
		delete(h.own, tp)
		delete(h.recs, tp)
	}
}

func (h *txnHandler) Records(tp transport.TopicPartition, recs []*transport.Record, _ int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.own[tp] {
		panic(fmt.Sprintf("records of %v, not assigned", tp))
	}
	prev := h.recs[tp]
	for _, r := range recs {
		if len(prev) > 0 && r.Offset != prev[len(prev)-1].Offset+1 {
			panic(fmt.Sprintf("%v: offset %d after %d", tp, r.Offset, prev[len(prev)-1].Offset))
		}
		prev = append(prev, r)
	}
	h.recs[tp] = prev
}

func (h *txnHandler) Error(error) {}

// values returns the values of tp's records held, from offset from on.
func (h *txnHandler) values(tp transport.TopicPartition) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, r := range h.recs[tp] {
		out = append(out, string(r.Value))
	}
	return out
}

func (h *txnHandler) generation() transport.Generation {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.gen
}

// runTxn runs a transactional consumer of topics until Close.
func runTxn(t *testing.T, cfg transport.Config, h *txnHandler) (transport.Consumer, transport.Transactional) {
	t.Helper()
	c, err := franz.New().NewConsumer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tx, ok := c.(transport.Transactional)
	if !ok {
		t.Fatal("a consumer with a TransactionalID is not Transactional")
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(context.Background(), h) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = c.Close(ctx)
		<-done
	})
	return c, tx
}

// committedValues reads topic (one partition) under read_committed up to a
// plain end marker it writes first, and returns the values before it.
func committedValues(t *testing.T, brokers []string, topic string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("END")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []string
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("the end marker of %s was not read; read %v", topic, out)
		}
		for _, r := range fs.Records() {
			if string(r.Value) == "END" {
				return out
			}
			out = append(out, string(r.Value))
		}
	}
}

// groupOffset is the group's committed offset of topic/0 (-1: none), read
// requiring stable offsets.
func groupOffset(t *testing.T, brokers []string, group, topic string) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	req := kmsg.NewPtrOffsetFetchRequest()
	req.Group, req.RequireStable = group, true
	rt := kmsg.NewOffsetFetchRequestTopic()
	rt.Topic, rt.Partitions = topic, []int32{0}
	req.Topics = append(req.Topics, rt)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Topics) == 1 && len(resp.Topics[0].Partitions) == 1 {
			p := resp.Topics[0].Partitions[0]
			if p.ErrorCode == 0 {
				return p.Offset
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("offset fetch: %+v", resp)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTransactionCommitAbortRewind: a transaction's outputs and offsets
// commit together; an aborted one leaves no output visible, and the
// consumer rewinds to the committed offset (Lost, then Assigned there) and
// delivers the records again; one fenced to a generation the member is not
// in aborts too.
func TestTransactionCommitAbortRewind(t *testing.T) {
	brokers := testenv.RequireReal(t)
	tr := franz.New()
	cfg := transporttest.Config(brokers)
	in := topic(t, tr, cfg, 1)
	out := topic(t, tr, cfg, 1)
	p, err := tr.NewProducer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	var recs []*transport.Record
	for i := range 10 {
		recs = append(recs, &transport.Record{Topic: in, Value: fmt.Appendf(nil, "in-%d", i)})
	}
	if errs := p.Produce(ctx, recs); errs != nil {
		t.Fatal(errs)
	}

	cfg.GroupID, cfg.Topics = testenv.ID("txg"), []string{in}
	cfg.TransactionalID, cfg.TransactionTimeout = testenv.ID("tx"), 10*time.Second
	h := newTxnHandler()
	_, tx := runTxn(t, cfg, h)
	tp := transport.TopicPartition{Topic: in, Partition: 0}
	waitUntil(t, "10 records delivered", func() bool { return len(h.values(tp)) == 10 })
	gen := h.generation()

	outputs := func(tag string, from, to int) []*transport.Record {
		var rs []*transport.Record
		for i := from; i < to; i++ {
			rs = append(rs, &transport.Record{Topic: out, Value: fmt.Appendf(nil, "%s-%d", tag, i)})
		}
		return rs
	}
	// 1. Outputs of records 0-4 and their offsets, committed.
	if err := tx.Begin(); err != nil {
		t.Fatal(err)
	}
	if errs := tx.Produce(ctx, outputs("first", 0, 5)); errs != nil {
		t.Fatal(errs)
	}
	if ok, err := tx.End(ctx, gen, []transport.Offset{{TopicPartition: tp, Offset: 5, Metadata: "m5"}}, true); !ok || err != nil {
		t.Fatalf("End: committed %v, %v", ok, err)
	}
	if got := groupOffset(t, brokers, cfg.GroupID, in); got != 5 {
		t.Fatalf("committed offset %d, want 5", got)
	}

	// 2. Outputs of 5-9, aborted: the records come again from offset 5.
	if err := tx.Begin(); err != nil {
		t.Fatal(err)
	}
	if errs := tx.Produce(ctx, outputs("aborted", 5, 10)); errs != nil {
		t.Fatal(errs)
	}
	if ok, err := tx.End(ctx, gen, []transport.Offset{{TopicPartition: tp, Offset: 10}}, false); ok || err != nil {
		t.Fatalf("End(abort): committed %v, %v", ok, err)
	}
	h.mu.Lock()
	last := h.assigns[len(h.assigns)-1]
	lost := h.lost
	h.mu.Unlock()
	if lost != 1 || last.Offset != 5 || last.Metadata != "m5" || last.Start != 5 {
		t.Fatalf("after the abort: %d Lost, last assignment %+v; want 1 Lost, then assigned at 5 with m5", lost, last)
	}
	waitUntil(t, "records 5-9 delivered again", func() bool { return len(h.values(tp)) == 5 })
	if v := h.values(tp); v[0] != "in-5" || v[4] != "in-9" {
		t.Fatalf("after the rewind: %v", v)
	}

	// 3. A commit fenced to another generation aborts.
	if err := tx.Begin(); err != nil {
		t.Fatal(err)
	}
	if errs := tx.Produce(ctx, outputs("fenced", 5, 10)); errs != nil {
		t.Fatal(errs)
	}
	stale := transport.Generation{ID: gen.ID + 7, MemberID: gen.MemberID}
	if ok, err := tx.End(ctx, stale, []transport.Offset{{TopicPartition: tp, Offset: 10}}, true); ok || err == nil {
		t.Fatalf("End in another generation: committed %v, %v; want an abort and why", ok, err)
	} else {
		t.Logf("fenced: %v", err)
	}
	waitUntil(t, "records 5-9 delivered again", func() bool { return len(h.values(tp)) == 5 })

	// 4. Outputs of 5-9 again, committed.
	if err := tx.Begin(); err != nil {
		t.Fatal(err)
	}
	if errs := tx.Produce(ctx, outputs("second", 5, 10)); errs != nil {
		t.Fatal(errs)
	}
	if ok, err := tx.End(ctx, h.generation(), []transport.Offset{{TopicPartition: tp, Offset: 10}}, true); !ok || err != nil {
		t.Fatalf("End: committed %v, %v", ok, err)
	}
	if got := groupOffset(t, brokers, cfg.GroupID, in); got != 10 {
		t.Fatalf("committed offset %d, want 10", got)
	}
	got := strings.Join(committedValues(t, brokers, out), " ")
	want := "first-0 first-1 first-2 first-3 first-4 second-5 second-6 second-7 second-8 second-9"
	if got != want {
		t.Fatalf("committed output:\n got %s\nwant %s", got, want)
	}
}

// TestTransactionAbortsOnRevoke: a second member joins while the first has
// a transaction open; the rebalance revokes a partition from the first, so
// its End aborts (nothing it wrote is visible, no offset moves) and it
// rewinds the partition it kept.
func TestTransactionAbortsOnRevoke(t *testing.T) {
	brokers := testenv.RequireReal(t)
	tr := franz.New()
	cfg := transporttest.Config(brokers)
	in := topic(t, tr, cfg, 2)
	out := topic(t, tr, cfg, 1)
	cfg.GroupID, cfg.Topics = testenv.ID("txg"), []string{in}
	cfg.TransactionalID = testenv.ID("tx1")
	h1 := newTxnHandler()
	_, tx1 := runTxn(t, cfg, h1)
	waitUntil(t, "member 1 owns both partitions", func() bool { h1.mu.Lock(); defer h1.mu.Unlock(); return len(h1.own) == 2 })
	gen := h1.generation()
	ctx := context.Background()
	if err := tx1.Begin(); err != nil {
		t.Fatal(err)
	}
	if errs := tx1.Produce(ctx, []*transport.Record{{Topic: out, Value: []byte("zombie")}}); errs != nil {
		t.Fatal(errs)
	}
	cfg2 := cfg
	cfg2.TransactionalID = testenv.ID("tx2")
	h2 := newTxnHandler()
	runTxn(t, cfg2, h2)
	waitUntil(t, "member 2 owns a partition", func() bool { h2.mu.Lock(); defer h2.mu.Unlock(); return len(h2.own) == 1 })
	h1.mu.Lock()
	revoked, lostBefore := h1.revoked, h1.lost
	h1.mu.Unlock()
	if revoked == 0 {
		t.Fatal("member 1 was not revoked a partition")
	}
	var offsets []transport.Offset
	for p := range int32(2) {
		offsets = append(offsets, transport.Offset{TopicPartition: transport.TopicPartition{Topic: in, Partition: p}, Offset: 0})
	}
	ok, err := tx1.End(ctx, gen, offsets, true)
	if ok || err == nil {
		t.Fatalf("End after a revoke: committed %v, %v; want an abort", ok, err)
	}
	h1.mu.Lock()
	lost := h1.lost - lostBefore
	h1.mu.Unlock()
	if lost != 1 {
		t.Fatalf("the kept partition was not rewound (%d Lost)", lost)
	}
	if got := committedValues(t, brokers, out); len(got) != 0 {
		t.Fatalf("visible after the abort: %v", got)
	}
}
