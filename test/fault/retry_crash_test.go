package fault

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/test/fault/faultmsg"
	"github.com/kavari-go/kavari/test/fault/ledger"
)

// TestRetryTopicsConsumerProcessKilled is TestConsumerProcessKilled with
// retry topics (Consume.RetryTopics: 2 s and 4 s tiers after 2 in-place
// attempts): a tenth of the messages are handled in tier 1, a tenth in tier
// 2 (faultmsg.RetryFailures). The consumer process is SIGKILLed while
// records wait in the tiers, then a new one starts in the same group. Every
// record that had failed in the killed process without being handled is
// handled by the new one, in the tier it was due in or later, and no
// acknowledged message is skipped; records handled or moved but not yet
// committed are handled again (duplicates). Per-key order is not checked:
// a record that moves to a tier leaves its key's order.
func TestRetryTopicsConsumerProcessKilled(t *testing.T) {
	brokers := testenv.RequireReal(t)
	bin := buildFaultApp(t)
	led := ledger.ForTest(t, "consumer process with retry topics SIGKILLed while records wait in the tiers, then restarted")
	run, group := testenv.ID("run"), testenv.ID("retry-crash")
	const partitions, keys = 4, 40
	n := 3000
	if long() {
		n = 15000
	}
	led.Setup("shared broker; producer in the test (4 goroutines, batches of 50); consumer = faultapp process (%d partitions, %d keys, handler 5 ms, CommitInterval 1s, Retry 2 attempts in place, RetryTopics 2 s and 4 s); seq%%10 == 0 handled in tier 1, seq%%10 == 1 in tier 2",
		partitions, keys)

	pub := publisher(t, brokers, partitions, &faultmsg.RetryCrash{})
	s := &stream{k: pub, led: led, run: run, mk: func(b faultmsg.Body) kavari.Msg { return &faultmsg.RetryCrash{Body: b} }}
	ctx := context.Background()
	s.startPublishing(ctx, plan{to: n, keys: keys, workers: 4, batch: 50, pace: 40 * time.Millisecond})

	args := appArgs(brokers, group, run, "retry-crash", "-sleep", "5ms", "-trace-start", "-commit-interval", "1s")
	first := startApp(t, bin, "consumer-1", led, args...)
	// Killed once it handled records in both tiers and has more waiting.
	waitFor(t, 2*time.Minute, func() bool {
		first.mu.Lock()
		defer first.mu.Unlock()
		var tier2 bool
		for _, ev := range first.started {
			tier2 = tier2 || strings.HasSuffix(ev.Topic, ".retry.2") && first.finished[ev.ID]
		}
		return len(first.finished) >= n/3 && tier2
	}, "consumer-1 did not handle a third of the messages and one in tier 2")
	first.kill()

	// The records that failed in the killed process and were not handled:
	// waiting in a tier (or moving to one).
	first.mu.Lock()
	var waiting []string
	for id, ev := range first.started {
		if !first.finished[id] && ev.Attempt <= faultmsg.RetryFailures(ev.Seq) {
			waiting = append(waiting, id)
		}
	}
	handledBefore := len(first.finished)
	first.mu.Unlock()
	t.Logf("consumer-1 SIGKILLed after handling %d messages, with %d failed records not handled (in or on their way to a tier)", handledBefore, len(waiting))
	led.Set("handled_before_kill", handledBefore)
	led.Set("waiting_in_tiers_at_kill", len(waiting))
	if len(waiting) == 0 {
		t.Error("no record waited in a tier at the kill")
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
	for _, id := range waiting {
		if !redone[id] {
			missing++
			if missing <= 5 {
				t.Errorf("record %s failed in consumer-1 and was not handled by consumer-2", id)
			}
		}
	}
	second.mu.Lock()
	inTier := map[string]int{}
	for id, ev := range second.started {
		if redone[id] {
			inTier[ev.Topic[strings.LastIndexByte(ev.Topic, '.')+1:]]++
		}
	}
	second.mu.Unlock()
	again := 0
	for id := range first.handledIDs() {
		if redone[id] {
			again++
		}
	}
	led.Set("handled_again_by_new_process", again)
	led.Note("SIGKILL after %d handled with %d failed records waiting in the tiers; all handled by the new process (missing %d); %d already-handled messages handled again (not yet committed); the new process handled records last started in: %v",
		handledBefore, len(waiting), missing, again, inTier)
	if stopped, err := second.term(30 * time.Second); err != nil || stopped == nil {
		t.Errorf("consumer-2 did not stop cleanly on SIGTERM: %v (stopped event %+v)", err, stopped)
	}
}
