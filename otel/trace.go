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

// OnPublishBefore starts the producer span of a message, child of the span
// in ctx, and returns the headers that carry its context. It implements
// kavari.HookPublishBefore.
func (i *Instrumentation) OnPublishBefore(ctx context.Context, _ kavari.Msg) []kavari.Header {
	ctx, span := i.tracer.Start(ctx, "send", trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(
		semconv.MessagingSystemKafka, semconv.MessagingOperationName("send"), semconv.MessagingOperationTypeSend))
	var hs injector
	i.prop.Inject(ctx, &hs)
	if span.IsRecording() {
		i.sends.Store(span.SpanContext().SpanID(), span)
	}
	return hs
}

// OnPublishAfter ends the producer span of r and counts it. It implements
// kavari.HookPublishAfter.
func (i *Instrumentation) OnPublishAfter(ctx context.Context, r *kavari.Record, start time.Time, err error) {
	attrs := []attribute.KeyValue{semconv.MessagingSystemKafka, semconv.MessagingOperationName("send"), semconv.MessagingDestinationName(r.Topic)}
	if err != nil {
		attrs = append(attrs, semconv.ErrorTypeKey.String(errorType(err)))
	}
	set := attribute.NewSet(attrs...)
	i.m.sent.Add(ctx, 1, metricSet(set))
	i.m.sendDuration.Record(ctx, time.Since(start).Seconds(), metricSet(set))

	sc := trace.SpanContextFromContext(i.prop.Extract(context.Background(), extractor(r.Headers)))
	v, ok := i.sends.LoadAndDelete(sc.SpanID())
	if !ok {
		return
	}
	span := v.(trace.Span)
	span.SetName("send " + r.Topic)
	span.SetAttributes(semconv.MessagingDestinationName(r.Topic))
	if err == nil {
		span.SetAttributes(semconv.MessagingDestinationPartitionID(strconv.Itoa(r.Partition)), semconv.MessagingKafkaOffset(int(r.Offset)))
	}
	if r.Key != nil {
		span.SetAttributes(semconv.MessagingKafkaMessageKey(string(r.Key)))
	}
	if r.ID != "" {
		span.SetAttributes(semconv.MessagingMessageID(r.ID))
	}
	if r.Type != "" {
		span.SetAttributes(AttrMessageType.String(r.Type))
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		span.SetAttributes(semconv.ErrorTypeKey.String(errorType(err)))
	}
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
				return next(ctx, msg)
			}
			handler := kavari.HandlerName(ctx)
			key := attemptKey{r.Topic, r.Partition, r.Offset, handler}
			if v, ok := i.failed.LoadAndDelete(key); ok {
				v.(trace.Span).End() // no hook ended the previous attempt's span
			}
			ctx, span := i.startProcess(ctx, r, handler)
			start := time.Now()
			err := next(ctx, msg)
			took := time.Since(start).Seconds()
			if err == nil {
				i.m.processDuration.Record(ctx, took, i.consumerSet(r.Topic, -1))
			} else {
				attrs := append(i.consumerAttrs(r.Topic), semconv.ErrorTypeKey.String(errorType(err)))
				i.m.processDuration.Record(ctx, took, metricSet(attribute.NewSet(attrs...)))
			}
			if err == nil {
				span.End()
				return nil
			}
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
			span.SetAttributes(semconv.ErrorTypeKey.String(errorType(err)))
			if span.IsRecording() {
				i.failed.Store(key, span) // ended by the retry or dead-letter hook
			} else {
				span.End()
			}
			return err
		}
	}
}

// startProcess starts a process span for r, parented by (and linked to) the
// producer span its headers carry, if any.
func (i *Instrumentation) startProcess(ctx context.Context, r *kavari.Record, handler string) (context.Context, trace.Span) {
	carrier := extractor(r.Headers)
	remote := trace.SpanContextFromContext(i.prop.Extract(context.Background(), carrier))
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(i.processAttrs(r, handler)...)}
	parent := ctx
	if remote.IsValid() {
		parent = trace.ContextWithRemoteSpanContext(ctx, remote)
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: remote}))
	} else if carrier.Get(HeaderTraceparent) != "" {
		i.m.invalidContext.Add(ctx, 1, metricSet(attribute.NewSet(semconv.MessagingSystemKafka, semconv.MessagingDestinationName(r.Topic))))
	}
	return i.tracer.Start(parent, "process "+r.Topic, opts...)
}

func (i *Instrumentation) processAttrs(r *kavari.Record, handler string) []attribute.KeyValue {
	attrs := []attribute.KeyValue{
		semconv.MessagingSystemKafka, semconv.MessagingOperationName("process"), semconv.MessagingOperationTypeProcess,
		semconv.MessagingDestinationName(r.Topic), semconv.MessagingDestinationPartitionID(strconv.Itoa(r.Partition)),
		semconv.MessagingKafkaOffset(int(r.Offset)), AttrAttempt.Int(r.Attempt),
	}
	if i.cfg.ConsumerGroup != "" {
		attrs = append(attrs, semconv.MessagingConsumerGroupName(i.cfg.ConsumerGroup))
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
	if handler != "" {
		attrs = append(attrs, AttrHandler.String(handler))
	}
	return attrs
}

// OnRetryScheduled adds a retry event to the failed attempt's span and ends
// it, and counts the retry. It implements kavari.HookRetryScheduled.
func (i *Instrumentation) OnRetryScheduled(r *kavari.Record, handler string, wait time.Duration, err error) {
	i.m.retries.Add(context.Background(), 1, i.consumerSet(r.Topic, -1))
	if v, ok := i.failed.LoadAndDelete(attemptKey{r.Topic, r.Partition, r.Offset, handler}); ok {
		span := v.(trace.Span)
		span.AddEvent(EventRetryScheduled, trace.WithAttributes(AttrAttempt.Int(r.Attempt), AttrRetryWait.Int64(wait.Milliseconds())))
		span.End()
	}
}

// OnDeadLettered adds a dead-letter event to the last attempt's span (a
// span of its own for a record no handler could take: poison) and ends it,
// and counts the dead letter. It implements kavari.HookDeadLettered.
func (i *Instrumentation) OnDeadLettered(r *kavari.Record, kind kavari.ErrorKind, handler string, err error) {
	attrs := append(i.consumerAttrs(r.Topic), AttrErrorKind.String(string(kind)))
	i.m.deadLetters.Add(context.Background(), 1, metricSet(attribute.NewSet(attrs...)))
	ev := trace.WithAttributes(AttrErrorKind.String(string(kind)), AttrAttempt.Int(r.Attempt))
	if v, ok := i.failed.LoadAndDelete(attemptKey{r.Topic, r.Partition, r.Offset, handler}); ok {
		span := v.(trace.Span)
		span.AddEvent(EventDeadLettered, ev)
		span.End()
		return
	}
	_, span := i.startProcess(context.Background(), r, handler)
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
				i.failed.Delete(k)
				v.(trace.Span).End()
			}
		}
		return true
	})
}

// errorType is a low-cardinality error.type for err.
func errorType(err error) string {
	switch {
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, kavari.ErrTooLarge):
		return "too_large"
	case errors.Is(err, kavari.ErrUnknownTopic):
		return "unknown_topic"
	case errors.Is(err, kavari.ErrInvalid):
		return "invalid"
	}
	var pe *kavari.PanicError
	if errors.As(err, &pe) {
		return "panic"
	}
	return "_OTHER"
}
