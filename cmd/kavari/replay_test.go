package main

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kavari-go/kavari"
	"github.com/segmentio/kafka-go"
)

func hdrs(kv ...string) []kafka.Header {
	hs := make([]kafka.Header, 0, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		hs = append(hs, kafka.Header{Key: kv[i], Value: []byte(kv[i+1])})
	}
	return hs
}

// deadLetter returns a dead letter as kavari writes it, with extra headers.
func deadLetter(extra ...string) *record {
	hs := hdrs(
		kavari.HeaderMsgType, "OrderPlaced",
		kavari.HeaderSpecVersion, "1.0",
		kavari.HeaderID, "id-1",
		kavari.HeaderType, "OrderPlaced",
		kavari.HeaderSource, "billing",
		kavari.HeaderTime, "2026-12-01T10:00:00Z",
		kavari.HeaderContentType, "application/json",
		"traceparent", "00-abc-def-01",
	)
	hs = append(hs, hdrs(extra...)...)
	hs = append(hs, hdrs(
		kavari.HeaderOriginalError, "kavari: handler failed\nsecond line",
		kavari.HeaderOriginalTopic, "orders",
		kavari.HeaderOriginalPartition, "2",
		kavari.HeaderOriginalOffset, "41",
		kavari.HeaderAttempts, "5",
		kavari.HeaderErrorKind, "handler",
		kavari.HeaderHandler, "*main.Billing",
	)...)
	return &record{Topic: "orders.dlq", Partition: 1, Offset: 7, Key: []byte("o-1"), Value: []byte(`{"order_id":"o-1"}`), Headers: hs}
}

func without(r *record, key string) *record {
	out := *r
	out.Headers = nil
	for _, h := range r.Headers {
		if h.Key != key {
			out.Headers = append(out.Headers, h)
		}
	}
	return &out
}

func TestPlanReplayHeaders(t *testing.T) {
	for _, c := range []struct {
		name  string
		rec   *record
		count string
	}{
		{"first replay", deadLetter(), "1"},
		{"replayed before", deadLetter(headerReplayCount, "2", headerReplayedFrom, "orders.dlq/0/3"), "3"},
	} {
		p, ref := planReplay(c.rec, 3)
		if ref != nil {
			t.Fatalf("%s: refused: %v", c.name, ref)
		}
		if p.Topic != "orders" || p.Partition != 2 || string(p.Record.Key) != "o-1" || string(p.Record.Value) != `{"order_id":"o-1"}` {
			t.Errorf("%s: replay to %s/%d key %q value %q", c.name, p.Topic, p.Partition, p.Record.Key, p.Record.Value)
		}
		var got []string
		for _, h := range p.Record.Headers {
			got = append(got, h.Key+"="+string(h.Value))
		}
		want := []string{
			"msg_type=OrderPlaced", "ce_specversion=1.0", "ce_id=id-1", "ce_type=OrderPlaced", "ce_source=billing",
			"ce_time=2026-12-01T10:00:00Z", "content-type=application/json", "traceparent=00-abc-def-01",
			"kavari_replay_count=" + c.count, "kavari_replayed_from=orders.dlq/1/7",
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("%s: headers\n%s\nwant\n%s", c.name, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
}

func TestPlanReplayRefusals(t *testing.T) {
	for _, c := range []struct {
		name string
		rec  *record
		max  int
		loop bool
		want string
	}{
		{"loop guard at the limit", deadLetter(headerReplayCount, "3"), 3, true, "replayed 3 times already (--max-replays 3)"},
		{"loop guard above", deadLetter(headerReplayCount, "7"), 3, true, "replayed 7 times already"},
		{"no origin", without(deadLetter(), kavari.HeaderOriginalTopic), 3, false, "no kavari_original_topic header"},
		{"not kavari at all", &record{Topic: "orders.dlq", Value: []byte("x")}, 3, false, "not a kavari dead letter"},
		{"value dropped", deadLetter(kavari.HeaderTruncated, "2000000"), 3, false, "was dropped"},
		{"headers dropped", deadLetter(kavari.HeaderDroppedHeaders, "traceparent,big"), 3, false, "original headers traceparent,big were dropped"},
		{"bad count", deadLetter(headerReplayCount, "many"), 3, false, "malformed kavari_replay_count"},
	} {
		p, ref := planReplay(c.rec, c.max)
		if ref == nil {
			t.Errorf("%s: replayed to %s/%d, want refused", c.name, p.Topic, p.Partition)
			continue
		}
		if ref.loop != c.loop || !strings.Contains(ref.reason, c.want) {
			t.Errorf("%s: refused (loop=%v) %q, want loop=%v %q", c.name, ref.loop, ref.reason, c.loop, c.want)
		}
	}
	// Below the limit it goes through; an unknown partition is left to the key.
	p, ref := planReplay(without(deadLetter(headerReplayCount, "2"), kavari.HeaderOriginalPartition), 3)
	if ref != nil || p.Count != 3 || p.Partition != -1 {
		t.Errorf("replay count 2 of 3: %+v %v, want count 3, partition -1", p, ref)
	}
}

func TestReplayFilter(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	r := deadLetter()
	r.Time = now
	for _, c := range []struct {
		f    replayFilter
		want bool
	}{
		{replayFilter{}, true},
		{replayFilter{kinds: splitList("validation,handler")}, true},
		{replayFilter{kinds: splitList("decode")}, false},
		{replayFilter{types: splitList("OrderPlaced")}, true},
		{replayFilter{types: splitList("Refund")}, false},
		{replayFilter{since: now.Add(-time.Minute), until: now.Add(time.Minute)}, true},
		{replayFilter{since: now.Add(time.Second)}, false},
		{replayFilter{until: now.Add(-time.Second)}, false},
	} {
		if got := c.f.match(r); got != c.want {
			t.Errorf("%+v: match %v, want %v", c.f, got, c.want)
		}
	}
}

func TestDLQGroups(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	var s dlqStats
	for i := 0; i < 3; i++ {
		r := deadLetter()
		r.Time = t0.Add(time.Duration(2-i) * time.Minute)
		s.add(r)
	}
	again := deadLetter(headerReplayCount, "1")
	again.Time = t0.Add(time.Hour)
	s.add(again)
	val := deadLetter()
	val.Headers = append(val.Headers, hdrs(kavari.HeaderErrorKind, "validation", kavari.HeaderOriginalError, "amount: gt")...)
	val.Headers = without(val, kavari.HeaderHandler).Headers
	val.Time = t0.Add(time.Second)
	s.add(val)
	s.add(&record{Topic: "orders.dlq", Time: t0, Value: []byte("raw")})

	g := s.sorted()
	if s.total != 6 || len(g) != 3 {
		t.Fatalf("total %d in %d groups, want 6 in 3: %+v", s.total, len(g), g)
	}
	want := dlqGroup{
		dlqKey: dlqKey{OriginalTopic: "orders", Kind: "handler", Handler: "*main.Billing", Type: "OrderPlaced", Error: "kavari: handler failed"},
		Count:  4, Oldest: t0, Newest: t0.Add(time.Hour), Replayed: 1,
	}
	if *g[0] != want {
		t.Errorf("largest group %+v\nwant %+v", *g[0], want)
	}
	if g[1].Kind != notKavari || g[1].Count != 1 {
		t.Errorf("second group %+v, want the record without kavari headers", *g[1])
	}
	if g[2].Kind != "validation" || g[2].Handler != "" || g[2].Error != "amount: gt" {
		t.Errorf("third group %+v, want the validation failure", *g[2])
	}
	var b strings.Builder
	if err := writeGroups(&b, "orders.dlq", s.total, g); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"COUNT", "kavari: handler failed", notKavari, "6 dead letters in 3 groups"} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("table lacks %q:\n%s", w, b.String())
		}
	}
}

func TestFirstLine(t *testing.T) {
	if got := firstLine("a\nb", 10); got != "a" {
		t.Errorf("%q", got)
	}
	if got := firstLine(strings.Repeat("é", 20), 5); got != "éééé…" {
		t.Errorf("%q", got)
	}
	r := deadLetter()
	r.Headers = append(r.Headers, hdrs(kavari.HeaderOriginalError, "kavari: gave up after 3 attempts in 1m2.5s (waits 4µs, 300ms): boom 10s2")...)
	if got := keyOf(r).Error; got != "kavari: gave up after 3 attempts in <duration> (waits <duration>, <duration>): boom 10s2" {
		t.Errorf("durations not normalised: %q", got)
	}
	r.Headers = append(r.Headers, hdrs(kavari.HeaderOriginalError, `kavari: unknown_type record orders/1@2 (msg_type "X")`)...)
	if got := keyOf(r).Error; got != `kavari: unknown_type record orders/<partition>@<offset> (msg_type "X")` {
		t.Errorf("record position not normalised: %q", got)
	}
}

func TestRecordFormats(t *testing.T) {
	r := &record{Topic: "orders", Partition: 1, Offset: 42, Time: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC),
		Key: []byte("o-1"), Value: []byte(`{"b":1,"a":"x"}`), Headers: hdrs("msg_type", "OrderPlaced", "bin", "\x00\x01")}
	text := string(textRecord(r))
	want := "orders[1]@42  2026-12-01T00:00:00Z  key=o-1\n  msg_type: OrderPlaced\n  bin: \"\\x00\\x01\"\n  {\n    \"b\": 1,\n    \"a\": \"x\"\n  }\n"
	if text != want {
		t.Errorf("text:\n%s\nwant:\n%s", text, want)
	}
	j := jsonRecord(r)
	if string(j.Value) != `{"b":1,"a":"x"}` || *j.Key != "o-1" || j.Headers["msg_type"] != "OrderPlaced" {
		t.Errorf("json %+v", j)
	}
	r.Value = []byte("plain text")
	if j := jsonRecord(r); string(j.Value) != `"plain text"` {
		t.Errorf("non-JSON value as %s", j.Value)
	}
	r.Value, r.Key = nil, nil
	if j := jsonRecord(r); string(j.Value) != "null" || j.Key != nil {
		t.Errorf("null value/key as %s %v", j.Value, j.Key)
	}
}

// lockedBuffer is a strings.Builder safe for the progress goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestReplayProgressLine(t *testing.T) {
	defer func(d time.Duration) { progressEvery = d }(progressEvery)
	progressEvery = 5 * time.Millisecond
	var out lockedBuffer
	rp := &replayer{errOut: &out, stats: replayStats{Read: 7, Replayed: 5, RefusedLoop: 1, RefusedOrigin: 1, Filtered: 1}}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() { defer close(finished); rp.showProgress(done, time.Now().Add(-time.Second), 10) }()
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(out.String(), "replay: read 7/10, replayed 5 (") && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(done)
	<-finished
	if line := out.String(); !strings.Contains(line, "replay: read 7/10, replayed 5 (") || !strings.Contains(line, "/s), refused 2, skipped 1\n") {
		t.Errorf("progress output %q", line)
	}
}
