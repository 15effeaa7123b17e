package kafkago_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/internal/transport"
	"github.com/kavari-go/kavari/internal/transport/kafkago"
	"github.com/kavari-go/kavari/internal/transport/transporttest"
)

// runCounter counts Records calls and the records they deliver.
type runCounter struct {
	calls, recs atomic.Int64
	next        atomic.Int64 // the offset expected next
	order       atomic.Bool  // false once a record came out of order
}

func (c *runCounter) Assigned(transport.Generation, []transport.Assignment)    {}
func (c *runCounter) Revoked(transport.Generation, []transport.TopicPartition) {}
func (c *runCounter) Lost(transport.Generation, []transport.TopicPartition)    {}
func (c *runCounter) Error(error)                                              {}
func (c *runCounter) Records(_ transport.TopicPartition, recs []*transport.Record, _ int64) {
	c.calls.Add(1)
	c.recs.Add(int64(len(recs)))
	for _, r := range recs {
		if !c.next.CompareAndSwap(r.Offset, r.Offset+1) {
			c.order.Store(false)
		}
	}
}

// TestBacklogComesInRuns checks that a backlog reaches the engine as runs
// of records, in offset order, not one record per Records call (each call
// takes the engine's locks and wakes the partition's feeder).
func TestBacklogComesInRuns(t *testing.T) {
	const n = 20000
	brokers, _ := testenv.Brokers(t)
	tr := kafkago.New()
	cfg := transporttest.Config(brokers)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	adm, err := tr.NewAdmin(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	topic := testenv.ID("runs")
	if err := adm.CreateTopics(ctx, 1, -1, topic); err != nil {
		t.Fatal(err)
	}
	p, err := tr.NewProducer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	recs := make([]*transport.Record, n)
	for i := range recs {
		recs[i] = &transport.Record{Topic: topic, Key: fmt.Appendf(nil, "k%d", i), Value: make([]byte, 100)}
	}
	if errs := p.Produce(ctx, recs); errs != nil {
		t.Fatal(errs)
	}
	cfg.GroupID, cfg.Topics = testenv.ID("runs"), []string{topic}
	c, err := tr.NewConsumer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := &runCounter{}
	h.order.Store(true)
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, h) }()
	for h.recs.Load() < n && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	if err := c.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
	<-done
	calls, got := h.calls.Load(), h.recs.Load()
	if got != n || !h.order.Load() {
		t.Fatalf("got %d records (want %d), in order: %v", got, n, h.order.Load())
	}
	t.Logf("%d records in %d Records calls: %.1f per call", got, calls, float64(got)/float64(calls))
	if float64(got)/float64(calls) < 2 {
		t.Errorf("%.1f records per Records call: the backlog came one record at a time", float64(got)/float64(calls))
	}
}
