package kavariotel

import (
	"encoding/hex"
	"strconv"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/kavari-go/kavari"
)

// What a span or measurement of one topic, partition or handler shares is
// computed once and cached: building attribute slices and sets, span names
// and measurement options per record costs more than the span itself.

// errorTypes are the error.type values errorIndex picks from.
var errorTypes = [...]string{"canceled", "timeout", "too_large", "unknown_topic", "invalid", "panic", "_OTHER"}

// procKey names the process spans of one handler on one partition.
type procKey struct {
	topic     string
	partition int
	handler   string
}

// procInfo is what the process spans and measurements of a procKey share.
type procInfo struct {
	name  string                // the span name: "process <topic>"
	start trace.SpanStartOption // the attributes every span has
	// ok and failed are processDuration's attributes when the attempt
	// succeeded, and when it failed, by errorIndex.
	ok      metric.MeasurementOption
	failed  [len(errorTypes)]metric.MeasurementOption
	invalid metric.MeasurementOption // invalidContext's attributes
}

// proc returns the cached procInfo of handler on topic's partition.
func (i *Instrumentation) proc(topic string, partition int, handler string) *procInfo {
	k := procKey{topic, partition, handler}
	if v, ok := i.procs.Load(k); ok {
		return v.(*procInfo)
	}
	p := &procInfo{name: "process " + topic}
	attrs := []attribute.KeyValue{
		semconv.MessagingSystemKafka, semconv.MessagingOperationName("process"), semconv.MessagingOperationTypeProcess,
		semconv.MessagingDestinationName(topic), semconv.MessagingDestinationPartitionID(strconv.Itoa(partition)),
	}
	if i.cfg.ConsumerGroup != "" {
		attrs = append(attrs, semconv.MessagingConsumerGroupName(i.cfg.ConsumerGroup))
	}
	if handler != "" {
		attrs = append(attrs, AttrHandler.String(handler))
	}
	p.start = trace.WithAttributes(attrs...) // the SDK copies them
	p.ok = i.consumerSet(topic, -1)
	for e, name := range errorTypes {
		p.failed[e] = metricSet(attribute.NewSet(append(i.consumerAttrs(topic), semconv.ErrorTypeKey.String(name))...))
	}
	p.invalid = metricSet(attribute.NewSet(semconv.MessagingSystemKafka, semconv.MessagingDestinationName(topic)))
	v, _ := i.procs.LoadOrStore(k, p)
	return v.(*procInfo)
}

// sendInfo is what the producer spans and measurements of a topic share.
type sendInfo struct {
	name   string // the span name: "send <topic>"
	dest   attribute.KeyValue
	ok     metric.MeasurementOption // sent's and sendDuration's attributes when acknowledged
	failed [len(errorTypes)]metric.MeasurementOption
}

// send returns the cached sendInfo of topic.
func (i *Instrumentation) send(topic string) *sendInfo {
	if v, ok := i.sendInfos.Load(topic); ok {
		return v.(*sendInfo)
	}
	s := &sendInfo{name: "send " + topic, dest: semconv.MessagingDestinationName(topic)}
	base := []attribute.KeyValue{semconv.MessagingSystemKafka, semconv.MessagingOperationName("send"), s.dest}
	s.ok = metricSet(attribute.NewSet(base...))
	for e, name := range errorTypes {
		s.failed[e] = metricSet(attribute.NewSet(append(base[:len(base):len(base)], semconv.ErrorTypeKey.String(name))...))
	}
	v, _ := i.sendInfos.LoadOrStore(topic, s)
	return v.(*sendInfo)
}

// spanShards is a map of spans guarded by mutexes, sharded by span id: a
// sync.Map allocates on every store, and these see a store and a delete
// per message.
type spanShards[K comparable] struct {
	shards [16]struct {
		sync.Mutex
		m map[K]trace.Span
	}
}

func (s *spanShards[K]) shard(h byte) *struct {
	sync.Mutex
	m map[K]trace.Span
} {
	return &s.shards[h%16]
}

func (s *spanShards[K]) store(h byte, k K, span trace.Span) {
	sh := s.shard(h)
	sh.Lock()
	if sh.m == nil {
		sh.m = map[K]trace.Span{}
	}
	sh.m[k] = span
	sh.Unlock()
}

func (s *spanShards[K]) take(h byte, k K) (trace.Span, bool) {
	sh := s.shard(h)
	sh.Lock()
	span, ok := sh.m[k]
	if ok {
		delete(sh.m, k)
	}
	sh.Unlock()
	return span, ok
}

// The W3C trace context, read and written without the propagator's
// allocations when Config.Propagator is the default.

const traceparentLen = 55 // version-traceid-spanid-flags, version 00

// traceparentOf returns the traceparent header of hs (traceparent, else
// ce_traceparent), and whether there is one.
func traceparentOf(hs []kavari.Header) ([]byte, bool) {
	var ce []byte
	found := false
	for _, h := range hs {
		switch h.Key {
		case HeaderTraceparent:
			return h.Value, true
		case HeaderCETraceparent:
			if !found {
				ce, found = h.Value, true
			}
		}
	}
	return ce, found
}

// tracestateOf returns the tracestate header of hs (tracestate, else
// ce_tracestate), or "".
func tracestateOf(hs []kavari.Header) string {
	var ce []byte
	for _, h := range hs {
		switch h.Key {
		case HeaderTracestate:
			return string(h.Value)
		case HeaderCETracestate:
			if ce == nil {
				ce = h.Value
			}
		}
	}
	return string(ce)
}

// parseTraceparent reads a traceparent value as the W3C Trace Context
// specification defines it: lower-case hex fields version-traceid-spanid-
// flags; version ff is invalid, version 00 has exactly these fields and no
// reserved flag bits; a later version may add fields after a '-'.
func parseTraceparent(v []byte) (trace.SpanContextConfig, bool) {
	var c trace.SpanContextConfig
	if len(v) < traceparentLen || v[2] != '-' || v[35] != '-' || v[52] != '-' {
		return c, false
	}
	var ver, flags [1]byte
	if !lowerHex(ver[:], v[0:2]) || ver[0] == 0xff ||
		!lowerHex(c.TraceID[:], v[3:35]) || !lowerHex(c.SpanID[:], v[36:52]) || !lowerHex(flags[:], v[53:55]) {
		return c, false
	}
	if ver[0] == 0 && (len(v) != traceparentLen || flags[0] > 3) {
		return c, false
	}
	if len(v) > traceparentLen && v[traceparentLen] != '-' {
		return c, false
	}
	c.TraceFlags = trace.TraceFlags(flags[0]) & (trace.FlagsSampled | trace.FlagsRandom)
	return c, c.TraceID.IsValid() && c.SpanID.IsValid()
}

// lowerHex decodes src (lower-case hex only) into dst.
func lowerHex(dst, src []byte) bool {
	for _, b := range src {
		if b >= 'A' && b <= 'F' {
			return false
		}
	}
	_, err := hex.Decode(dst, src)
	return err == nil
}

// formatTraceparent writes sc as a version 00 traceparent value.
func formatTraceparent(sc trace.SpanContext) []byte {
	b := make([]byte, 0, traceparentLen)
	b = append(b, "00-"...)
	tid, sid := sc.TraceID(), sc.SpanID()
	b = hex.AppendEncode(b, tid[:])
	b = append(b, '-')
	b = hex.AppendEncode(b, sid[:])
	b = append(b, '-')
	return hex.AppendEncode(b, []byte{byte(sc.TraceFlags() & (trace.FlagsSampled | trace.FlagsRandom))})
}
