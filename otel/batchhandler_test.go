package kavariotel_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
	kavariotel "github.com/kavari-go/kavari/otel"
)

type bulkOrder struct {
	kavari.Message `kavari:"topic=kavari-otel-bulk,key=ID"`
	Run            string `json:"run"`
	ID             string `json:"id" validate:"required"`
}

// A batch handler's attempt runs in one process span, linked to the
// producer span of each of its records and parented by none of them, with
// messaging.batch.message_count; the batch sizes are recorded in
// kavari.consumer.batch.size.
func TestTraceBatchHandler(t *testing.T) {
	group := testenv.ID("otel-batch")
	s := newSetup(t, group)
	run := testenv.ID("run")
	reg := kavari.NewRegistry()
	var mu sync.Mutex
	handled := 0
	var inSpan []trace.SpanContext
	require.NoError(t, kavari.RegisterBatchFuncOn(reg, &bulkOrder{}, func(ctx context.Context, ms []*bulkOrder) error {
		mu.Lock()
		defer mu.Unlock()
		for _, m := range ms {
			if m.Run == run {
				handled++
			}
		}
		inSpan = append(inSpan, trace.SpanContextFromContext(ctx))
		return nil
	}))
	k := s.kavari(t, group, reg, true, func(c *kavari.Config) { c.Consume.MaxBatchWait = 500 * time.Millisecond })
	require.NoError(t, k.Start(context.Background()))
	_, err := k.PublishBatch(context.Background(), &bulkOrder{Run: run, ID: "a"}, &bulkOrder{Run: run, ID: "b"}, &bulkOrder{Run: run, ID: "c"})
	require.NoError(t, err)
	eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return handled == 3 }, func() string { return "the batch handler did not handle the 3 records" })

	send := s.spansNamed("send kavari-otel-bulk")
	require.Len(t, send, 3)
	sends := map[trace.SpanID]bool{}
	for _, sp := range send {
		sends[sp.SpanContext.SpanID()] = true
	}
	var n int64
	for _, p := range s.spansNamed("process kavari-otel-bulk") {
		assert.Equal(t, trace.SpanKindConsumer, p.SpanKind)
		assert.False(t, sends[p.Parent.SpanID()], "a batch's span has no record's producer span as parent")
		count := attr(p, "messaging.batch.message_count").AsInt64()
		assert.Len(t, p.Links, int(count), "one link per record")
		for _, l := range p.Links {
			assert.True(t, sends[l.SpanContext.SpanID()], "linked to a producer span")
		}
		n += count
	}
	assert.Equal(t, int64(3), n, "the process spans cover the three records")
	mu.Lock()
	for _, sc := range inSpan {
		assert.True(t, sc.IsValid(), "the handler runs in the batch's span")
	}
	mu.Unlock()
	assert.Equal(t, int64(3), s.sum(t, kavariotel.MetricBatchSize), "batch sizes recorded")
}
