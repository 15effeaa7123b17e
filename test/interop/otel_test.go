package interop

import (
	"context"
	"strconv"
	"strings"
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

// TestPythonPublishesGoTraces: records published by the Python kavari carry
// no trace context. A Go consumer with kavariotel installed handles each in
// a root "process" span of a new trace (no parent, no link, no error), one
// trace per record, with the messaging attributes of the record; none is
// counted as a malformed context, none is dead-lettered.
func TestPythonPublishesGoTraces(t *testing.T) {
	brokers := testenv.RequireReal(t)
	python(t)
	ensureTopic(t, brokers)
	const n = 5
	prefix := testenv.ID("pyotel")

	pub := runPy(t, 3*time.Minute, "publish.py", "--brokers", strings.Join(brokers, ","), "--topic", interopTopic,
		"--count", strconv.Itoa(n), "--prefix", prefix)
	require.Equal(t, 0, pub.Code, "publish.py failed:\nstdout:\n%s\nstderr:\n%s", pub.Stdout, pub.Stderr)
	type where struct{ partition, offset int64 }
	delivered := map[string]where{}
	for _, d := range pub.withKey("delivered") {
		require.Equal(t, true, d["delivered"], "%v", d)
		delivered[d["id"].(string)] = where{int64(d["partition"].(float64)), int64(d["offset"].(float64))}
	}
	require.Len(t, delivered, n)

	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	reader := sdkmetric.NewManualReader()
	group := testenv.ID("interop-otel")
	inst := kavariotel.New(kavariotel.Config{TracerProvider: tp, MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)), ConsumerGroup: group})

	var mu sync.Mutex
	handled := map[string]trace.SpanContext{}
	reg := kavari.NewRegistry()
	require.NoError(t, kavari.RegisterFuncOn(reg, &InteropMessage{}, func(ctx context.Context, m *InteropMessage) error {
		if strings.HasPrefix(m.ID, prefix+"-") {
			mu.Lock()
			handled[m.ID] = trace.SpanContextFromContext(ctx)
			mu.Unlock()
		}
		return nil
	}))
	k, err := kavari.New(kavari.Config{
		Brokers:    brokers,
		Transport:  testkit.Transport(),
		Registry:   reg,
		Logger:     quiet(),
		Hooks:      []kavari.Hook{inst},
		Middleware: []kavari.Middleware{inst.Middleware()},
		Consume:    kavari.ConsumeConfig{GroupID: group, Retry: kavari.NoRetry()},
	})
	require.NoError(t, err)
	require.NoError(t, k.Start(context.Background()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = k.Stop(ctx)
	})
	deadline := time.Now().Add(90 * time.Second)
	for {
		mu.Lock()
		c := len(handled)
		mu.Unlock()
		if c == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Go handled %d of %d Python-published messages; health %+v", c, n, k.Health())
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The process span of each of this run's records, by id.
	procs := map[string]tracetest.SpanStub{}
	for _, sp := range spans.GetSpans() {
		if sp.Name != "process "+interopTopic {
			continue
		}
		if key := spanAttr(sp, "messaging.kafka.message.key"); strings.HasPrefix(key.AsString(), prefix+"-") {
			procs[key.AsString()] = sp
		}
	}
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, procs, n)
	traces := map[trace.TraceID]bool{}
	for id, sp := range procs {
		assert.False(t, sp.Parent.IsValid(), "%s: a root span", id)
		assert.Empty(t, sp.Links, id)
		assert.Equal(t, trace.SpanKindConsumer, sp.SpanKind, id)
		assert.Equal(t, codes.Unset, sp.Status.Code, id)
		assert.Equal(t, handled[id].SpanID(), sp.SpanContext.SpanID(), "%s: the handler's context holds its span", id)
		traces[sp.SpanContext.TraceID()] = true
		assert.Equal(t, "kafka", spanAttr(sp, "messaging.system").AsString(), id)
		assert.Equal(t, interopTopic, spanAttr(sp, "messaging.destination.name").AsString(), id)
		assert.Equal(t, strconv.FormatInt(delivered[id].partition, 10), spanAttr(sp, "messaging.destination.partition.id").AsString(), id)
		assert.Equal(t, delivered[id].offset, spanAttr(sp, "messaging.kafka.offset").AsInt64(), id)
		assert.Equal(t, group, spanAttr(sp, "messaging.consumer.group.name").AsString(), id)
		assert.Equal(t, "InteropMessage", spanAttr(sp, "kavari.message.type").AsString(), id)
		assert.Empty(t, spanAttr(sp, "messaging.message.id").AsString(), "%s: no ce_id, no message id", id)
	}
	assert.Len(t, traces, n, "one new trace per record")
	assert.Zero(t, k.Health().DeadLettered)
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			assert.NotEqual(t, kavariotel.MetricInvalidContext, m.Name, "no record counted as a malformed trace context: %+v", m.Data)
		}
	}
}

func spanAttr(sp tracetest.SpanStub, key string) attribute.Value {
	for _, a := range sp.Attributes {
		if string(a.Key) == key {
			return a.Value
		}
	}
	return attribute.Value{}
}
