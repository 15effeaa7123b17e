package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kotel"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/kavari-go/kavari"
	kavariotel "github.com/kavari-go/kavari/otel"
)

// The OpenTelemetry workload: the same consumers as consume/, without and
// with tracing and metrics, on records that carry a W3C traceparent header
// (one in ten says its trace is sampled), so that the per-record cost of
// kavariotel on kavari and of franz-go's own kotel plugin on raw franz-go can
// be put side by side.

// otelPairs are the clients of the otel workload: each instrumented client
// and the same client without instrumentation.
var otelPairs = []struct{ plain, instrumented string }{
	{"kavari", "kavari+otel"},
	{implKavariFranz, implKavariFranz + "+otel"},
	{"franz-go+json+validate", "franz-go+json+validate+kotel"},
	{"franz-go+json+validate", "franz-go+json+validate+kotel-process"},
}

// otelImpls are the clients of the otel workload, each once.
var otelImpls = []string{"kavari", "kavari+otel", implKavariFranz, implKavariFranz + "+otel",
	"franz-go+json+validate", "franz-go+json+validate+kotel", "franz-go+json+validate+kotel-process"}

func otelID(impl string) string { return "otel/100B/" + impl }

// otelSampler is the sampler of every instrumented client: the producer's
// decision where the record carries one (every record here does), 10 % of
// new traces otherwise. It is kavariotel's benchmark's sampler.
func otelSampler() sdktrace.Sampler {
	return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0.1))
}

// otelProviders return a tracer provider whose spans are batched to an
// exporter that drops them, and a meter provider with a manual reader
// (instruments record; nothing collects), for either instrumentation.
func otelProviders() (*sdktrace.TracerProvider, *sdkmetric.MeterProvider) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(otelSampler()), sdktrace.WithBatcher(tracetest.NewNoopExporter()))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	return tp, mp
}

// kavariOtel installs kavariotel (its hooks and its middleware) in cfg.
func kavariOtel(cfg *kavari.Config) {
	tp, mp := otelProviders()
	inst := kavariotel.New(kavariotel.Config{TracerProvider: tp, MeterProvider: mp, ConsumerGroup: cfg.Consume.GroupID})
	cfg.Hooks = append(cfg.Hooks, inst)
	cfg.Middleware = append(cfg.Middleware, inst.Middleware())
}

// kotelHooks returns franz-go's kotel plugin as kgo hooks (a "receive" span
// per record, from fetched to polled, and kotel's meter) with the same
// providers and sampler, the W3C propagator, and the consumer group named.
func kotelHooks(group string) (*kotel.Tracer, kgo.Opt) {
	tp, mp := otelProviders()
	tr := kotel.NewTracer(kotel.TracerProvider(tp), kotel.TracerPropagator(propagation.TraceContext{}), kotel.ConsumerGroup(group))
	k := kotel.NewKotel(kotel.WithTracer(tr), kotel.WithMeter(kotel.NewMeter(kotel.MeterProvider(mp))))
	return tr, kgo.WithHooks(k.Hooks()...)
}

// runOtelConsume is runConsume's part for the instrumented clients.
func runOtelConsume(ctx context.Context, s *spec, c *counter) (stop func(), err error) {
	switch s.Impl {
	case "kavari+otel", implKavariFranz + "+otel":
		plain := *s
		plain.Impl = strings.TrimSuffix(s.Impl, "+otel")
		return kavariConsume(ctx, &plain, func(context.Context, *BenchMessage) error { c.hit(); return nil }, kavariOtel)
	case "franz-go+json+validate+kotel":
		v := newRawValidator()
		_, hooks := kotelHooks(s.Group)
		return franzConsume(ctx, s, func(r *kgo.Record) {
			if v.decode(r.Value) {
				c.hit()
			}
		}, hooks)
	case "franz-go+json+validate+kotel-process":
		// kotel's receive spans and, as its README shows, a process span
		// around the handling of each record.
		v := newRawValidator()
		tr, hooks := kotelHooks(s.Group)
		return franzConsume(ctx, s, func(r *kgo.Record) {
			_, span := tr.WithProcessSpan(r)
			ok := v.decode(r.Value)
			span.End()
			if ok {
				c.hit()
			}
		}, hooks)
	}
	return nil, fmt.Errorf("unknown impl %q", s.Impl)
}

// otel consumes -consume-n traced 100-byte records with every otelImpls
// client, -reps times interleaved.
func (b *bench) otel() {
	var ids []string
	for _, impl := range otelImpls {
		if b.want(otelID(impl)) {
			ids = append(ids, otelID(impl))
		}
	}
	if len(ids) == 0 {
		return
	}
	// Traceparents as a traced producer writes them: random trace and span
	// ids (seeded), one record in ten sampled.
	rnd := rand.New(rand.NewPCG(uint64(b.o.seed), 0x6f74656c))
	err := b.fillRecords(b.o.consumeN, 100, b.o.partitions, nil, func(i int, r *kgo.Record) {
		flags := "00"
		if i%10 == 0 {
			flags = "01"
		}
		tp := fmt.Sprintf("00-%016x%016x-%016x-%s", rnd.Uint64(), rnd.Uint64(), rnd.Uint64()|1, flags)
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: "traceparent", Value: []byte(tp)})
	})
	if err != nil {
		b.fail("otel/100B", err)
		return
	}
	for rep := 0; rep < max(b.o.reps, 1); rep++ {
		for _, impl := range otelImpls {
			id := otelID(impl)
			if !b.want(id) {
				continue
			}
			s := b.base(id, "consume", impl)
			s.Size, s.Count = 100, b.o.consumeN
			b.runSpec(s, false)
		}
	}
}

// cpuTime is the CPU time (user and system) this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
