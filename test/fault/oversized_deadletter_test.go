package fault

import (
	"context"
	"encoding/json"
	"errors"
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

// createTopicWith creates topic with partitions and topic configs cfg, unless
// it exists.
func createTopicWith(t *testing.T, brokers []string, topic string, partitions int, cfg map[string]string) {
	t.Helper()
	client, closeClient := newClient(brokers, 30*time.Second)
	defer closeClient()
	tc := kafka.TopicConfig{Topic: topic, NumPartitions: partitions, ReplicationFactor: 1}
	for k, v := range cfg {
		tc.ConfigEntries = append(tc.ConfigEntries, kafka.ConfigEntry{ConfigName: k, ConfigValue: v})
	}
	resp, err := client.CreateTopics(context.Background(), &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{tc}})
	if err != nil {
		t.Fatal(err)
	}
	if e := resp.Errors[topic]; e != nil && !errors.Is(e, kafka.TopicAlreadyExists) {
		t.Fatalf("create %s: %v", topic, e)
	}
}

// TestOversizedDeadLetters writes valid records interleaved with two whose
// dead letters do not fit the dead-letter topic (max.message.bytes 256 KiB):
// one carries a 300 KB header and its handler fails permanently, the other
// fails validation on 20,000 fields (an error text of about 600 KB). Before,
// kavari retried such a dead letter forever and its partition stopped
// committing. Now the first is dead-lettered without its value and without
// the big header (both named in headers), the second whole with its error
// text clipped; every valid record is handled and the partition commits
// through the last record.
func TestOversizedDeadLetters(t *testing.T) {
	brokers := testenv.RequireReal(t)
	led := ledger.ForTest(t, "dead letters too large for their topic (300 KB header, 20,000 invalid fields)")
	led.CheckOrder()
	run := testenv.ID("run")
	const topic, good, every = "kavari-fault-bigdlq", 200, 50
	createTopicWith(t, brokers, topic, 1, nil)
	createTopicWith(t, brokers, topic+".dlq", 1, map[string]string{"max.message.bytes": "262144"})
	led.Setup("shared broker; topic with 1 partition, its .dlq with max.message.bytes 262144; %d valid records and 2 oversized-dead-letter ones written raw; one in-process Client", good)

	reg := kavari.NewRegistry()
	if err := kavari.RegisterFuncOn(reg, &faultmsg.BigDeadLetter{}, func(ctx context.Context, m *faultmsg.BigDeadLetter) error {
		if m.ID == "hdr" {
			return kavari.Permanent(errors.New("oversized dead-letter test: refused"))
		}
		handle(ctx, led, run, &m.Body)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	cfg := baseConfig(brokers, reg)
	k := newKavari(t, cfg)
	ctx := context.Background()
	if err := k.Start(ctx); err != nil {
		t.Fatal(err)
	}

	value := func(id, key string, seq, items, n int) []byte {
		m := faultmsg.BigDeadLetter{Body: faultmsg.Body{Run: run, ID: id, Key: key, Seq: seq}, Items: make([]faultmsg.Item, items)}
		for i := range m.Items {
			m.Items[i].N = n
		}
		b, _ := json.Marshal(m)
		return b
	}
	typ := kafka.Header{Key: kavari.HeaderMsgType, Value: []byte("BigDeadLetter")}
	bad := []struct {
		name string
		rec  kafka.Message
	}{
		{"hdr", kafka.Message{Value: value("hdr", "hdr", 0, 1, 1), Headers: []kafka.Header{typ, {Key: "x-trace", Value: []byte("t-1")},
			{Key: "x-huge", Value: []byte(strings.Repeat("h", 300_000))}}}},
		{"many", kafka.Message{Value: value("many", "many", 0, 20_000, 0), Headers: []kafka.Header{typ}}},
	}
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond,
		MaxAttempts: 10, BatchBytes: 2 << 20, Transport: tr}
	defer w.Close()
	write := func(rec kafka.Message) error {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return w.WriteMessages(wctx, rec)
	}
	keyOf := func(name string) string { return run + "-bad-" + name }
	next := 0
	for i := 0; i < good; i++ {
		id, key, seq := msgID(i), msgKey(i, 10), msgSeq(i, 10)
		led.Sent(id, key, seq)
		err := write(kafka.Message{Key: []byte(key), Value: value(id, key, seq, 1, 1), Headers: []kafka.Header{typ}})
		led.Published(id, err)
		if err != nil {
			t.Errorf("writing valid record %d: %v", i, err)
		}
		if i%every == every/2 && next < len(bad) {
			b := bad[next]
			next++
			b.rec.Key = []byte(keyOf(b.name))
			led.Sent(keyOf(b.name), keyOf(b.name), 0)
			err := write(b.rec)
			led.Published(keyOf(b.name), err)
			if err != nil {
				t.Errorf("writing %s: %v", b.name, err)
			}
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if !led.WaitHandled(wctx, good) {
		_, _, h, _ := led.Counts()
		t.Fatalf("only %d of %d valid records handled", h, good)
	}

	dead := readDeadLetters(t, brokers, topic+".dlq", run+"-bad-", len(bad))
	hv := func(m kafka.Message, name string) string {
		for _, h := range m.Headers {
			if h.Key == name {
				return string(h.Value)
			}
		}
		return ""
	}
	if recs := dead[keyOf("hdr")]; len(recs) > 0 {
		d := recs[0]
		if len(d.Value) != 0 || hv(d, kavari.HeaderTruncated) != strconv.Itoa(len(bad[0].rec.Value)) {
			t.Errorf("hdr: value %d bytes, kavari_truncated %q: want the value left out and its size", len(d.Value), hv(d, kavari.HeaderTruncated))
		}
		if hv(d, kavari.HeaderDroppedHeaders) != "x-huge" || hv(d, "x-huge") != "" || hv(d, "x-trace") != "t-1" {
			t.Errorf("hdr: kavari_dropped_headers %q, x-trace %q: want x-huge left out and named, x-trace kept", hv(d, kavari.HeaderDroppedHeaders), hv(d, "x-trace"))
		}
		if hv(d, kavari.HeaderErrorKind) != string(kavari.KindHandler) {
			t.Errorf("hdr: kavari_error_kind %q", hv(d, kavari.HeaderErrorKind))
		}
		led.Handled(ledger.Handle{ID: keyOf("hdr"), Key: keyOf("hdr"), At: d.Time, Proc: "dead-letter topic", Topic: d.Topic, Partition: d.Partition, Offset: d.Offset})
	}
	if recs := dead[keyOf("many")]; len(recs) > 0 {
		d := recs[0]
		e := hv(d, kavari.HeaderOriginalError)
		if len(d.Value) != len(bad[1].rec.Value) || len(e) > kavari.MaxErrorText || !strings.Contains(e, "bytes clipped") {
			t.Errorf("many: value %d bytes (want %d), original_error %d bytes (want at most %d, clipped)", len(d.Value), len(bad[1].rec.Value), len(e), kavari.MaxErrorText)
		}
		if hv(d, kavari.HeaderErrorKind) != string(kavari.KindValidation) {
			t.Errorf("many: kavari_error_kind %q", hv(d, kavari.HeaderErrorKind))
		}
		led.Handled(ledger.Handle{ID: keyOf("many"), Key: keyOf("many"), At: d.Time, Proc: "dead-letter topic", Topic: d.Topic, Partition: d.Partition, Offset: d.Offset})
	}

	// The partition kept committing: through the last record.
	conn, err := kafka.DialLeader(ctx, "tcp", brokers[0], topic, 0)
	if err != nil {
		t.Fatal(err)
	}
	end, err := conn.ReadLastOffset()
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	var committed int64
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		committed = committedNow(t, brokers, cfg.Consume.GroupID, topic, 1)[0]
		if committed == end {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("the group committed %d, not through the last record (end offset %d)", committed, end)
			break
		}
	}
	for _, p := range k.Health().Partitions {
		if p.Stuck != "" {
			t.Errorf("Health shows partition %d stuck: %s", p.Partition, p.Stuck)
		}
	}
	led.Assert(t)
	led.Set("dead_letters", len(dead))
	led.Note("%d valid records handled; both oversized dead letters written in a smaller form (no value and no 300 KB header; error text clipped to %d bytes); committed through offset %d",
		good, kavari.MaxErrorText, committed)
}
