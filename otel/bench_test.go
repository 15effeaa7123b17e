package kavariotel_test

// A/B of the instrumentation's cost, on the embedded broker, in one run:
//
//	go test -run '^$' -bench . -benchmem ./otel
//
// BenchmarkConsume handles the same pre-published records (with trace
// context headers) with a no-op handler, "plain" without instrumentation,
// "otel" with tracing (always sampling, spans to a no-op exporter) and
// metrics (SDK meter, manual reader) on, "sampled" the same with 10 % of
// the traces sampled (the producer's decision, ParentBased). ns/msg is the
// wall time from the first record handled to the last, cpu-ns/msg the
// process's CPU time (kavari, the embedded broker, the span processor) from
// Start to the last record. BenchmarkPublish publishes batches of 100 the
// same ways.

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/kavaritest"
	kavariotel "github.com/kavari-go/kavari/otel"
)

const benchN = 20_000

type benchMsg struct {
	kavari.Message `kavari:"topic=kavari-otel-bench,key=ID,name=otel.bench"`
	ID             string `json:"id" validate:"required"`
	Seq            int    `json:"seq" validate:"gte=0"`
	Payload        string `json:"payload"`
}

// benchInst returns an Instrumentation whose spans sampler samples and
// exports nowhere.
func benchInst(sampler sdktrace.Sampler) *kavariotel.Instrumentation {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sampler), sdktrace.WithBatcher(tracetest.NewNoopExporter()))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	return kavariotel.New(kavariotel.Config{TracerProvider: tp, MeterProvider: mp, ConsumerGroup: "bench"})
}

// The variants of a benchmark: "plain" installs nothing; "otel" traces
// (sampling every span) and measures; "sampled" does so with a sampler that
// follows the producer's decision and samples 10 % of new traces.
var variants = []string{"plain", "otel", "sampled", "plain", "otel", "sampled"}

// tenPercent samples 10 % of new traces and follows the parent's decision.
var tenPercent = sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0.1))

func instrument(cfg *kavari.Config, variant string) {
	var inst *kavariotel.Instrumentation
	switch variant {
	case "otel":
		inst = benchInst(sdktrace.AlwaysSample())
	case "sampled":
		inst = benchInst(tenPercent)
	default:
		return
	}
	cfg.Hooks = []kavari.Hook{inst}
	cfg.Middleware = []kavari.Middleware{inst.Middleware()}
}

func BenchmarkConsume(b *testing.B) {
	broker := kavaritest.NewBroker(b, kavaritest.Partitions(3), kavaritest.Topics("kavari-otel-bench", "kavari-otel-bench.dlq"))
	brokers := broker.Addrs()
	fill(b, brokers)
	for _, variant := range variants {
		b.Run(variant, func(b *testing.B) {
			var busy, cpu time.Duration
			iterations := 0
			for b.Loop() {
				iterations++
				var n, first, last atomic.Int64
				done := make(chan struct{})
				reg := kavari.NewRegistry()
				if err := kavari.RegisterFuncOn(reg, &benchMsg{}, func(context.Context, *benchMsg) error {
					now := time.Now().UnixNano()
					first.CompareAndSwap(0, now)
					if n.Add(1) == benchN {
						last.Store(now)
						close(done)
					}
					return nil
				}); err != nil {
					b.Fatal(err)
				}
				cfg := kavari.Config{Brokers: brokers, Registry: reg, Logger: quiet(), Consume: kavari.ConsumeConfig{GroupID: testenv.ID("bench")}}
				instrument(&cfg, variant)
				k, err := kavari.New(cfg)
				if err != nil {
					b.Fatal(err)
				}
				cpu0 := cpuTime()
				if err := k.Start(context.Background()); err != nil {
					b.Fatal(err)
				}
				select {
				case <-done:
				case <-time.After(2 * time.Minute):
					b.Fatalf("%d of %d records handled", n.Load(), benchN)
				}
				cpu += cpuTime() - cpu0
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				_ = k.Stop(ctx)
				cancel()
				busy += time.Duration(last.Load() - first.Load())
			}
			b.ReportMetric(float64(busy.Nanoseconds())/float64(iterations*benchN), "ns/msg")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(iterations*benchN), "cpu-ns/msg")
		})
	}
}

func fill(b *testing.B, brokers []string) {
	b.Helper()
	// Published traced, as a traced service would: each record carries the
	// traceparent of its producer span, which the "otel" and "sampled"
	// consumers parent and link their process spans to (and "plain"
	// ignores).
	cfg := kavari.Config{Brokers: brokers, Registry: kavari.NewRegistry(), Logger: quiet()}
	inst := benchInst(tenPercent) // 10 % of the records say their trace is sampled
	cfg.Hooks = []kavari.Hook{inst}
	k, err := kavari.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	defer func() { _ = k.Stop(ctx) }()
	payload := strings.Repeat("x", 60)
	batch := make([]kavari.Msg, 0, 1000)
	for i := 0; i < benchN; i++ {
		batch = append(batch, &benchMsg{ID: "m-" + strconv.Itoa(i), Seq: i, Payload: payload})
		if len(batch) == cap(batch) || i == benchN-1 {
			if _, err := k.PublishBatch(ctx, batch...); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
}

func BenchmarkPublish(b *testing.B) {
	broker := kavaritest.NewBroker(b, kavaritest.Partitions(3), kavaritest.Topics("kavari-otel-bench"))
	payload := strings.Repeat("x", 60)
	for _, variant := range variants {
		b.Run(variant, func(b *testing.B) {
			cfg := kavari.Config{Brokers: broker.Addrs(), Registry: kavari.NewRegistry(), Logger: quiet()}
			instrument(&cfg, variant)
			k, err := kavari.New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = k.Stop(context.Background()) }()
			batch := make([]kavari.Msg, 100)
			i := 0
			for b.Loop() {
				for j := range batch {
					batch[j] = &benchMsg{ID: "m-" + strconv.Itoa(i), Seq: i, Payload: payload}
					i++
				}
				if _, err := k.PublishBatch(context.Background(), batch...); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(i), "ns/msg")
		})
	}
}
