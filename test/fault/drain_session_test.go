package fault

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/test/fault/faultmsg"
	"github.com/kavari-go/kavari/test/fault/ledger"
)

// DrainStop and DrainRevoke are consumed by the drain-versus-session tests.
type DrainStop struct {
	kavari.Message `kavari:"topic=kavari-fault-drain-stop,key=Key"`
	faultmsg.Body
}

// DrainRevoke is DrainStop's topic for the rebalance variant.
type DrainRevoke struct {
	kavari.Message `kavari:"topic=kavari-fault-drain-revoke,key=Key"`
	faultmsg.Body
}

// drainSetup publishes n messages on one partition, each with a key of its
// own: the first fast ones, then slow ones (sleeping slowMs, honouring their
// context).
func drainSetup(t *testing.T, brokers []string, led *ledger.Ledger, run string, msg kavari.Msg, mk func(faultmsg.Body) kavari.Msg, n, fast, slowMs int) {
	t.Helper()
	pub := publisher(t, brokers, 1, msg)
	ctx := context.Background()
	for i := 0; i < n; i++ {
		b := faultmsg.Body{Run: run, ID: msgID(i), Key: msgKey(i, n), Seq: 0}
		if i >= fast {
			b.SleepMs = slowMs
		}
		led.Sent(b.ID, b.Key, b.Seq)
		_, err := pub.Publish(ctx, mk(b))
		led.Published(b.ID, err)
	}
}

// drainHandler handles a message of run: it sleeps SleepMs unless slow is
// false, stops early when its context ends (not handled then), and records
// the handling in led. started counts the messages it began.
func drainHandler(led *ledger.Ledger, run, proc string, slow bool, started *sync.Map) func(ctx context.Context, b *faultmsg.Body) error {
	return func(ctx context.Context, b *faultmsg.Body) error {
		if b.Run != run {
			return nil
		}
		if started != nil {
			started.Store(b.ID, true)
		}
		if slow && b.SleepMs > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(b.SleepMs) * time.Millisecond):
			}
		}
		h := ledger.Handle{ID: b.ID, Key: b.Key, Seq: b.Seq, At: time.Now(), Proc: proc}
		if rec, ok := kavari.RecordFromContext(ctx); ok {
			h.Topic, h.Partition, h.Offset = rec.Topic, rec.Partition, rec.Offset
		}
		led.Handled(h)
		return nil
	}
}

func mapLen(m *sync.Map) int {
	n := 0
	m.Range(func(any, any) bool { n++; return true })
	return n
}

// completedTwice lists the ids among the first fast ones handled more than once.
func completedTwice(led *ledger.Ledger, fast int) []string {
	count := map[string]int{}
	for _, h := range led.Handles() {
		count[h.ID]++
	}
	var out []string
	for i := 0; i < fast; i++ {
		if count[msgID(i)] > 1 {
			out = append(out, msgID(i))
		}
	}
	return out
}

// TestStopDrainLongerThanSession stops a consumer whose slow handlers need
// longer than the session timeout, with a Stop deadline (20 s) longer than
// the session (6 s). kafka-go sends no heartbeats once Stop ends the
// generation, so a drain that waited for them would get the member expelled
// and its final commit refused (Illegal Generation / Unknown Member): the
// next owner would repeat the work completed before Stop. kavari cuts the
// drain at SessionTimeout − HeartbeatInterval − reserve: the slow handlers are
// cancelled (redelivered), the completed ones are committed, and a second
// consumer repeats none of them.
func TestStopDrainLongerThanSession(t *testing.T) {
	brokers := testenv.RequireReal(t)
	led := ledger.ForTest(t, "Stop (20 s deadline) with handlers slower than the session timeout (6 s), then restart")
	run := testenv.ID("run")
	const n, fast, slowMs = 20, 10, 9000
	led.Setup("shared broker; %d messages on 1 partition, one key each; the first %d handled at once, the rest take %d ms (honouring ctx); SessionTimeout 6s, HeartbeatInterval 500ms, CommitInterval 1h, Stop deadline 20s", n, fast, slowMs)
	mk := func(b faultmsg.Body) kavari.Msg { return &DrainStop{Body: b} }
	drainSetup(t, brokers, led, run, &DrainStop{}, mk, n, fast, slowMs)
	group := testenv.ID("drain-stop")
	newConsumer := func(proc string, slow bool, started *sync.Map) *kavari.Client {
		reg := kavari.NewRegistry()
		h := drainHandler(led, run, proc, slow, started)
		if err := kavari.RegisterFuncOn(reg, &DrainStop{}, func(ctx context.Context, m *DrainStop) error { return h(ctx, &m.Body) }); err != nil {
			t.Fatal(err)
		}
		cfg := baseConfig(brokers, reg)
		cfg.Consume.GroupID = group
		cfg.Consume.CommitInterval = time.Hour // only the final commit can save the completed work
		return newKavari(t, cfg)
	}
	var started sync.Map
	first := newConsumer("consumer-1", true, &started)
	if err := first.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, func() bool { return mapLen(&started) == n }, "consumer-1 started %d of %d handlers", mapLen(&started), n)
	waitFor(t, time.Minute, func() bool { _, _, handled, _ := led.Counts(); return handled == fast }, "the fast handlers did not complete")
	stopCtx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	begin := time.Now()
	stopErr := first.Stop(stopCtx)
	t.Logf("Stop returned after %s: %v", time.Since(begin).Round(time.Millisecond), stopErr)
	led.Set("stop_returned_after", time.Since(begin).Round(time.Millisecond).String())
	led.Set("stop_error", fmt.Sprint(stopErr))
	if errors.Is(stopErr, kavari.ErrCommitFailed) {
		t.Errorf("the final commit failed: %v", stopErr)
	}
	committed := committedNow(t, brokers, group, "kavari-fault-drain-stop", 1)
	led.Set("committed_after_stop", committed[0])
	if committed[0] < fast {
		t.Errorf("committed offset %d after Stop: the %d completed records are not committed", committed[0], fast)
	}

	second := newConsumer("consumer-2", false, nil)
	if err := second.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel2 := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel2()
	if !led.WaitAllHandled(ctx) {
		t.Error("not every message was handled after the restart")
	}
	time.Sleep(2 * time.Second) // let a repeat of the completed work show up
	if again := completedTwice(led, fast); len(again) > 0 {
		t.Errorf("the next owner repeated %d records completed before Stop: %v", len(again), again)
	}
	led.Assert(t)
}

// TestRevokeDrainLongerThanSession: a member busy with handlers slower than
// the session timeout loses its partition to a new member. With the default
// DrainTimeout (RebalanceTimeout/3 = 10 s before the fix), the drain ran
// without heartbeats past the session timeout: the member was expelled, its
// final commit refused, and the new owner repeated the completed work. Now
// the drain is cut under the session timeout and the completed work is
// committed before the partition moves.
func TestRevokeDrainLongerThanSession(t *testing.T) {
	brokers := testenv.RequireReal(t)
	led := ledger.ForTest(t, "rebalance while handlers are slower than the session timeout (6 s)")
	run := testenv.ID("run")
	const n, fast, slowMs = 20, 10, 9000
	led.Setup("shared broker; %d messages on 1 partition, one key each; the first %d handled at once, the rest take %d ms (honouring ctx) on the first member; SessionTimeout 6s, RebalanceTimeout 30s, default DrainTimeout, CommitInterval 1h; a second member joins", n, fast, slowMs)
	mk := func(b faultmsg.Body) kavari.Msg { return &DrainRevoke{Body: b} }
	drainSetup(t, brokers, led, run, &DrainRevoke{}, mk, n, fast, slowMs)
	group := testenv.ID("drain-revoke")
	newConsumer := func(proc string, slow bool, started *sync.Map) *kavari.Client {
		reg := kavari.NewRegistry()
		h := drainHandler(led, run, proc, slow, started)
		if err := kavari.RegisterFuncOn(reg, &DrainRevoke{}, func(ctx context.Context, m *DrainRevoke) error { return h(ctx, &m.Body) }); err != nil {
			t.Fatal(err)
		}
		cfg := baseConfig(brokers, reg)
		cfg.Consume.GroupID = group
		cfg.Consume.CommitInterval = time.Hour
		cfg.Consume.RebalanceTimeout = 30 * time.Second
		cfg.Consume.DrainTimeout = 0 // the default
		return newKavari(t, cfg)
	}
	var started sync.Map
	first := newConsumer("consumer-1", true, &started)
	if err := first.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, func() bool { return mapLen(&started) == n }, "consumer-1 started %d of %d handlers", mapLen(&started), n)
	waitFor(t, time.Minute, func() bool { _, _, handled, _ := led.Counts(); return handled == fast }, "the fast handlers did not complete")
	second := newConsumer("consumer-2", false, nil)
	if err := second.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if !led.WaitAllHandled(ctx) {
		t.Error("not every message was handled after the rebalance")
	}
	time.Sleep(2 * time.Second)
	h := first.Health()
	led.Set("first_commit_error", h.CommitError)
	if h.CommitError != "" {
		t.Errorf("the revoke's final commit failed: %s", h.CommitError)
	}
	if again := completedTwice(led, fast); len(again) > 0 {
		t.Errorf("the next owner repeated %d records completed before the rebalance: %v", len(again), again)
	}
	led.Assert(t)
}
