package fault

import (
	"context"
	"fmt"
	"github.com/kavari-go/kavari"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/test/fault/faultmsg"
	"github.com/kavari-go/kavari/test/fault/ledger"
)

// TestGracefulStopMidProcessing SIGTERMs a consumer process (faultapp) in the
// middle of processing; faultapp calls k.Stop with a 1.5 s deadline. Per key,
// the first message takes 800 ms, the next two 20 ms, the fourth 4 s (then
// 20 ms, every 7th 4 s). The SIGTERM comes as soon as every key's first
// handler has started, so during the drain the 800 ms and 20 ms handlers
// complete and the 4 s ones are cancelled at the deadline. CommitInterval is
// 30 s, so no periodic commit falls inside the run: whatever is committed was
// committed by Stop.
//
// Completed work committed: after the process exits, the group's committed
// offset of each partition must be exactly the first offset the stopped
// process did not handle (the contiguous completed prefix, including what
// completed during the drain). The rest is redelivered: a second process
// starts at that offset on every partition (nothing skipped) and handles
// every message not handled before. Records handled past a gap (a key that
// finished while an earlier one was cancelled) are legitimately handled
// again.
func TestGracefulStopMidProcessing(t *testing.T) {
	brokers := testenv.RequireReal(t)
	bin := buildFaultApp(t)
	led := ledger.ForTest(t, "graceful Stop (1.5 s deadline) in the middle of processing, then restart")
	led.CheckOrder()
	run, group := testenv.ID("run"), testenv.ID("stop")
	const topic, partitions, keys = "kavari-fault-stop", 3, 30
	n := 600
	if long() {
		n = 3000
	}
	led.Setup("shared broker; %d messages on %d partitions, %d keys; per key: 800 ms, 20 ms, 20 ms, 4 s, then 20 ms with every 7th 4 s; faultapp -stop-timeout 1.5s, CommitInterval 30s, MaxInFlight 256",
		n, partitions, keys)

	pub := publisher(t, brokers, partitions, &faultmsg.Stop{})
	parts := partitionsOf(t, brokers, topic)
	ctx := context.Background()
	publishAll(ctx, pub, led, run, func(b faultmsg.Body) kavari.Msg { return &faultmsg.Stop{Body: b} },
		plan{to: n, keys: keys, workers: 2, batch: 100, body: func(b *faultmsg.Body) {
			switch {
			case b.Seq == 0:
				b.SleepMs = 800
			case b.Seq%7 == 3:
				b.SleepMs = 4000
			default:
				b.SleepMs = 20
			}
		}}, nil)
	if _, acked, _, _ := led.Counts(); acked != n {
		t.Fatalf("only %d of %d published", acked, n)
	}

	args := appArgs(brokers, group, run, "stop", "-stop-timeout", "1500ms", "-commit-interval", "30s", "-max-inflight", "256", "-trace-start")
	first := startApp(t, bin, "consumer-1", led, args...)
	waitFor(t, 2*time.Minute, func() bool {
		first.mu.Lock()
		defer first.mu.Unlock()
		return len(first.started) >= keys
	}, "consumer-1 did not start a handler for every key")
	termAt := time.Now()
	stopped, err := first.term(time.Minute)
	t.Logf("SIGTERM with %d handlers started; process exited %s later", keys, time.Since(termAt).Round(time.Millisecond))
	if stopped != nil {
		t.Logf("k.Stop returned after %d ms: %q", stopped.Ms, stopped.Err)
	}
	if stopped == nil {
		t.Fatalf("consumer-1 printed no stopped event (exit %v)", err)
	}
	led.Set("stop_returned_after", time.Duration(stopped.Ms)*time.Millisecond)
	led.Set("stop_error", stopped.Err)
	if stopped.Ms > 1500+2000 {
		t.Errorf("Stop took %d ms with a 1.5 s deadline", stopped.Ms)
	}

	// The handled offsets of consumer-1, per partition.
	done := map[int]map[int64]bool{}
	var drained int
	for _, h := range led.Handles() {
		if done[h.Partition] == nil {
			done[h.Partition] = map[int64]bool{}
		}
		done[h.Partition][h.Offset] = true
		if h.At.After(termAt) {
			drained++
		}
	}
	led.Set("completed_during_drain", drained)
	if drained == 0 {
		t.Error("no handler completed during the drain: the stop was not mid-processing")
	}
	committed := committedNow(t, brokers, group, topic, parts)
	lagging := 0
	var uncommitted []string
	prefixes := map[int]int64{}
	for p := 0; p < parts; p++ {
		want := int64(0)
		for done[p][want] {
			want++
		}
		prefixes[p] = want
		got := committed[p]
		if got < 0 {
			got = 0
		}
		switch {
		case got > want:
			t.Errorf("partition %d: committed %d, but offset %d was never handled: committed past unfinished work", p, got, want)
		case got < want:
			lagging += int(want - got)
			uncommitted = append(uncommitted, fmt.Sprintf("partition %d: committed %s, but every record up to offset %d was completed", p, offsetText(committed[p]), want-1))
		}
	}
	led.Set("completed_not_committed", lagging)

	// Restart: redelivery starts at the committed offsets.
	handledByFirst := first.handledIDs()
	restart := time.Now()
	second := startApp(t, bin, "consumer-2", led, args...)
	waitFor(t, 2*time.Minute, func() bool { return len(second.handledIDs()) > 0 }, "consumer-2 handled nothing")
	second.mu.Lock()
	rejoin := second.firstDone.Sub(restart)
	second.mu.Unlock()
	led.Recovered(rejoin, "new process started → its first handled message")
	row := (&stream{led: led}).finish(t, 2*time.Minute)
	firstOffset := map[int]int64{}
	for _, h := range led.Handles() {
		if h.Proc == fmt.Sprintf("%s pid %d", second.name, second.pid) {
			if o, ok := firstOffset[h.Partition]; !ok || h.Offset < o {
				firstOffset[h.Partition] = h.Offset
			}
		}
	}
	var notes []string
	for p := 0; p < parts; p++ {
		c := max(committed[p], 0)
		if o, ok := firstOffset[p]; ok && o > c {
			t.Errorf("partition %d: consumer-2 started at offset %d, past the committed %d", p, o, c)
		}
		notes = append(notes, fmt.Sprintf("partition %d: committed %s", p, offsetText(committed[p])))
	}
	sort.Strings(notes)
	notes = append(notes, fmt.Sprintf("completed prefix %v", prefixes))
	again := 0
	for id := range second.handledIDs() {
		if handledByFirst[id] {
			again++
		}
	}
	led.Set("handled_again_after_restart", again)
	led.Note("SIGTERM once every key's first handler had started; Stop returned in %d ms (err %q); %d handlers completed during the drain, %d completed record(s) left uncommitted (%s); %d handled again after the restart",
		stopped.Ms, stopped.Err, drained, lagging, strings.Join(notes, "; "), again)
	if _, err := second.term(time.Minute); err != nil {
		t.Logf("consumer-2 exit: %v", err)
	}
	_ = row
	if lagging > 0 {
		knownBug(t, led, "Stop does not commit work completed during its drain when a handler runs until the deadline "+
			"(%d completed record(s) not committed: %s; Stop returned after %d ms: %q); the member does not leave the group either: "+
			"the next process got its first record %s after starting (session timeout 6 s)",
			lagging, strings.Join(uncommitted, "; "), stopped.Ms, stopped.Err, rejoin.Round(time.Millisecond))
	}
}

// offsetText shows a committed offset, "nothing" for none.
func offsetText(o int64) string {
	if o < 0 {
		return "nothing"
	}
	return fmt.Sprint(o)
}
