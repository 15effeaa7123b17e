package kavariotel

import (
	"context"
	"errors"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/kavari-go/kavari"
)

// Header names of the trace context: W3C trace context, and the same as the
// CloudEvents distributed-tracing extension in Kafka binary mode.
const (
	HeaderTraceparent   = "traceparent"
	HeaderTracestate    = "tracestate"
	HeaderCETraceparent = "ce_traceparent"
	HeaderCETracestate  = "ce_tracestate"
)

// Span events and attributes of kavariotel's own (not in the conventions).
const (
	EventRetryScheduled = "kavari.retry_scheduled"
	EventDeadLettered   = "kavari.dead_lettered"
	AttrAttempt         = attribute.Key("kavari.attempt")
	AttrHandler         = attribute.Key("kavari.handler")
	AttrMessageType     = attribute.Key("kavari.message.type")
	AttrRetryWait       = attribute.Key("kavari.retry.wait_ms")
	AttrErrorKind       = attribute.Key("kavari.error.kind")

	// AttrRetryTier is the retry tier (kavari.Record.RetryTier) a retry
	// runs in: 0 in place, n for a move to retry topic tier n. On
	// kavari.consumer.retries and the retry event.
	AttrRetryTier = attribute.Key("kavari.retry.tier")
)

// injector collects the headers a propagator writes.
type injector []kavari.Header

func (c *injector) Get(key string) string {
	for _, h := range *c {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

func (c *injector) Set(key, value string) {
	*c = append(*c, kavari.Header{Key: key, Value: []byte(value)})
	switch key {
	case HeaderTraceparent:
		*c = append(*c, kavari.Header{Key: HeaderCETraceparent, Value: []byte(value)})
	case HeaderTracestate:
		*c = append(*c, kavari.Header{Key: HeaderCETracestate, Value: []byte(value)})
	}
}

func (c *injector) Keys() []string {
	keys := make([]string, len(*c))
	for i, h := range *c {
		keys[i] = h.Key
	}
	return keys
}

// extractor reads a record's headers; traceparent and tracestate fall back
// to their CloudEvents names.
type extractor []kavari.Header

func (c extractor) get(key string) (string, bool) {
	for _, h := range c {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

func (c extractor) Get(key string) string {
	if v, ok := c.get(key); ok {
		return v
	}
	switch key {
	case HeaderTraceparent:
		v, _ := c.get(HeaderCETraceparent)
		return v
	case HeaderTracestate:
		v, _ := c.get(HeaderCETracestate)
		return v
	}
	return ""
}

func (c extractor) Set(string, string) {}

func (c extractor) Keys() []string {
	keys := make([]string, len(c))
	for i, h := range c {
		keys[i] = h.Key
	}
	return keys
}

// Span start options every producer or consumer span has.
var (
	sendStart = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(
		semconv.MessagingSystemKafka, semconv.MessagingOperationName("send"), semconv.MessagingOperationTypeSend)}
	consumerKind = trace.WithSpanKind(trace.SpanKindConsumer)
)

// OnPublishBefore starts the producer span of a message, child of the span
// in ctx, and returns the headers that carry its context. It implements
// kavari.HookPublishBefore.
func (i *Instrumentation) OnPublishBefore(ctx context.Context, _ kavari.Msg) []kavari.Header {
	ctx, span := i.tracer.Start(ctx, "send", sendStart...)
	sc := span.SpanContext()
	var hs []kavari.Header
	if i.w3c {
		if !sc.IsValid() {
			return nil
		}
		tp := formatTraceparent(sc)
		ts := sc.TraceState().String()
		n := 2
		if ts != "" {
			n = 4
		}
		hs = make([]kavari.Header, 0, n)
		hs = append(hs, kavari.Header{Key: HeaderTraceparent, Value: tp}, kavari.Header{Key: HeaderCETraceparent, Value: tp})
		if ts != "" {
			hs = append(hs, kavari.Header{Key: HeaderTracestate, Value: []byte(ts)}, kavari.Header{Key: HeaderCETracestate, Value: []byte(ts)})
		}
	} else {
		var in injector
		i.prop.Inject(ctx, &in)
		hs = in
	}
	if span.IsRecording() {
		id := sc.SpanID()
		i.sends.store(id[7], id, span)
	}
	return hs
}

// remote returns the span context r's headers carry, and whether they
// carry a traceparent that is malformed.
func (i *Instrumentation) remote(hs []kavari.Header) (sc trace.SpanContext, malformed bool) {
	if i.w3c {
		tp, ok := traceparentOf(hs)
		if !ok {
			return sc, false
		}
		c, ok := parseTraceparent(tp)
		if !ok {
			return sc, len(tp) > 0
		}
		c.Remote = true
		if ts := tracestateOf(hs); ts != "" {
			c.TraceState, _ = trace.ParseTraceState(ts) // a bad tracestate does not void the traceparent
		}
		return trace.NewSpanContext(c), false
	}
	carrier := extractor(hs)
	sc = trace.SpanContextFromContext(i.prop.Extract(context.Background(), carrier))
	return sc, !sc.IsValid() && carrier.Get(HeaderTraceparent) != ""
}

// OnPublishAfter ends the producer span of r and counts it. It implements
// kavari.HookPublishAfter.
func (i *Instrumentation) OnPublishAfter(ctx context.Context, r *kavari.Record, start time.Time, err error) {
	info := i.send(r.Topic)
	set := info.ok
	if err != nil {
		set = info.failed[errorIndex(err)]
	}
	i.m.sent.Add(ctx, 1, set)
	i.m.sendDuration.Record(ctx, time.Since(start).Seconds(), set)

	sc, _ := i.remote(r.Headers)
	id := sc.SpanID()
	span, ok := i.sends.take(id[7], id)
	if !ok {
		return
	}
	span.SetName(info.name)
	attrs := make([]attribute.KeyValue, 0, 6)
	attrs = append(attrs, info.dest)
	if err == nil {
		attrs = append(attrs, semconv.MessagingDestinationPartitionID(strconv.Itoa(r.Partition)), semconv.MessagingKafkaOffset(int(r.Offset)))
	}
	if r.Key != nil {
		attrs = append(attrs, semconv.MessagingKafkaMessageKey(string(r.Key)))
	}
	if r.ID != "" {
		attrs = append(attrs, semconv.MessagingMessageID(r.ID))
	}
	if r.Type != "" {
		attrs = append(attrs, AttrMessageType.String(r.Type))
	}
	if err != nil {
		attrs = append(attrs, semconv.ErrorTypeKey.String(errorType(err)))
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.SetAttributes(attrs...)
	span.End()
}

// attemptKey names a handler's attempts at a record.
type attemptKey struct {
	topic     string
	partition int
	offset    int64
	handler   string
}

// Middleware returns the middleware that runs each handler attempt in a
// "process" span and measures it. Install it first in Config.Middleware so
// that the others run inside the span.
func (i *Instrumentation) Middleware() kavari.Middleware {
	return func(next kavari.AttemptFunc) kavari.AttemptFunc {
		return func(ctx context.Context, msg any) error {
			r, ok := kavari.RecordFromContext(ctx)
			if !ok {
				if first, isBatch := kavari.BatchRecordFromContext(ctx, 0); isBatch {
					return i.processBatch(ctx, first, msg, next)
				}
				return next(ctx, msg)
			}
			handler := r.Handler
			info := i.proc(r.Topic, r.Partition, handler)
			if span, ok := i.takeFailed(attemptKey{r.Topic, r.Partition, r.Offset, handler}); ok {
				span.End() // no hook ended the previous attempt's span
			}
			ctx, span := i.startProcess(ctx, r, info)
			start := time.Now()
			err := next(ctx, msg)
			took := time.Since(start).Seconds()
			if err == nil {
				i.m.processDuration.Record(ctx, took, info.ok)
				span.End()
				return nil
			}
			e := errorIndex(err)
			i.m.processDuration.Record(ctx, took, info.failed[e])
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
			span.SetAttributes(semconv.ErrorTypeKey.String(errorTypes[e]))
			if span.IsRecording() {
				i.storeFailed(attemptKey{r.Topic, r.Partition, r.Offset, handler}, span) // ended by the retry or dead-letter hook
			} else {
				span.End()
			}
			return err
		}
	}
}

// processBatch runs a batch handler's attempt (first is its first record)
// in one "process" span linked to the producer span of each record that
// carries one, as the messaging conventions ask of batch processing (no
// record's producer span is its parent), and measures it and its size.
func (i *Instrumentation) processBatch(ctx context.Context, first *kavari.Record, msg any, next kavari.AttemptFunc) error {
	info := i.proc(first.Topic, first.Partition, first.Handler)
	var links []trace.Link
	n := 0
	for r := first; r != nil; n++ {
		if sc, malformed := i.remote(r.Headers); sc.IsValid() {
			links = append(links, trace.Link{SpanContext: sc})
		} else if malformed {
			i.m.invalidContext.Add(ctx, 1, info.invalid)
		}
		r, _ = kavari.BatchRecordFromContext(ctx, n+1)
	}
	ctx, span := i.tracer.Start(ctx, info.name, consumerKind, info.start, trace.WithLinks(links...))
	if span.IsRecording() {
		span.SetAttributes(semconv.MessagingBatchMessageCount(n), AttrAttempt.Int(first.Attempt))
	}
	i.m.batchSize.Record(ctx, int64(n), info.ok)
	start := time.Now()
	err := next(ctx, msg)
	took := time.Since(start).Seconds()
	if err == nil {
		i.m.processDuration.Record(ctx, took, info.ok)
		span.End()
		return nil
	}
	e := errorIndex(err)
	i.m.processDuration.Record(ctx, took, info.failed[e])
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
	span.SetAttributes(semconv.ErrorTypeKey.String(errorTypes[e]))
	span.End()
	return err
}

// storeFailed keeps the span of a failed attempt until a hook ends it.
func (i *Instrumentation) storeFailed(k attemptKey, span trace.Span) {
	if _, loaded := i.failed.Swap(k, span); !loaded {
		i.nfailed.Add(1)
	}
}

// takeFailed removes and returns the span of k's failed attempt. Without
// any, as when no handler fails, it costs no map lookup.
func (i *Instrumentation) takeFailed(k attemptKey) (trace.Span, bool) {
	if i.nfailed.Load() == 0 {
		return nil, false
	}
	v, ok := i.failed.LoadAndDelete(k)
	if !ok {
		return nil, false
	}
	i.nfailed.Add(-1)
	return v.(trace.Span), true
}

// startProcess starts a process span for r, parented by (and linked to) the
// producer span its headers carry, if any. The attributes of the handler's
// partition are given at the start, for samplers; those of the record are
// set once the span records, so that an unsampled record costs no more.
func (i *Instrumentation) startProcess(ctx context.Context, r *kavari.Record, info *procInfo) (context.Context, trace.Span) {
	remote, malformed := i.remote(r.Headers)
	var span trace.Span
	if remote.IsValid() {
		ctx, span = i.tracer.Start(trace.ContextWithRemoteSpanContext(ctx, remote), info.name,
			consumerKind, info.start, trace.WithLinks(trace.Link{SpanContext: remote}))
	} else {
		if malformed {
			i.m.invalidContext.Add(ctx, 1, info.invalid)
		}
		ctx, span = i.tracer.Start(ctx, info.name, consumerKind, info.start)
	}
	if !span.IsRecording() {
		return ctx, span
	}
	attrs := make([]attribute.KeyValue, 0, 5)
	attrs = append(attrs, semconv.MessagingKafkaOffset(int(r.Offset)), AttrAttempt.Int(r.Attempt))
	if r.Key != nil {
		attrs = append(attrs, semconv.MessagingKafkaMessageKey(string(r.Key)))
	}
	if r.ID != "" {
		attrs = append(attrs, semconv.MessagingMessageID(r.ID))
	}
	if r.Type != "" {
		attrs = append(attrs, AttrMessageType.String(r.Type))
	}
	span.SetAttributes(attrs...)
	return ctx, span
}

// OnRetryScheduled adds a retry event to the failed attempt's span and ends
// it, and counts the retry. It implements kavari.HookRetryScheduled.
func (i *Instrumentation) OnRetryScheduled(r *kavari.Record, wait time.Duration, err error) {
	i.m.retries.Add(context.Background(), 1, i.retrySet(r.Topic, r.RetryTier))
	if span, ok := i.takeFailed(attemptKey{r.Topic, r.Partition, r.Offset, r.Handler}); ok {
		span.AddEvent(EventRetryScheduled, trace.WithAttributes(AttrAttempt.Int(r.Attempt), AttrRetryWait.Int64(wait.Milliseconds()), AttrRetryTier.Int(r.RetryTier)))
		span.End()
	}
}

// OnDeadLettered adds a dead-letter event to the last attempt's span (a
// span of its own for a record no handler could take: poison) and ends it,
// and counts the dead letter. It implements kavari.HookDeadLettered.
func (i *Instrumentation) OnDeadLettered(r *kavari.Record, kind kavari.ErrorKind, err error) {
	handler := r.Handler
	attrs := append(i.consumerAttrs(r.Topic), AttrErrorKind.String(string(kind)))
	i.m.deadLetters.Add(context.Background(), 1, metricSet(attribute.NewSet(attrs...)))
	ev := trace.WithAttributes(AttrErrorKind.String(string(kind)), AttrAttempt.Int(r.Attempt))
	if span, ok := i.takeFailed(attemptKey{r.Topic, r.Partition, r.Offset, handler}); ok {
		span.AddEvent(EventDeadLettered, ev)
		span.End()
		return
	}
	_, span := i.startProcess(context.Background(), r, i.proc(r.Topic, r.Partition, handler))
	span.AddEvent(EventDeadLettered, ev)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.SetAttributes(semconv.ErrorTypeKey.String(string(kind)))
	span.End()
}

// endFailed ends the failed spans of records of the partitions m (revoked:
// no hook will end them).
func (i *Instrumentation) endFailed(m map[string][]int) {
	i.failed.Range(func(k, v any) bool {
		key := k.(attemptKey)
		for _, p := range m[key.topic] {
			if p == key.partition {
				if _, ok := i.failed.LoadAndDelete(k); ok {
					i.nfailed.Add(-1)
					v.(trace.Span).End()
				}
			}
		}
		return true
	})
}

// errorType is a low-cardinality error.type for err.
func errorType(err error) string { return errorTypes[errorIndex(err)] }

// errorIndex is the index in errorTypes of err's error.type.
func errorIndex(err error) int {
	switch {
	case errors.Is(err, context.Canceled):
		return 0
	case errors.Is(err, context.DeadlineExceeded):
		return 1
	case errors.Is(err, kavari.ErrTooLarge):
		return 2
	case errors.Is(err, kavari.ErrUnknownTopic):
		return 3
	case errors.Is(err, kavari.ErrInvalid):
		return 4
	}
	var pe *kavari.PanicError
	if errors.As(err, &pe) {
		return 5
	}
	return 6
}
