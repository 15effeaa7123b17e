package fault

import (
	"context"
	"github.com/kavari-go/kavari"
	"testing"
	"time"

	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/test/fault/faultmsg"
	"github.com/kavari-go/kavari/test/fault/ledger"
)

// TestConsumerProcessKilled SIGKILLs a consumer process (faultapp) while its
// handlers are busy and messages keep arriving, then starts a new one in the
// same group. Every record whose handler had started but not finished in the
// killed process must be handled by the new one, and no acknowledged message
// may be skipped. Records handled but not yet committed are handled again
// (duplicates). Time to recover: from starting the new process to its first
// handled message (it includes waiting for the dead member's session, 6 s,
// to expire).
func TestConsumerProcessKilled(t *testing.T) {
	brokers := testenv.RequireReal(t)
	bin := buildFaultApp(t)
	led := ledger.ForTest(t, "consumer process SIGKILLed mid-processing, then restarted")
	led.CheckOrder()
	run, group := testenv.ID("run"), testenv.ID("crash")
	const partitions, keys = 4, 40
	n := 6000
	if long() {
		n = 30000
	}
	sleep := "20ms"
	led.Setup("shared broker; producer in the test (4 goroutines, batches of 50); consumer = faultapp process (%d partitions, %d keys, handler %s, MaxInFlight 64, CommitInterval 1s)",
		partitions, keys, sleep)

	pub := publisher(t, brokers, partitions, &faultmsg.Crash{})
	s := &stream{k: pub, led: led, run: run, mk: func(b faultmsg.Body) kavari.Msg { return &faultmsg.Crash{Body: b} }}
	ctx := context.Background()
	s.startPublishing(ctx, plan{to: n, keys: keys, workers: 4, batch: 50, pace: 40 * time.Millisecond})

	args := appArgs(brokers, group, run, "crash", "-sleep", sleep, "-trace-start", "-commit-interval", "1s")
	first := startApp(t, bin, "consumer-1", led, args...)
	waitFor(t, 2*time.Minute, func() bool { return len(first.handledIDs()) >= n/3 }, "consumer-1 did not handle a third of the messages")
	first.kill()

	// What the killed process had started but not finished.
	first.mu.Lock()
	var unfinished []string
	for id := range first.started {
		if !first.finished[id] {
			unfinished = append(unfinished, id)
		}
	}
	handledBefore := len(first.finished)
	first.mu.Unlock()
	t.Logf("consumer-1 SIGKILLed after handling %d messages, with %d handlers unfinished", handledBefore, len(unfinished))
	led.Set("handled_before_kill", handledBefore)
	led.Set("unfinished_at_kill", len(unfinished))
	if len(unfinished) == 0 {
		t.Error("no handler was running at the kill: not a mid-processing crash")
	}

	restart := time.Now()
	second := startApp(t, bin, "consumer-2", led, args...)
	waitFor(t, 2*time.Minute, func() bool { return len(second.handledIDs()) > 0 }, "consumer-2 handled nothing")
	second.mu.Lock()
	led.Recovered(second.firstDone.Sub(restart), "new process started → its first handled message")
	second.mu.Unlock()

	s.waitPublished(t, 2*time.Minute)
	row := s.finish(t, 2*time.Minute)

	// Every record interrupted by the kill was handled by the new process.
	redone := second.handledIDs()
	missing := 0
	for _, id := range unfinished {
		if !redone[id] {
			missing++
			if missing <= 5 {
				t.Errorf("record %s was being handled when consumer-1 died and was not redelivered to consumer-2", id)
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
	led.Note("SIGKILL after %d handled with %d handlers in flight; all %d unfinished redelivered to the new process (missing %d); %d already-handled messages handled again (not yet committed)",
		handledBefore, len(unfinished), len(unfinished), missing, again)
	if stopped, err := second.term(30 * time.Second); err != nil || stopped == nil {
		t.Errorf("consumer-2 did not stop cleanly on SIGTERM: %v (stopped event %+v)", err, stopped)
	}
	_ = row
}
