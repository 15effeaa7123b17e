package fault

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/test/fault/faultmsg"
	"github.com/kavari-go/kavari/test/fault/ledger"
)

// StopFrozen and StopAbandon are consumed by the Stop-reports-uncommitted-work
// tests.
type StopFrozen struct {
	kavari.Message `kavari:"topic=kavari-fault-stop-frozen,key=Key"`
	faultmsg.Body
}

// StopAbandon is StopFrozen's topic for the abandoned-handlers variant.
type StopAbandon struct {
	kavari.Message `kavari:"topic=kavari-fault-stop-abandon,key=Key"`
	faultmsg.Body
}

// TestStopReportsUncommittedWork (issue 8, item 2): every record was
// handled, but with CommitInterval 1h only Stop's final commit could save
// them, and the only broker is gone when Stop runs: SIGKILLed ("killed",
// the commit is refused at once) or SIGSTOPped ("frozen", the commit request
// is sent and never answered). Stop (3 s deadline) must say so with an error
// matching kavari.ErrCommitFailed whose *CommitError names the partitions.
// After the broker is back, a second consumer of the group gets the
// uncommitted records again: the extra deliveries are exactly the records
// above the committed offsets, none lost.
func TestStopReportsUncommittedWork(t *testing.T) {
	parallelOwnCluster(t)
	for _, mode := range []string{"killed", "frozen"} {
		t.Run(mode, func(t *testing.T) { stopReportsUncommittedWork(t, mode) })
	}
}

func stopReportsUncommittedWork(t *testing.T, mode string) {
	c := ownCluster(t, 1)
	brokers := c.Brokers()
	led := ledger.ForTest(t, "Stop(3 s) with completed, uncommitted work and the only broker "+map[string]string{"killed": "SIGKILLed", "frozen": "frozen (SIGSTOP)"}[mode]+": Stop reports the failed commit")
	led.KafkaVersion(c.Version())
	run := testenv.ID("run")
	const n, parts = 60, 3
	const topic = "kavari-fault-stop-frozen"
	led.Setup("own 1-node cluster; %d messages on %d partitions, all handled by consumer-1 (CommitInterval 1h), broker %s, Stop(ctx 3 s), broker back, consumer-2 in the same group", n, parts, mode)
	pub := publisher(t, brokers, parts, &StopFrozen{})
	mk := func(b faultmsg.Body) kavari.Msg { return &StopFrozen{Body: b} }
	ctx := context.Background()
	publishAll(ctx, pub, led, run, mk, plan{to: n, keys: 10, workers: 2}, nil)

	group := testenv.ID("stop-frozen")
	newConsumer := func(proc string) *kavari.Client {
		reg := kavari.NewRegistry()
		if err := kavari.RegisterFuncOn(reg, &StopFrozen{}, func(ctx context.Context, m *StopFrozen) error {
			recordHandled(ctx, led, run, proc, &m.Body)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		cfg := baseConfig(brokers, reg)
		cfg.Consume.GroupID = group
		cfg.Consume.CommitInterval = time.Hour // only the final commit can save the completed work
		return newKavari(t, cfg)
	}
	first := newConsumer("consumer-1")
	if err := first.Start(ctx); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if !led.WaitAllHandled(wctx) {
		t.Fatal("consumer-1 did not handle every message")
	}

	var back func()
	switch mode {
	case "killed":
		if err := c.Kill(0); err != nil {
			t.Fatal(err)
		}
		back = func() {
			if err := c.Restart(0); err != nil {
				t.Fatal(err)
			}
		}
	case "frozen":
		pid := brokerPID(t, c, 0)
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		resumed := false
		back = func() {
			if !resumed {
				resumed = true
				_ = syscall.Kill(pid, syscall.SIGCONT)
			}
		}
		t.Cleanup(back) // before ownCluster's cleanup stops the cluster
	}
	time.Sleep(500 * time.Millisecond)

	stopCtx, stopCancel := context.WithTimeout(ctx, 3*time.Second)
	defer stopCancel()
	begin := time.Now()
	stopped := make(chan error, 1)
	go func() { stopped <- first.Stop(stopCtx) }()
	var stopErr error
	select {
	case stopErr = <-stopped:
	case <-time.After(60 * time.Second):
		t.Fatal("Stop(ctx 3 s) still running after 60 s with the broker frozen")
	}
	t.Logf("Stop returned after %s: %v", time.Since(begin).Round(time.Millisecond), stopErr)
	led.Set("stop_returned_after", time.Since(begin).Round(time.Millisecond).String())
	led.Set("stop_error", oneLine(stopErr))
	var ce *kavari.CommitError
	switch {
	case !errors.Is(stopErr, kavari.ErrCommitFailed):
		t.Errorf("Stop returned %v: want an error matching kavari.ErrCommitFailed, completed work was not committed", stopErr)
	case !errors.As(stopErr, &ce):
		t.Errorf("Stop returned %v: want a *kavari.CommitError naming the partitions", stopErr)
	case len(ce.Offsets[topic]) == 0:
		t.Errorf("the CommitError names no partition of %s: %v", topic, ce.Offsets)
	default:
		led.Set("commit_error_partitions", len(ce.Offsets[topic]))
		led.Set("may_have_been_applied", ce.MayHaveBeenApplied)
		if mode == "frozen" && !ce.MayHaveBeenApplied {
			t.Errorf("Stop returned %v: the frozen broker holds the commit request, so its outcome is unknown: want MayHaveBeenApplied", stopErr)
		}
	}

	back()
	second := newConsumer("consumer-2")
	if err := second.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// Once consumer-2 holds every partition, the committed offsets are what
	// it started from (it commits nothing before its Stop), and everything
	// above them must come again. A frozen broker may still apply the
	// commit request it had received before it froze: the client cannot know.
	waitFor(t, 2*time.Minute, func() bool {
		h := second.Health()
		return h.Connected && len(h.Assigned[topic]) == parts
	}, "consumer-2 did not get every partition: %+v", second.Health())
	committed := committedNow(t, brokers, group, topic, parts)
	ends := endOffsets(t, brokers, topic, parts)
	uncommitted := 0
	for p := 0; p < parts; p++ {
		uncommitted += int(ends[p] - max(committed[p], 0))
	}
	led.Set("committed_when_consumer2_joined", fmt.Sprint(committed))
	led.Set("uncommitted_records", uncommitted)

	waitFor(t, 2*time.Minute, func() bool { return led.Row().Deliveries >= n+uncommitted },
		"consumer-2 redelivered %d of the %d uncommitted records", led.Row().Deliveries-n, uncommitted)
	time.Sleep(time.Second) // let any further repeat show up
	row := led.Assert(t)
	if row.ExtraDeliveries != uncommitted {
		t.Errorf("%d extra deliveries, want %d (the records above the committed offsets)", row.ExtraDeliveries, uncommitted)
	}
	if committedAll := uncommitted == 0; committedAll {
		led.Note("the broker applied the final commit it had received before it froze once it resumed: nothing was redelivered, as Stop's error said may happen (MayHaveBeenApplied)")
	}
	led.Note("broker %s; Stop error: %s", mode, oneLine(stopErr))
}

// TestStopReportsAbandonedHandlers (issue 8, item 2): handlers that ignore
// the cancellation of their context are still running at Stop's deadline.
// Stop must return an error matching kavari.ErrHandlersAbandoned naming the
// partition, commit the records that did complete, and a second consumer
// must get the abandoned records again (none lost).
func TestStopReportsAbandonedHandlers(t *testing.T) {
	brokers := testenv.RequireReal(t)
	led := ledger.ForTest(t, "Stop(3 s) with handlers that ignore cancellation: Stop reports them abandoned")
	run := testenv.ID("run")
	const n, fast = 20, 15
	const topic = "kavari-fault-stop-abandon"
	led.Setup("shared broker; %d messages on 1 partition, one key each; the first %d handled at once, the last %d block ignoring their context until Stop returned; CommitInterval 1h, Stop(ctx 3 s); consumer-2 in the same group", n, fast, n-fast)
	pub := publisher(t, brokers, 1, &StopAbandon{})
	ctx := context.Background()
	for i := 0; i < n; i++ {
		b := faultmsg.Body{Run: run, ID: msgID(i), Key: msgKey(i, n), Seq: 0}
		if i >= fast {
			b.SleepMs = 1 // marks a handler that ignores cancellation
		}
		led.Sent(b.ID, b.Key, b.Seq)
		_, err := pub.Publish(ctx, &StopAbandon{Body: b})
		led.Published(b.ID, err)
	}

	group := testenv.ID("stop-abandon")
	release := make(chan struct{})
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	var blocked sync.Map
	newConsumer := func(proc string, stubborn bool) *kavari.Client {
		reg := kavari.NewRegistry()
		if err := kavari.RegisterFuncOn(reg, &StopAbandon{}, func(ctx context.Context, m *StopAbandon) error {
			if m.Run == run && stubborn && m.SleepMs > 0 {
				blocked.Store(m.ID, true)
				<-release // ignores ctx
			}
			recordHandled(ctx, led, run, proc, &m.Body)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		cfg := baseConfig(brokers, reg)
		cfg.Consume.GroupID = group
		cfg.Consume.CommitInterval = time.Hour
		return newKavari(t, cfg)
	}
	first := newConsumer("consumer-1", true)
	if err := first.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, func() bool { return mapLen(&blocked) == n-fast }, "consumer-1 blocked in %d of %d handlers", mapLen(&blocked), n-fast)
	waitFor(t, time.Minute, func() bool { _, _, h, _ := led.Counts(); return h == fast }, "the fast handlers did not complete")

	stopCtx, stopCancel := context.WithTimeout(ctx, 3*time.Second)
	defer stopCancel()
	begin := time.Now()
	stopped := make(chan error, 1)
	go func() { stopped <- first.Stop(stopCtx) }()
	var stopErr error
	select {
	case stopErr = <-stopped:
	case <-time.After(60 * time.Second):
		t.Fatal("Stop(ctx 3 s) still running after 60 s")
	}
	t.Logf("Stop returned after %s: %v", time.Since(begin).Round(time.Millisecond), stopErr)
	led.Set("stop_returned_after", time.Since(begin).Round(time.Millisecond).String())
	led.Set("stop_error", oneLine(stopErr))
	if !errors.Is(stopErr, kavari.ErrHandlersAbandoned) {
		t.Errorf("Stop returned %v: want an error matching kavari.ErrHandlersAbandoned", stopErr)
	} else if !strings.Contains(stopErr.Error(), topic+"/0") {
		t.Errorf("Stop's error does not name the partition %s/0: %v", topic, stopErr)
	}
	if errors.Is(stopErr, kavari.ErrCommitFailed) {
		t.Errorf("the final commit of the completed records failed: %v", stopErr)
	}
	committed := committedNow(t, brokers, group, topic, 1)
	led.Set("committed_after_stop", committed[0])
	if committed[0] != fast {
		t.Errorf("committed offset %d after Stop, want %d (the completed prefix)", committed[0], fast)
	}
	// The abandoned handlers finish late: their work counts, and is repeated.
	releaseOnce.Do(func() { close(release) })

	second := newConsumer("consumer-2", false)
	if err := second.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, func() bool { return led.Row().Deliveries >= n+(n-fast) },
		"%d deliveries, want %d (the abandoned records handled late by consumer-1 and again by consumer-2)", led.Row().Deliveries, n+(n-fast))
	time.Sleep(time.Second)
	row := led.Assert(t)
	if row.Duplicates != n-fast {
		t.Errorf("%d duplicates, want %d (the abandoned records)", row.Duplicates, n-fast)
	}
	if again := completedTwice(led, fast); len(again) > 0 {
		t.Errorf("consumer-2 repeated %d records committed at Stop: %v", len(again), again)
	}
	led.Note("Stop error: %s", oneLine(stopErr))
}

// recordHandled records a handling of b by proc in led (records of other
// runs are ignored).
func recordHandled(ctx context.Context, led *ledger.Ledger, run, proc string, b *faultmsg.Body) {
	if b.Run != run {
		return
	}
	h := ledger.Handle{ID: b.ID, Key: b.Key, Seq: b.Seq, At: time.Now(), Proc: proc}
	if rec, ok := kavari.RecordFromContext(ctx); ok {
		h.Topic, h.Partition, h.Offset = rec.Topic, rec.Partition, rec.Offset
	}
	led.Handled(h)
}

// endOffsets returns the end offset of each of topic's partitions.
func endOffsets(t *testing.T, brokers []string, topic string, parts int) map[int]int64 {
	t.Helper()
	client, closeClient := newClient(brokers, 10*time.Second)
	defer closeClient()
	req := map[string][]kafka.OffsetRequest{}
	for p := 0; p < parts; p++ {
		req[topic] = append(req[topic], kafka.LastOffsetOf(p))
	}
	var lastErr error
	for attempt := 0; attempt < 100; attempt++ {
		resp, err := client.ListOffsets(context.Background(), &kafka.ListOffsetsRequest{Topics: req})
		if err == nil {
			ends := map[int]int64{}
			for _, po := range resp.Topics[topic] {
				if po.Error == nil {
					ends[po.Partition] = po.LastOffset
				} else {
					lastErr = po.Error
				}
			}
			if len(ends) == parts {
				return ends
			}
		} else {
			lastErr = err
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("list offsets of %s: %v", topic, lastErr)
	return nil
}

// oneLine is err's text on one line (errors.Join puts each on its own).
func oneLine(err error) string {
	return strings.ReplaceAll(fmt.Sprint(err), "\n", " | ")
}
