package fault

import (
	"context"
	"github.com/kavari-go/kavari"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/test/fault/faultmsg"
	"github.com/kavari-go/kavari/test/fault/ledger"
)

// TestSlowHeadThenCrash: on one partition the first record's handler is slow
// while the 10,000 records after it complete, so the committed offset stays
// at the first record; then the consumer process is SIGKILLed and a new one
// takes over. On franz-go the commits list the completed records in their
// metadata and the new process skips them: only the records really in
// flight at the kill are handled again. kafka-go commits no metadata: every
// record after the slow one is handled again (the row shows how many).
func TestSlowHeadThenCrash(t *testing.T) {
	brokers := testenv.RequireReal(t)
	bin := buildFaultApp(t)
	led := ledger.ForTest(t, "slow record at a partition's head, 10,000 completed after it, consumer SIGKILLed ("+testenv.Transport()+")")
	run, group := testenv.ID("run"), testenv.ID("head")
	const n = 10_001
	led.Setup("shared broker; 1 partition; the first record's handler blocks, the %d after it complete (distinct keys, MaxInFlight 64, MaxBuffered 20000, CommitInterval 200ms); consumer = faultapp process, SIGKILLed, then a new one", n-1)

	pub := publisher(t, brokers, 1, &faultmsg.Head{})
	s := &stream{k: pub, led: led, run: run, mk: func(b faultmsg.Body) kavari.Msg { return &faultmsg.Head{Body: b} }}
	ctx := context.Background()
	// The slow record first, alone, so it is the partition's head.
	publishAll(ctx, pub, led, run, s.mk, plan{from: 0, to: 1, keys: n, body: func(b *faultmsg.Body) { b.SleepMs = int((10 * time.Minute).Milliseconds()) }}, nil)
	publishAll(ctx, pub, led, run, s.mk, plan{from: 1, to: n, keys: n, workers: 4, batch: 500}, nil)

	args := appArgs(brokers, group, run, "head", "-trace-start", "-commit-interval", "200ms", "-max-buffered", "20000")
	first := startApp(t, bin, "consumer-1", led, args...)
	waitFor(t, 3*time.Minute, func() bool { return len(first.handledIDs()) >= n-1 }, "consumer-1 did not complete the records after the slow one")
	// Let a few commit intervals pass: the commits after the last
	// completion are what the next owner finds.
	time.Sleep(2 * time.Second)
	first.kill()

	first.mu.Lock()
	var unfinished []string
	for id := range first.started {
		if !first.finished[id] {
			unfinished = append(unfinished, id)
		}
	}
	first.mu.Unlock()
	led.Set("unfinished_at_kill", len(unfinished))
	if len(unfinished) != 1 || unfinished[0] != msgID(0) {
		t.Errorf("in flight at the kill: %v; want only the slow record %s", unfinished, msgID(0))
	}

	restart := time.Now()
	second := startApp(t, bin, "consumer-2", led, append(args, "-ignore-sleep-ms")...)
	waitFor(t, 2*time.Minute, func() bool { return second.handledIDs()[msgID(0)] }, "consumer-2 did not handle the slow record")
	second.mu.Lock()
	led.Recovered(second.firstDone.Sub(restart), "new process started → its first handled message")
	second.mu.Unlock()
	// Every record was handled or skipped by the new process once its
	// committed offset reaches the end of the partition.
	end := endOffset(t, brokers, "kavari-fault-head")
	waitFor(t, 3*time.Minute, func() bool { return committedNow(t, brokers, group, "kavari-fault-head", 1)[0] >= end },
		"consumer-2 did not commit up to the end of the partition (%d)", end)
	row := s.finish(t, 2*time.Minute)

	again := 0
	for id := range first.handledIDs() {
		if second.handledIDs()[id] {
			again++
		}
	}
	led.Set("handled_again_by_new_process", again)
	led.Note("%s: %d records completed behind a slow head record, SIGKILL with %d in flight; the new process handled %d completed records again",
		testenv.Transport(), n-1, len(unfinished), again)
	t.Logf("%s: handled again after the take-over: %d (in flight at the kill: %d)", testenv.Transport(), again, len(unfinished))
	if testenv.Transport() == "franz-go" && again > 0 {
		t.Errorf("franz-go: %d completed records handled again; the commit metadata should have listed them", again)
	}
	if stopped, err := second.term(30 * time.Second); err != nil || stopped == nil {
		t.Errorf("consumer-2 did not stop cleanly on SIGTERM: %v (stopped event %+v)", err, stopped)
	}
	_ = row
}

// endOffset returns the high watermark of partition 0 of topic.
func endOffset(t *testing.T, brokers []string, topic string) int64 {
	t.Helper()
	client, closeClient := newClient(brokers, 10*time.Second)
	defer closeClient()
	resp, err := client.ListOffsets(context.Background(), &kafka.ListOffsetsRequest{
		Topics: map[string][]kafka.OffsetRequest{topic: {kafka.LastOffsetOf(0)}}})
	if err != nil {
		t.Fatalf("ListOffsets %s: %v", topic, err)
	}
	ps := resp.Topics[topic]
	if len(ps) == 0 {
		t.Fatalf("ListOffsets %s: no partition in the answer", topic)
	}
	if ps[0].Error != nil {
		t.Fatalf("ListOffsets %s: %v", topic, ps[0].Error)
	}
	return ps[0].LastOffset
}
