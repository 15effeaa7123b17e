package fault

import (
	"context"
	"testing"
	"time"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/test/fault/faultmsg"
	"github.com/kavari-go/kavari/test/fault/ledger"
)

// TestBatchConsumerProcessKilled is TestConsumerProcessKilled with a batch
// handler (one 50 ms bulk write per batch): the consumer process is
// SIGKILLed during a batch, then a new one starts in the same group. Every
// record of the batches in flight at the kill is handled by the new
// process, and no acknowledged message is skipped; records handled but not
// yet committed are handled again (duplicates).
func TestBatchConsumerProcessKilled(t *testing.T) {
	brokers := testenv.RequireReal(t)
	bin := buildFaultApp(t)
	led := ledger.ForTest(t, "consumer process SIGKILLed during a batch (batch handler), then restarted")
	led.CheckOrder()
	run, group := testenv.ID("run"), testenv.ID("batch-crash")
	const partitions, keys = 4, 40
	n := 6000
	if long() {
		n = 30000
	}
	sleep := "50ms"
	led.Setup("shared broker; producer in the test (4 goroutines, batches of 50); consumer = faultapp process with a batch handler (%d partitions, %d keys, %s per batch, MaxBatchRecords 100, CommitInterval 1s)",
		partitions, keys, sleep)

	pub := publisher(t, brokers, partitions, &faultmsg.BatchCrash{})
	s := &stream{k: pub, led: led, run: run, mk: func(b faultmsg.Body) kavari.Msg { return &faultmsg.BatchCrash{Body: b} }}
	ctx := context.Background()
	s.startPublishing(ctx, plan{to: n, keys: keys, workers: 4, batch: 50, pace: 40 * time.Millisecond})

	args := appArgs(brokers, group, run, "batch-crash", "-sleep", sleep, "-trace-start", "-commit-interval", "1s")
	first := startApp(t, bin, "consumer-1", led, args...)
	// Kill once a third is handled and while a batch is being handled: a
	// consumer that caught up with the publisher waits between batches,
	// and a kill then is not a mid-batch crash.
	waitFor(t, 2*time.Minute, func() bool {
		first.mu.Lock()
		defer first.mu.Unlock()
		if len(first.finished) < n/3 {
			return false
		}
		for id := range first.started {
			if !first.finished[id] {
				return true
			}
		}
		return false
	}, "consumer-1 did not handle a third of the messages with a batch under way")
	first.kill()

	first.mu.Lock()
	var unfinished []string
	for id := range first.started {
		if !first.finished[id] {
			unfinished = append(unfinished, id)
		}
	}
	handledBefore := len(first.finished)
	first.mu.Unlock()
	t.Logf("consumer-1 SIGKILLed after handling %d messages, with %d records in unfinished batches", handledBefore, len(unfinished))
	led.Set("handled_before_kill", handledBefore)
	led.Set("unfinished_at_kill", len(unfinished))
	if len(unfinished) == 0 {
		t.Error("no batch was being handled at the kill: not a mid-batch crash")
	}

	restart := time.Now()
	second := startApp(t, bin, "consumer-2", led, args...)
	waitFor(t, 2*time.Minute, func() bool { return len(second.handledIDs()) > 0 }, "consumer-2 handled nothing")
	second.mu.Lock()
	led.Recovered(second.firstDone.Sub(restart), "new process started → its first handled message")
	second.mu.Unlock()

	s.waitPublished(t, 2*time.Minute)
	s.finish(t, 2*time.Minute)

	redone := second.handledIDs()
	missing := 0
	for _, id := range unfinished {
		if !redone[id] {
			missing++
			if missing <= 5 {
				t.Errorf("record %s was in a batch when consumer-1 died and was not redelivered to consumer-2", id)
			}
		}
	}
	again := 0
	for id := range first.handledIDs() {
		if redone[id] {
			again++
		}
	}
	led.Set("handled_again_by_new_process", again)
	led.Note("SIGKILL during a batch after %d handled with %d records in unfinished batches; all redelivered to the new process (missing %d); %d already-handled messages handled again (not yet committed)",
		handledBefore, len(unfinished), missing, again)
	if stopped, err := second.term(30 * time.Second); err != nil || stopped == nil {
		t.Errorf("consumer-2 did not stop cleanly on SIGTERM: %v (stopped event %+v)", err, stopped)
	}
}
