package fault

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/test/fault/faultmsg"
	"github.com/kavari-go/kavari/test/fault/ledger"
)

// MissingDLQ is consumed by the missing-dead-letter-topic test.
type MissingDLQ struct {
	kavari.Message `kavari:"topic=kavari-fault-missing-dlq,key=Key"`
	faultmsg.Body
}

// TestStartFailsOnMissingDeadLetterTopic (issue 8, item 3): with the default
// Topics.Create and Publish.AllowAutoCreate (both off), a dead-letter topic that does
// not exist would pin its partition's commits forever at the first poison
// record. Start must refuse with an error matching kavari.ErrMissingTopics
// that names the topic, and consume nothing. Once the topic exists, Start
// succeeds, the poison record is dead-lettered, every good record is handled
// and the partition's committed offset moves past the poison record to the
// end of the partition.
func TestStartFailsOnMissingDeadLetterTopic(t *testing.T) {
	brokers := testenv.RequireReal(t)
	led := ledger.ForTest(t, "dead-letter topic missing at Start (Topics.Create and Publish.AllowAutoCreate off), then created; a poison record on the partition")
	run := testenv.ID("run")
	const topic = "kavari-fault-missing-dlq"
	const good = 20
	// A dead-letter suffix of its own makes the dead-letter topic new on a
	// shared broker; everything else is the default configuration.
	suffix := "." + testenv.ID("dlq")
	dlq := topic + suffix
	led.Setup("shared broker; 1 partition: %d valid messages with a poison record (no headers) in the middle; default Topics.Create/Publish.AllowAutoCreate (off), Topics.DeadLetterSuffix %q; Start with the dead-letter topic missing, then EnsureTopics and Start again", good, suffix)

	pub := publisher(t, brokers, 1, &MissingDLQ{})
	ctx := context.Background()
	tr := &kafka.Transport{} // not DefaultTransport: see newClient
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond, MaxAttempts: 10, Transport: tr}
	defer w.Close()
	var poisonOffset int64
	for i := 0; i < good; i++ {
		if i == good/2 {
			poisonOffset = endOffsets(t, brokers, topic, 1)[0]
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := w.WriteMessages(wctx, kafka.Message{Key: []byte(run + "-poison"), Value: []byte("not a kavari record")})
			cancel()
			if err != nil {
				t.Fatalf("writing the poison record: %v", err)
			}
		}
		b := faultmsg.Body{Run: run, ID: msgID(i), Key: msgKey(i, 5), Seq: msgSeq(i, 5)}
		led.Sent(b.ID, b.Key, b.Seq)
		_, err := pub.Publish(ctx, &MissingDLQ{Body: b})
		led.Published(b.ID, err)
	}
	end := endOffsets(t, brokers, topic, 1)[0]
	led.Set("poison_offset", poisonOffset)
	led.Set("end_offset", end)

	reg := kavari.NewRegistry()
	if err := kavari.RegisterFuncOn(reg, &MissingDLQ{}, func(ctx context.Context, m *MissingDLQ) error {
		recordHandled(ctx, led, run, "consumer", &m.Body)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	cfg := baseConfig(brokers, reg)
	cfg.Topics.DeadLetterSuffix = suffix
	cfg.Topics.Partitions = 1 // the dead-letter topic EnsureTopics creates
	if cfg.Topics.Create || cfg.Publish.AllowAutoCreate {
		t.Fatal("the test needs Topics.Create and Publish.AllowAutoCreate off")
	}
	k, err := kavari.New(cfg) // not newKavari: its EnsureTopics would create the dead-letter topic
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_ = k.Stop(ctx)
	})

	err = k.Start(ctx)
	t.Logf("Start with %s missing: %v", dlq, err)
	led.Set("start_error", fmt.Sprint(err))
	var mt *kavari.MissingTopicsError
	switch {
	case !errors.Is(err, kavari.ErrMissingTopics):
		knownBug(t, led, "Start with the dead-letter topic %s missing returned %v, want an error matching kavari.ErrMissingTopics", dlq, err)
	case !errors.As(err, &mt) || len(mt.Topics) != 1 || mt.Topics[0] != dlq:
		t.Errorf("Start's error names %v, want [%s]", mt, dlq)
	}
	if h := k.Health(); h.Started {
		t.Errorf("Health after the failed Start: Started is true")
	}
	// Nothing may be consumed by the failed Start: give a wrongly started
	// consumer time to join and handle (a hang guard, not a measurement).
	time.Sleep(3 * time.Second)
	if _, _, handled, _ := led.Counts(); handled > 0 {
		t.Errorf("%d messages handled after Start failed", handled)
	}
	if c := committedNow(t, brokers, cfg.Consume.GroupID, topic, 1)[0]; c >= 0 {
		t.Errorf("the group committed offset %d after Start failed", c)
	}

	// The operator creates the topics; Start now succeeds.
	ectx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := k.EnsureTopics(ectx); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	if err := k.Start(ctx); err != nil {
		t.Fatalf("Start after creating %s: %v", dlq, err)
	}
	wctx, cancel2 := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel2()
	if !led.WaitAllHandled(wctx) {
		t.Error("not every valid message was handled after the second Start")
	}
	waitFor(t, time.Minute, func() bool { return committedNow(t, brokers, cfg.Consume.GroupID, topic, 1)[0] == end },
		"the committed offset did not reach the end of the partition (%d) past the poison record at %d", end, poisonOffset)
	led.Recovered(time.Since(begin), "second Start to every valid message handled and the partition committed to its end")
	led.Set("committed_offset", end)

	byKey := readDeadLetters(t, brokers, dlq, run+"-poison", 1)
	dead := byKey[run+"-poison"]
	if len(dead) != 1 {
		t.Errorf("%d dead letters of the poison record on %s, want 1", len(dead), dlq)
	}
	for _, d := range dead {
		var off string
		for _, h := range d.Headers {
			if h.Key == "kavari_original_offset" {
				off = string(h.Value)
			}
		}
		if off != strconv.FormatInt(poisonOffset, 10) {
			t.Errorf("dead letter with kavari_original_offset %q, want %d", off, poisonOffset)
		}
	}
	led.Set("dead_letters", len(dead))
	led.Assert(t)
	led.Note("Start error: %v", err)
}
