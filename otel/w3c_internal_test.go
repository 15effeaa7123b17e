package kavariotel

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/kavari-go/kavari"
)

// kavariotel's own reading of the W3C trace context headers agrees with
// the OpenTelemetry propagator's, valid and malformed alike, and what it
// writes the propagator reads back.
func TestW3CAgreesWithPropagator(t *testing.T) {
	const (
		tid = "4bf92f3577b34da6a3ce929d0e0e4736"
		sid = "00f067aa0ba902b7"
	)
	values := []string{
		"00-" + tid + "-" + sid + "-01",
		"00-" + tid + "-" + sid + "-00",
		"00-" + tid + "-" + sid + "-03",
		"00-" + tid + "-" + sid + "-09", // reserved flag bits in version 00
		"00-" + tid + "-" + sid + "-01-extra",
		"01-" + tid + "-" + sid + "-01-extra",
		"01-" + tid + "-" + sid + "-01",
		"01-" + tid + "-" + sid + "-01x",
		"ff-" + tid + "-" + sid + "-01",
		"00-00000000000000000000000000000000-" + sid + "-01",
		"00-" + tid + "-0000000000000000-01",
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-" + sid + "-01", // upper case
		"00-" + tid + "-" + sid,
		"00-" + tid + "-" + sid + "-1",
		"0-" + tid + "-" + sid + "-01",
		"00-zzzz-not-a-trace-01",
		"00_" + tid + "_" + sid + "_01",
		"",
	}
	states := []string{"", "vendor=1,other=x", "not a = valid state"}
	w3c := New(Config{})
	for _, v := range values {
		for _, ts := range states {
			for _, ce := range []bool{false, true} {
				hs := []kavari.Header{{Key: HeaderTraceparent, Value: []byte(v)}, {Key: HeaderTracestate, Value: []byte(ts)}}
				if ce {
					hs = []kavari.Header{{Key: "msg_type", Value: []byte("x")}, {Key: HeaderCETraceparent, Value: []byte(v)}, {Key: HeaderCETracestate, Value: []byte(ts)}}
				}
				want := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), extractor(hs)))
				got, malformed := w3c.remote(hs)
				if !got.Equal(want) {
					t.Errorf("traceparent %q tracestate %q ce %v: got %+v, the propagator %+v", v, ts, ce, got, want)
				}
				if wantBad := !want.IsValid() && v != ""; malformed != wantBad {
					t.Errorf("traceparent %q: malformed %v, want %v", v, malformed, wantBad)
				}
			}
		}
	}
	if sc, malformed := w3c.remote([]kavari.Header{{Key: "msg_type", Value: []byte("x")}}); sc.IsValid() || malformed {
		t.Errorf("no header: %+v, malformed %v", sc, malformed)
	}

	ts, err := trace.ParseTraceState("vendor=1")
	if err != nil {
		t.Fatal(err)
	}
	for _, flags := range []trace.TraceFlags{0, trace.FlagsSampled, trace.FlagsSampled | trace.FlagsRandom} {
		sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: [16]byte{1, 2, 3}, SpanID: [8]byte{4, 5}, TraceFlags: flags, TraceState: ts})
		var in injector
		propagation.TraceContext{}.Inject(trace.ContextWithSpanContext(context.Background(), sc), &in)
		if got, want := string(formatTraceparent(sc)), in.Get(HeaderTraceparent); got != want {
			t.Errorf("formatTraceparent: %q, the propagator writes %q", got, want)
		}
	}
}
