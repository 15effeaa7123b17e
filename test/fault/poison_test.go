package fault

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/test/fault/faultmsg"
	"github.com/kavari-go/kavari/test/fault/ledger"
)

// poisonCase is one malformed record and the dead letter it must become.
type poisonCase struct {
	name    string
	value   []byte
	headers []kafka.Header
	kind    kavari.ErrorKind
}

// TestPoisonRecords writes raw records (kafka-go Writer, no kavari envelope)
// onto a subscribed topic, malformed ones of every kind interleaved with
// valid ones: no headers, headers without msg_type, an empty or unknown
// msg_type, invalid JSON, wrong field types, a JSON array, trailing garbage,
// a validation failure, a JSON null, an empty value, binary garbage and a
// 900 KB value; plus one valid record whose handler panics every time.
//
// Each malformed record must reach <topic>.dlq exactly as written (key,
// value, original headers) with kavari_error_kind of the right kind,
// original_error, kavari_original_topic/partition/offset pointing back at it
// and kavari_attempts; every valid record must be handled; the consumer must
// keep going (records after the last poison are handled, everything is
// committed, Health is connected).
func TestPoisonRecords(t *testing.T) {
	brokers := testenv.RequireReal(t)
	led := ledger.ForTest(t, "poison records written raw, interleaved with valid ones")
	led.CheckOrder()
	run := testenv.ID("run")
	const topic = "kavari-fault-poison"
	const good, every = 300, 15

	valid := func(id, key string, seq int, amount int64, note string) []byte {
		b, _ := json.Marshal(faultmsg.Poison{Body: faultmsg.Body{Run: run, ID: id, Key: key, Seq: seq}, Amount: amount, Note: note})
		return b
	}
	typed := []kafka.Header{{Key: kavari.HeaderMsgType, Value: []byte("Poison")}, {Key: "x-trace", Value: []byte("t-1")}}
	garbage := make([]byte, 512)
	_, _ = rand.Read(garbage)
	garbage[0] = 0xff // never valid JSON
	huge := valid("huge", "huge", 0, 1, strings.Repeat("x", 900<<10))
	cases := []poisonCase{
		{"no-headers", valid("nh", "nh", 0, 1, ""), nil, kavari.KindUnknownType},
		{"no-msg_type", valid("nm", "nm", 0, 1, ""), []kafka.Header{{Key: "x-trace", Value: []byte("t-2")}}, kavari.KindUnknownType},
		{"empty-msg_type", valid("em", "em", 0, 1, ""), []kafka.Header{{Key: kavari.HeaderMsgType, Value: nil}}, kavari.KindUnknownType},
		{"unknown-msg_type", valid("um", "um", 0, 1, ""), []kafka.Header{{Key: kavari.HeaderMsgType, Value: []byte("OrderShipped")}}, kavari.KindUnknownType},
		{"binary-msg_type", valid("bm", "bm", 0, 1, ""), []kafka.Header{{Key: kavari.HeaderMsgType, Value: []byte{0xff, 0, 0xfe}}}, kavari.KindUnknownType},
		{"invalid-json", []byte(`{"run":"` + run + `","id":`), typed, kavari.KindDecode},
		{"wrong-field-types", []byte(`{"run":"` + run + `","id":"w","key":"w","seq":"one","amount":"ten"}`), typed, kavari.KindDecode},
		{"json-array", []byte(`[1,2,3]`), typed, kavari.KindDecode},
		{"trailing-garbage", append(valid("tg", "tg", 0, 1, ""), []byte(" }{")...), typed, kavari.KindDecode},
		{"validation", valid("va", "va", 0, 0, ""), typed, kavari.KindValidation},
		{"json-null", []byte(`null`), typed, kavari.KindValidation},
		{"empty-value", nil, typed, kavari.KindDecode},
		{"binary-garbage", garbage, typed, kavari.KindDecode},
		{"huge-900KB", huge, typed, kavari.KindValidation},
		{"handler-panics", valid("panic", "panic", 0, 1, "panic"), typed, kavari.KindHandler},
	}
	led.Setup("shared broker; topic with 1 partition; %d valid records and %d malformed ones (one every %d) written raw with a kafka-go Writer; one in-process Client consuming", good, len(cases), every)

	reg := kavari.NewRegistry()
	if err := kavari.RegisterFuncOn(reg, &faultmsg.Poison{}, func(ctx context.Context, m *faultmsg.Poison) error {
		if m.Note == "panic" {
			panic("poison test: this handler always panics")
		}
		handle(ctx, led, run, &m.Body)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	cfg := baseConfig(brokers, reg)
	cfg.Topics.Partitions = 1
	k := newKavari(t, cfg)
	ctx := context.Background()
	if err := k.Start(ctx); err != nil {
		t.Fatal(err)
	}

	tr := &kafka.Transport{} // not DefaultTransport: see newClient
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond,
		MaxAttempts: 10, BatchBytes: 2 << 20, Transport: tr}
	defer w.Close()
	write := func(rec kafka.Message) error {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return w.WriteMessages(wctx, rec)
	}
	keyOf := func(c poisonCase) string { return run + "-bad-" + c.name }
	var lastGood string
	next := 0
	for i := 0; i < good; i++ {
		id, key, seq := msgID(i), msgKey(i, 10), msgSeq(i, 10)
		led.Sent(id, key, seq)
		err := write(kafka.Message{Key: []byte(key), Value: valid(id, key, seq, int64(i+1), ""), Headers: typed})
		led.Published(id, err)
		if err != nil {
			t.Errorf("writing valid record %d: %v", i, err)
		}
		lastGood = id
		if i%every == every-1 && next < len(cases) {
			c := cases[next]
			next++
			led.Sent(keyOf(c), keyOf(c), 0)
			err := write(kafka.Message{Key: []byte(keyOf(c)), Value: c.value, Headers: c.headers})
			led.Published(keyOf(c), err)
			if err != nil {
				t.Errorf("writing poison %s: %v", c.name, err)
			}
		}
	}
	if next != len(cases) {
		t.Fatalf("only %d of %d poison records interleaved", next, len(cases))
	}

	// Every valid record handled, including those after the last poison.
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if !led.WaitHandled(wctx, good) {
		_, _, h, _ := led.Counts()
		t.Fatalf("only %d of %d valid records handled: the consumer stopped?", h, good)
	}

	// Every poison record in the dead-letter topic, as written.
	want := map[string]poisonCase{}
	for _, c := range cases {
		want[keyOf(c)] = c
	}
	dead := readDeadLetters(t, brokers, topic+".dlq", run+"-bad-", len(cases))
	orig := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: 0, MaxBytes: 10 << 20})
	defer orig.Close()
	dupDLQ := 0
	for key, recs := range dead {
		c, ok := want[key]
		if !ok {
			t.Errorf("unexpected dead letter with key %q", key)
			continue
		}
		dupDLQ += len(recs) - 1
		d := recs[0]
		hv := func(name string) string {
			for _, h := range d.Headers {
				if h.Key == name {
					return string(h.Value)
				}
			}
			return ""
		}
		if got := hv(kavari.HeaderErrorKind); got != string(c.kind) {
			t.Errorf("%s: kavari_error_kind %q, want %q (original_error %q)", c.name, got, c.kind, hv(kavari.HeaderOriginalError))
		}
		if hv(kavari.HeaderOriginalError) == "" {
			t.Errorf("%s: no original_error header", c.name)
		}
		if hv(kavari.HeaderOriginalTopic) != topic || hv(kavari.HeaderOriginalPartition) != "0" {
			t.Errorf("%s: original topic/partition %q/%q", c.name, hv(kavari.HeaderOriginalTopic), hv(kavari.HeaderOriginalPartition))
		}
		wantAttempts := "1"
		if c.kind == kavari.KindHandler {
			wantAttempts = "3"
			if hv(kavari.HeaderHandler) == "" {
				t.Errorf("%s: no kavari_handler header", c.name)
			}
		}
		if got := hv(kavari.HeaderAttempts); got != wantAttempts {
			t.Errorf("%s: kavari_attempts %q, want %s", c.name, got, wantAttempts)
		}
		if hv(kavari.HeaderTruncated) == "" && !bytes.Equal(d.Value, c.value) {
			t.Errorf("%s: dead-letter value differs from the original (%d vs %d bytes)", c.name, len(d.Value), len(c.value))
		}
		for _, h := range c.headers {
			if hv(h.Key) != string(h.Value) {
				t.Errorf("%s: original header %s=%q not kept (got %q)", c.name, h.Key, h.Value, hv(h.Key))
			}
		}
		// kavari_original_offset points back at the very record.
		off, err := strconv.ParseInt(hv(kavari.HeaderOriginalOffset), 10, 64)
		if err != nil {
			t.Errorf("%s: kavari_original_offset %q: %v", c.name, hv(kavari.HeaderOriginalOffset), err)
		} else if err := orig.SetOffset(off); err == nil {
			rctx, rcancel := context.WithTimeout(ctx, 20*time.Second)
			rec, err := orig.FetchMessage(rctx)
			rcancel()
			if err != nil || string(rec.Key) != key {
				t.Errorf("%s: the record at kavari_original_offset %d has key %q (err %v)", c.name, off, rec.Key, err)
			}
		}
		led.Handled(ledger.Handle{ID: key, Key: key, At: d.Time, Proc: "dead-letter topic", Topic: d.Topic, Partition: d.Partition, Offset: d.Offset})
	}
	for _, c := range cases {
		if len(dead[keyOf(c)]) == 0 {
			t.Errorf("%s: no dead letter", c.name)
		}
	}

	// The consumer kept going and committed everything.
	lastOffset := int64(-1)
	for _, h := range led.Handles() {
		if h.ID == lastGood {
			lastOffset = h.Offset
		}
	}
	group := cfg.Consume.GroupID
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		c := committedNow(t, brokers, group, topic, 1)[0]
		if c == lastOffset+1 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("the group committed %d, not up to the last record (offset %d)", c, lastOffset)
			break
		}
	}
	if h := k.Health(); !h.Connected {
		t.Errorf("consumer not connected after the poison records: %+v", h)
	}
	row := led.Assert(t)
	led.Set("dead_letters", len(dead))
	led.Set("dead_letter_duplicates", dupDLQ)
	led.Note("handled = %d valid records handled + %d malformed ones found in %s.dlq with the right kavari_error_kind; %d dead-letter duplicates; committed through offset %d",
		good, len(dead), topic, dupDLQ, lastOffset)
	_ = row
}

// readDeadLetters reads topic (all partitions) from the start until it has
// seen want distinct keys starting with prefix, and returns the records by
// key.
func readDeadLetters(t *testing.T, brokers []string, topic, prefix string, want int) map[string][]kafka.Message {
	t.Helper()
	out := map[string][]kafka.Message{}
	parts := partitionsOf(t, brokers, topic)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	type got struct {
		m   kafka.Message
		err error
	}
	ch := make(chan got)
	for p := 0; p < parts; p++ {
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p, MaxBytes: 10 << 20, MaxWait: 200 * time.Millisecond})
		defer r.Close()
		go func() {
			for {
				m, err := r.FetchMessage(ctx)
				select {
				case ch <- got{m, err}:
				case <-ctx.Done():
					return
				}
				if err != nil {
					return
				}
			}
		}()
	}
	for {
		select {
		case g := <-ch:
			if g.err != nil {
				continue
			}
			if k := string(g.m.Key); strings.HasPrefix(k, prefix) {
				out[k] = append(out[k], g.m)
			}
			if len(out) == want {
				// Give duplicates a moment to show up.
				deadline := time.After(500 * time.Millisecond)
				for {
					select {
					case g := <-ch:
						if g.err == nil && strings.HasPrefix(string(g.m.Key), prefix) {
							out[string(g.m.Key)] = append(out[string(g.m.Key)], g.m)
						}
					case <-deadline:
						return out
					}
				}
			}
		case <-ctx.Done():
			t.Errorf("only %d of %d dead letters found in %s", len(out), want, topic)
			return out
		}
	}
}
