// Package kavariotel instruments kavari with OpenTelemetry: a producer span
// per published message and a consumer "process" span per handler attempt,
// following the OpenTelemetry messaging semantic conventions for Kafka, with
// the W3C trace context carried in record headers; and the metrics an
// operator pages on (publishes, handler durations, retries, dead letters,
// in-flight records, async queue depth, rebalances, commit latency and
// consumer lag per partition).
//
// It is its own module, so that kavari's users do not inherit OpenTelemetry.
// Install it with kavari's hooks and middleware:
//
//	inst := kavariotel.New(kavariotel.Config{ConsumerGroup: "billing"})
//	k, err := kavari.New(kavari.Config{
//		Brokers:    brokers,
//		Consume:    kavari.ConsumeConfig{GroupID: "billing"},
//		Hooks:      []kavari.Hook{inst},
//		Middleware: []kavari.Middleware{inst.Middleware()},
//	})
//	// ...
//	err = inst.Observe(k) // gauges read from k.Health()
//
// Trace context: a message published with a context holding a span gets a
// "send" producer span, child of that span, whose context travels in the
// traceparent and tracestate headers, and also as the CloudEvents
// distributed-tracing extension (ce_traceparent, ce_tracestate), which the
// Python kavari and CloudEvents SDKs read. Each handler attempt gets a
// "process" consumer span whose parent is the producer span and which also
// links to it: kavari handles records one at a time, so parenting gives one
// trace from the Publish call through Kafka into the handler and its
// retries, which is what one looks for when following a message, while the
// link is what the conventions ask of a consumer span and what batch-aware
// backends use. A record without trace headers (published by a client that
// does not trace) starts a new trace; malformed headers are ignored,
// counted in kavari.trace.context.invalid, and never fail the record. The
// handler's context carries the process span, so what the handler publishes
// joins the trace.
package kavariotel

import (
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/kavari-go/kavari"
)

// ScopeName is the instrumentation scope of kavariotel's tracer and meter.
const ScopeName = "github.com/kavari-go/kavari/otel"

// Config configures an Instrumentation. The zero value uses the global
// providers and propagator.
type Config struct {
	// TracerProvider creates the spans; default otel.GetTracerProvider().
	TracerProvider trace.TracerProvider
	// MeterProvider creates the instruments; default otel.GetMeterProvider().
	MeterProvider metric.MeterProvider
	// Propagator reads and writes trace context in record headers; default
	// W3C trace context (traceparent, tracestate). The global propagator is
	// not the default: it is a no-op unless the application set one.
	Propagator propagation.TextMapPropagator
	// ConsumerGroup is the messaging.consumer.group.name of consumer spans
	// and metrics: the kavari Config.Consume.GroupID. Empty leaves it out.
	ConsumerGroup string
}

// Instrumentation is a kavari hook (install it in Config.Hooks) whose
// Middleware is installed in Config.Middleware. Safe for concurrent use; one
// Instrumentation serves one Client.
type Instrumentation struct {
	cfg    Config
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
	m      *instruments

	// w3c: the propagator is the default, W3C trace context, which
	// kavariotel reads and writes itself, sparing the propagator's
	// allocations.
	w3c bool

	// sends holds the producer spans between OnPublishBefore and
	// OnPublishAfter, by span id (the id travels in the record's headers).
	sends spanShards[trace.SpanID]
	// failed holds the process spans of attempts that failed until the
	// retry or dead-letter hook adds its event and ends them; nfailed
	// counts them.
	failed    sync.Map // attemptKey → trace.Span
	nfailed   atomic.Int64
	sets      sync.Map // setKey → metric.MeasurementOption
	procs     sync.Map // procKey → *procInfo
	fetched   sync.Map // setKey → *fetchCount
	sendInfos sync.Map // topic → *sendInfo
}

// New returns an Instrumentation for cfg.
func New(cfg Config) *Instrumentation {
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = otel.GetTracerProvider()
	}
	if cfg.MeterProvider == nil {
		cfg.MeterProvider = otel.GetMeterProvider()
	}
	w3c := cfg.Propagator == nil
	if w3c {
		cfg.Propagator = propagation.TraceContext{}
	}
	i := &Instrumentation{
		cfg:    cfg,
		tracer: cfg.TracerProvider.Tracer(ScopeName, trace.WithInstrumentationVersion(version)),
		prop:   cfg.Propagator,
		w3c:    w3c,
	}
	i.m = newInstruments(cfg.MeterProvider.Meter(ScopeName, metric.WithInstrumentationVersion(version)))
	// The registration lasts as long as the MeterProvider: one
	// Instrumentation serves one Client for its lifetime.
	_, _ = i.m.meter.RegisterCallback(i.observeFetched, i.m.consumed)
	return i
}

// version is kavariotel's instrumentation version.
const version = "0.1.0"

var (
	_ kavari.HookPublishBefore  = (*Instrumentation)(nil)
	_ kavari.HookPublishAfter   = (*Instrumentation)(nil)
	_ kavari.HookAssigned       = (*Instrumentation)(nil)
	_ kavari.HookRevoked        = (*Instrumentation)(nil)
	_ kavari.HookCommitted      = (*Instrumentation)(nil)
	_ kavari.HookRetryScheduled = (*Instrumentation)(nil)
	_ kavari.HookDeadLettered   = (*Instrumentation)(nil)
	_ kavari.HookFetched        = (*Instrumentation)(nil)
	_ kavari.HookTransaction    = (*Instrumentation)(nil)
)
