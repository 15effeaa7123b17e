package kavariotel_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/internal/testkit"
	kavariotel "github.com/kavari-go/kavari/otel"
)

// Each test registers its own message type on its own topic and registry.

type order struct {
	kavari.Message `kavari:"topic=kavari-otel-order,key=ID"`
	ID             string `json:"id"`
}

type dlqOrder struct {
	kavari.Message `kavari:"topic=kavari-otel-dlq,key=ID"`
	ID             string `json:"id"`
}

type badOrder struct {
	kavari.Message `kavari:"topic=kavari-otel-bad,key=ID"`
	ID             string `json:"id"`
}

type lagOrder struct {
	kavari.Message `kavari:"topic=kavari-otel-lag,key=ID"`
	ID             string `json:"id"`
}

type audit struct {
	kavari.Message `kavari:"topic=kavari-otel-audit,key=ID"`
	ID             string `json:"id"`
}

type setup struct {
	spans   *tracetest.InMemoryExporter
	reader  *sdkmetric.ManualReader
	tp      *sdktrace.TracerProvider
	inst    *kavariotel.Instrumentation
	brokers []string
}

func newSetup(t *testing.T, group string) *setup {
	t.Helper()
	brokers, _ := testenv.Brokers(t)
	s := &setup{spans: tracetest.NewInMemoryExporter(), reader: sdkmetric.NewManualReader(), brokers: brokers}
	s.tp = sdktrace.NewTracerProvider(sdktrace.WithSyncer(s.spans), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(s.reader))
	s.inst = kavariotel.New(kavariotel.Config{TracerProvider: s.tp, MeterProvider: mp, ConsumerGroup: group})
	return s
}

func quiet() *slog.Logger {
	if os.Getenv("KAVARI_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// kavariFor returns a started-to-be Client instrumented by s (nil: not
// instrumented), with reg's handlers.
func (s *setup) kavari(t *testing.T, group string, reg *kavari.Registry, instrumented bool, mutate ...func(*kavari.Config)) *kavari.Client {
	t.Helper()
	cfg := kavari.Config{
		Brokers:  s.brokers,
		Registry: reg,
		Logger:   quiet(),
		Consume: kavari.ConsumeConfig{
			GroupID:           group,
			CommitInterval:    100 * time.Millisecond,
			Retry:             kavari.ConstantRetry(10*time.Millisecond, 3),
			SessionTimeout:    6 * time.Second,
			HeartbeatInterval: time.Second,
			DrainTimeout:      2 * time.Second,
		},
		Topics: kavari.TopicConfig{
			Create:     true,
			Partitions: 1,
		},
	}
	testkit.UseTransport(&cfg)
	if instrumented {
		cfg.Hooks = []kavari.Hook{s.inst}
		cfg.Middleware = []kavari.Middleware{s.inst.Middleware()}
	}
	for _, m := range mutate {
		m(&cfg)
	}
	k, err := kavari.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = k.Stop(ctx)
	})
	return k
}

// eventually waits for cond; on time-out it fails with what says (called
// then, so it shows the state at the end).
func eventually(t *testing.T, cond func() bool, says func() string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(says())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *setup) spansNamed(name string) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, sp := range s.spans.GetSpans() {
		if sp.Name == name {
			out = append(out, sp)
		}
	}
	return out
}

func attr(sp tracetest.SpanStub, key string) attribute.Value {
	for _, a := range sp.Attributes {
		if string(a.Key) == key {
			return a.Value
		}
	}
	return attribute.Value{}
}

// sum returns the value of counter name for the points whose attributes
// include want.
func (s *setup) sum(t *testing.T, name string, want ...attribute.KeyValue) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, s.reader.Collect(context.Background(), &rm))
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					if has(p.Attributes, want) {
						n += p.Value
					}
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					if has(p.Attributes, want) {
						n += p.Value
					}
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					if has(p.Attributes, want) {
						n += int64(p.Count)
					}
				}
			case metricdata.Histogram[int64]:
				for _, p := range d.DataPoints {
					if has(p.Attributes, want) {
						n += p.Sum
					}
				}
			}
		}
	}
	return n
}

func has(set attribute.Set, want []attribute.KeyValue) bool {
	for _, kv := range want {
		if v, ok := set.Value(kv.Key); !ok || v != kv.Value {
			return false
		}
	}
	return true
}

// A message published inside a parent span arrives in the handler with the
// same trace id; the process span is the producer span's child and links to
// it; what the handler publishes joins the trace.
func TestTraceFollowsMessage(t *testing.T) {
	group := testenv.ID("otel-trace")
	s := newSetup(t, group)
	reg := kavari.NewRegistry()
	got := make(chan trace.SpanContext, 1)
	var k *kavari.Client
	require.NoError(t, kavari.RegisterFuncOn(reg, &order{}, func(ctx context.Context, m *order) error {
		if m.ID != "o-1" {
			return nil
		}
		got <- trace.SpanContextFromContext(ctx)
		_, err := k.Publish(ctx, &audit{ID: m.ID})
		return err
	}))
	require.NoError(t, reg.Declare(&audit{}))
	k = s.kavari(t, group, reg, true)
	require.NoError(t, k.Start(context.Background()))

	ctx, parent := s.tp.Tracer("test").Start(context.Background(), "request")
	_, err := k.Publish(ctx, &order{ID: "o-1"})
	require.NoError(t, err)
	parent.End()
	var sc trace.SpanContext
	select {
	case sc = <-got:
	case <-time.After(60 * time.Second):
		t.Fatal("the handler never ran")
	}
	assert.Equal(t, parent.SpanContext().TraceID(), sc.TraceID(), "the handler runs in the publisher's trace")
	eventually(t, func() bool { return len(s.spansNamed("send kavari-otel-audit")) == 1 }, func() string { return "the handler's publish has no span" })

	send := s.spansNamed("send kavari-otel-order")
	require.Len(t, send, 1)
	assert.Equal(t, trace.SpanKindProducer, send[0].SpanKind)
	assert.Equal(t, parent.SpanContext().SpanID(), send[0].Parent.SpanID())
	assert.Equal(t, "kafka", attr(send[0], "messaging.system").AsString())
	assert.Equal(t, "send", attr(send[0], "messaging.operation.name").AsString())
	assert.Equal(t, "kavari-otel-order", attr(send[0], "messaging.destination.name").AsString())
	assert.Equal(t, "0", attr(send[0], "messaging.destination.partition.id").AsString())
	assert.Equal(t, "o-1", attr(send[0], "messaging.kafka.message.key").AsString())
	assert.NotEmpty(t, attr(send[0], "messaging.message.id").AsString())

	proc := s.spansNamed("process kavari-otel-order")
	require.Len(t, proc, 1)
	p := proc[0]
	assert.Equal(t, trace.SpanKindConsumer, p.SpanKind)
	assert.Equal(t, send[0].SpanContext.SpanID(), p.Parent.SpanID(), "parented by the producer span")
	require.Len(t, p.Links, 1)
	assert.Equal(t, send[0].SpanContext.SpanID(), p.Links[0].SpanContext.SpanID(), "linked to the producer span")
	assert.Equal(t, sc.SpanID(), p.SpanContext.SpanID())
	assert.Equal(t, group, attr(p, "messaging.consumer.group.name").AsString())
	assert.Equal(t, "process", attr(p, "messaging.operation.type").AsString())
	assert.Equal(t, int64(1), attr(p, "kavari.attempt").AsInt64())
	assert.Equal(t, "order", attr(p, "kavari.message.type").AsString())
	assert.Equal(t, attr(send[0], "messaging.kafka.offset"), attr(p, "messaging.kafka.offset"))

	audit := s.spansNamed("send kavari-otel-audit")[0]
	assert.Equal(t, p.SpanContext.SpanID(), audit.Parent.SpanID(), "the handler's publish is the process span's child")
	assert.Equal(t, sc.TraceID(), audit.SpanContext.TraceID())
}

// A record retried twice and then dead-lettered: three process spans with
// error status, retry events on the first two, the dead-letter event on the
// third; counters exact.
func TestTraceRetriedThenDeadLettered(t *testing.T) {
	group := testenv.ID("otel-dlq")
	s := newSetup(t, group)
	reg := kavari.NewRegistry()
	require.NoError(t, kavari.RegisterFuncOn(reg, &dlqOrder{}, func(ctx context.Context, m *dlqOrder) error {
		return errors.New("boom")
	}))
	k := s.kavari(t, group, reg, true)
	require.NoError(t, k.Start(context.Background()))
	_, err := k.Publish(context.Background(), &dlqOrder{ID: "o-2"})
	require.NoError(t, err)
	eventually(t, func() bool { return k.Health().DeadLettered == 1 }, func() string { return fmt.Sprintf("not dead-lettered: %+v", k.Health()) })
	eventually(t, func() bool { return len(s.spansNamed("process kavari-otel-dlq")) == 3 }, func() string { return fmt.Sprintf("process spans: %d", len(s.spansNamed("process kavari-otel-dlq"))) })

	proc := s.spansNamed("process kavari-otel-dlq")
	send := s.spansNamed("send kavari-otel-dlq")
	require.Len(t, send, 1)
	for i, p := range proc {
		assert.Equal(t, int64(i+1), attr(p, "kavari.attempt").AsInt64())
		assert.Equal(t, codes.Error, p.Status.Code)
		assert.Equal(t, "boom", p.Status.Description)
		assert.Equal(t, send[0].SpanContext.TraceID(), p.SpanContext.TraceID())
		var names []string
		for _, ev := range p.Events {
			names = append(names, ev.Name)
		}
		want := []string{"exception", kavariotel.EventRetryScheduled}
		if i == 2 {
			want = []string{"exception", kavariotel.EventDeadLettered}
		}
		assert.Equal(t, want, names, "attempt %d", i+1)
	}
	topic := attribute.String("messaging.destination.name", "kavari-otel-dlq")
	assert.Equal(t, int64(1), s.sum(t, kavariotel.MetricSent, topic))
	assert.Equal(t, int64(3), s.sum(t, kavariotel.MetricProcessDuration, topic, attribute.String("error.type", "_OTHER")))
	assert.Equal(t, int64(2), s.sum(t, kavariotel.MetricRetries, topic))
	assert.Equal(t, int64(1), s.sum(t, kavariotel.MetricDeadLetters, topic, attribute.String("kavari.error.kind", "handler")))
	assert.Equal(t, int64(1), s.sum(t, kavariotel.MetricConsumed, topic))
}

// Records without trace headers (as the Python kavari publishes them) start a
// new trace; a malformed traceparent is ignored and counted, and the record
// is handled, not dead-lettered.
func TestTraceMissingOrMalformedContext(t *testing.T) {
	group := testenv.ID("otel-bad")
	s := newSetup(t, group)
	reg := kavari.NewRegistry()
	var mu sync.Mutex
	handled := map[string]trace.SpanContext{}
	require.NoError(t, kavari.RegisterFuncOn(reg, &badOrder{}, func(ctx context.Context, m *badOrder) error {
		mu.Lock()
		defer mu.Unlock()
		handled[m.ID] = trace.SpanContextFromContext(ctx)
		return nil
	}))
	k := s.kavari(t, group, reg, true)
	require.NoError(t, k.Start(context.Background()))
	plain := s.kavari(t, "", kavari.NewRegistry(), false)
	ctx := context.Background()
	_, err := plain.Publish(ctx, &badOrder{ID: "none"})
	require.NoError(t, err)
	_, err = plain.Publish(kavari.WithHeaders(ctx, kavari.Header{Key: "traceparent", Value: []byte("00-zzzz-not-a-trace-01")}), &badOrder{ID: "bad"})
	require.NoError(t, err)
	eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(handled) == 2 }, func() string { return "not handled" })
	eventually(t, func() bool { return len(s.spansNamed("process kavari-otel-bad")) == 2 }, func() string { return "process spans" })
	for _, p := range s.spansNamed("process kavari-otel-bad") {
		assert.False(t, p.Parent.IsValid(), "a new trace")
		assert.Empty(t, p.Links)
		assert.Equal(t, codes.Unset, p.Status.Code)
	}
	mu.Lock()
	assert.NotEqual(t, handled["none"].TraceID(), handled["bad"].TraceID())
	assert.True(t, handled["bad"].IsValid())
	mu.Unlock()
	assert.Equal(t, int64(1), s.sum(t, kavariotel.MetricInvalidContext))
	assert.Equal(t, int64(0), k.Health().DeadLettered)
}

// Consumer lag per partition rises while the consumer cannot keep up (its
// handler is blocked) and falls to 0 once it caught up and committed.
func TestLagGauge(t *testing.T) {
	group := testenv.ID("otel-lag")
	s := newSetup(t, group)
	reg := kavari.NewRegistry()
	release := make(chan struct{})
	require.NoError(t, kavari.RegisterFuncOn(reg, &lagOrder{}, func(ctx context.Context, m *lagOrder) error {
		select {
		case <-release:
		case <-ctx.Done():
			return ctx.Err()
		}
		return nil
	}))
	k := s.kavari(t, group, reg, true)
	_, err := s.inst.Observe(k)
	require.NoError(t, err)
	require.NoError(t, k.Start(context.Background()))
	eventually(t, func() bool { return len(k.Health().Assigned["kavari-otel-lag"]) == 1 }, func() string { return "not assigned" })
	lag := func() int64 {
		return s.sum(t, kavariotel.MetricLag, attribute.String("messaging.destination.name", "kavari-otel-lag"), attribute.String("messaging.destination.partition.id", "0"))
	}
	for i := range 5 {
		_, err := k.Publish(context.Background(), &lagOrder{ID: string(rune('a' + i))})
		require.NoError(t, err)
	}
	eventually(t, func() bool { return lag() == 5 }, func() string { return fmt.Sprintf("lag never reached 5: %d, %+v", lag(), k.Health().Positions) })
	close(release)
	eventually(t, func() bool { return lag() == 0 }, func() string { return fmt.Sprintf("lag never fell to 0: %d, %+v", lag(), k.Health().Positions) })
}

// gauge returns the value of gauge name at the point whose attributes
// include want, and whether there is one.
func (s *setup) gauge(t *testing.T, name string, want ...attribute.KeyValue) (int64, bool) {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, s.reader.Collect(context.Background(), &rm))
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if d, ok := m.Data.(metricdata.Gauge[int64]); ok && m.Name == name {
				for _, p := range d.DataPoints {
					if has(p.Attributes, want) {
						return p.Value, true
					}
				}
			}
		}
	}
	return 0, false
}
