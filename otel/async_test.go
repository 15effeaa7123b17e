package kavariotel_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
)

type asyncOrder struct {
	kavari.Message `kavari:"topic=kavari-otel-async,key=ID"`
	ID             string `json:"id"`
}

// Messages published with PublishAsync, each inside its own parent span
// (written together in one batch, likely), arrive in the handler with their
// parent's trace id; each producer span is its parent's child, and each
// callback's receipt names the offset its span records.
func TestTraceThroughPublishAsync(t *testing.T) {
	group := testenv.ID("otel-async")
	s := newSetup(t, group)
	reg := kavari.NewRegistry()
	var mu sync.Mutex
	handled := map[string]trace.SpanContext{}
	require.NoError(t, kavari.RegisterFuncOn(reg, &asyncOrder{}, func(ctx context.Context, m *asyncOrder) error {
		mu.Lock()
		defer mu.Unlock()
		handled[m.ID] = trace.SpanContextFromContext(ctx)
		return nil
	}))
	k := s.kavari(t, group, reg, true)
	require.NoError(t, k.Start(context.Background()))

	const n = 3
	type result struct {
		r   kavari.Receipt
		err error
	}
	done := make(chan result, n)
	parents := map[string]trace.SpanContext{}
	for i := range n {
		id := fmt.Sprintf("a-%d", i)
		ctx, parent := s.tp.Tracer("test").Start(context.Background(), "request "+id)
		parents[id] = parent.SpanContext()
		k.PublishAsync(ctx, &asyncOrder{ID: id}, func(r kavari.Receipt, err error) { done <- result{r, err} })
		parent.End()
	}
	receipts := map[string]kavari.Receipt{} // by ce_id
	for range n {
		select {
		case res := <-done:
			require.NoError(t, res.err)
			require.GreaterOrEqual(t, res.r.Offset, int64(0))
			receipts[res.r.ID] = res.r
		case <-time.After(60 * time.Second):
			t.Fatal("a callback never ran")
		}
	}
	eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(handled) == n }, func() string { return "not all handled" })
	eventually(t, func() bool { return len(s.spansNamed("process kavari-otel-async")) == n }, func() string { return "process spans missing" })

	send := s.spansNamed("send kavari-otel-async")
	require.Len(t, send, n, "the producer spans ended by the time the callbacks ran")
	procs := map[trace.SpanID]tracetest.SpanStub{}
	for _, p := range s.spansNamed("process kavari-otel-async") {
		procs[p.Parent.SpanID()] = p
	}
	mu.Lock()
	defer mu.Unlock()
	for _, sp := range send {
		id := attr(sp, "messaging.kafka.message.key").AsString()
		parent := parents[id]
		assert.Equal(t, trace.SpanKindProducer, sp.SpanKind)
		assert.Equal(t, parent.TraceID(), sp.SpanContext.TraceID(), id)
		assert.Equal(t, parent.SpanID(), sp.Parent.SpanID(), "%s: the producer span is the parent's child", id)
		r, ok := receipts[attr(sp, "messaging.message.id").AsString()]
		require.True(t, ok, "%s: a receipt with the span's message id", id)
		assert.Equal(t, r.Offset, attr(sp, "messaging.kafka.offset").AsInt64(), "%s: the receipt's offset is the span's", id)
		assert.Equal(t, strconv.Itoa(r.Partition), attr(sp, "messaging.destination.partition.id").AsString(), id)
		assert.Equal(t, parent.TraceID(), handled[id].TraceID(), "%s: the handler runs in the publisher's trace", id)
		p, ok := procs[sp.SpanContext.SpanID()]
		require.True(t, ok, "%s: a process span is the producer span's child", id)
		assert.Equal(t, handled[id].SpanID(), p.SpanContext.SpanID(), id)
	}
}

// A PublishAsync message that is never sent (its context ended while it
// was queued, or TryPublishAsync found the queue full) still ends its
// producer span, with the error the callback or the caller got.
func TestTraceAsyncNotSent(t *testing.T) {
	s := newSetup(t, "")
	reg := kavari.NewRegistry()
	require.NoError(t, reg.Declare(&asyncOrder{}))
	k := s.kavari(t, "", reg, true, func(c *kavari.Config) {
		c.Consume.GroupID = ""
		c.Publish.AsyncWorkers = 1
		c.Publish.AsyncQueue = 1
	})
	require.NoError(t, k.EnsureTopics(context.Background()))
	release := make(chan struct{})
	first := make(chan error, 1)
	// The first callback holds the only writer, so what follows stays queued.
	k.PublishAsync(context.Background(), &asyncOrder{ID: "n-1"}, func(_ kavari.Receipt, err error) {
		first <- err
		<-release
	})
	select {
	case err := <-first:
		require.NoError(t, err)
	case <-time.After(60 * time.Second):
		t.Fatal("the first callback never ran")
	}
	ctx, cancel := context.WithCancel(context.Background())
	expired := make(chan error, 1)
	k.PublishAsync(ctx, &asyncOrder{ID: "n-2"}, func(_ kavari.Receipt, err error) { expired <- err })
	full := k.TryPublishAsync(context.Background(), &asyncOrder{ID: "n-3"}, nil)
	require.ErrorIs(t, full, kavari.ErrQueueFull)
	cancel()
	close(release)
	select {
	case err := <-expired:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(60 * time.Second):
		t.Fatal("the expired message's callback never ran")
	}
	send := s.spansNamed("send kavari-otel-async")
	require.Len(t, send, 3, "every producer span ended")
	byKey := map[string]codes.Code{}
	for _, sp := range send {
		byKey[attr(sp, "messaging.kafka.message.key").AsString()] = sp.Status.Code
	}
	assert.Equal(t, map[string]codes.Code{"n-1": codes.Unset, "n-2": codes.Error, "n-3": codes.Error}, byKey)
}
