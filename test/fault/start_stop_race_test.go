package fault

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/test/fault/faultmsg"
	"github.com/kavari-go/kavari/test/fault/ledger"
)

// StartStop is consumed by the Start/Stop interleaving test.
type StartStop struct {
	kavari.Message `kavari:"topic=kavari-fault-start-stop,key=Key"`
	faultmsg.Body
}

// TestStartStopInterleavingsLeaveNoZombie (issue 8, item 5): Start runs in a
// goroutine and Stop is called after a delay spread from 0 to beyond the
// time a Start takes to join the group, many times, on a real broker. After
// each: Start returned nil or ErrClosed, Stop returned, no goroutine of the
// consumer is left, and the group has no member (a zombie would keep
// heartbeating and hold partitions). Finally a fresh consumer of the group
// gets every partition and handles every record published meanwhile. On
// each transport: a Stop during kafka-go's JoinGroup left the member in the
// group until its session timed out.
func TestStartStopInterleavingsLeaveNoZombie(t *testing.T) {
	ownTransports(t)
	for _, tr := range []kavari.Transport{kavari.KafkaGo, kavari.FranzGo} {
		t.Run(tr.String(), func(t *testing.T) { startStopInterleavings(t, tr) })
	}
}

func startStopInterleavings(t *testing.T, tr kavari.Transport) {
	brokers := testenv.RequireReal(t)
	led := ledger.ForTest(t, "Start and Stop interleaved with delays from 0 to past the group join ("+tr.String()+"); zombie members and records left")
	led.SetTransport(transportName(tr))
	run := testenv.ID("run")
	const topic, parts, perRound = "kavari-fault-start-stop", 3, 4
	rounds := 24
	if long() {
		rounds = 60
	}
	group := testenv.ID("start-stop")
	pub := publisher(t, brokers, parts, &StartStop{})
	ctx := context.Background()
	next := 0
	publishRound := func() {
		publishAll(ctx, pub, led, run, func(b faultmsg.Body) kavari.Msg { return &StartStop{Body: b} },
			plan{from: next, to: next + perRound, keys: 8}, nil)
		next += perRound
	}
	newConsumer := func(proc string, createTopics bool) *kavari.Client {
		reg := kavari.NewRegistry()
		if err := kavari.RegisterFuncOn(reg, &StartStop{}, func(ctx context.Context, m *StartStop) error {
			recordHandled(ctx, led, run, proc, &m.Body)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		cfg := baseConfig(brokers, reg)
		cfg.Consume.GroupID = group
		cfg.Transport = tr
		cfg.Topics.Create = createTopics // widens Start's window: a create and a metadata wait
		k, err := kavari.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			_ = k.Stop(ctx)
		})
		return k
	}
	client, closeClient := newClient(brokers, 10*time.Second)
	defer closeClient()

	// How long a Start takes to join: the delays span it.
	publishRound()
	k0 := newConsumer("join-probe", false)
	begin := time.Now()
	if err := k0.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, func() bool { return k0.Health().Generation > 0 }, "the probe consumer did not join")
	join := time.Since(begin)
	stopCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := k0.Stop(stopCtx)
	cancel()
	if err != nil {
		t.Fatalf("probe Stop: %v", err)
	}
	led.Set("join_time", join)
	led.Setup("shared broker; %d partitions; one group; %d rounds of: %d records published, New, Start in a goroutine, Stop(ctx 10 s) after a delay from 0 to 1.25 × the join time (%s), half with Topics.Create; then a fresh consumer of the group", parts, rounds, perRound, join.Round(time.Millisecond))

	var won, joined, closed, zombies, lingered, leftGoroutines int
	var lingerNotes []string
	var maxEmpty time.Duration
	for i := 0; i < rounds; i++ {
		publishRound()
		delay := time.Duration(int64(join) * 5 / 4 * int64(i) / int64(rounds-1))
		before := goroutineIDs()
		k := newConsumer(fmt.Sprintf("round-%d", i), i%2 == 1)
		started := make(chan error, 1)
		go func() { started <- k.Start(ctx) }()
		time.Sleep(delay)
		stopCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		stopErr := make(chan error, 1)
		go func() { stopErr <- k.Stop(stopCtx) }()
		var startErr, sErr error
		select {
		case sErr = <-stopErr:
		case <-time.After(60 * time.Second):
			t.Fatalf("round %d (delay %s): Stop(ctx 10 s) did not return in 60 s", i, delay)
		}
		cancel()
		select {
		case startErr = <-started:
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d (delay %s): Start did not return after Stop", i, delay)
		}
		switch {
		case startErr == nil:
			won++
			if k.Health().Generation > 0 {
				joined++ // Stop came after the join: it drained, committed and left
			}
		case errors.Is(startErr, kavari.ErrClosed):
			closed++
		default:
			t.Errorf("round %d (delay %s): Start returned %v, want nil or ErrClosed", i, delay, startErr)
		}
		if sErr != nil {
			t.Errorf("round %d (delay %s): Stop returned %v (Start: %v)", i, delay, sErr, startErr)
		}
		if err := k.Start(ctx); !errors.Is(err, kavari.ErrClosed) {
			t.Errorf("round %d: Start after Stop returned %v, want ErrClosed", i, err)
		}

		// No goroutine of the consumer is left (hang guard 30 s).
		deadline := time.Now().Add(30 * time.Second)
		var left []string
		for {
			left = consumerGoroutines(before)
			if len(left) == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if len(left) > 0 {
			leftGoroutines += len(left)
			t.Errorf("round %d (delay %s, Start %v): %d consumer goroutine(s) still running 30 s after Stop:\n%s", i, delay, startErr, len(left), summarize(left))
		}

		// The group has no member: Stop left it, or never joined. A member
		// that did not leave would stay until its session timed out (6 s),
		// a zombie forever.
		waited, first, members := groupEmpty(t, client, group, 6*time.Second+5*time.Second)
		maxEmpty = max(maxEmpty, waited)
		if len(first) > 0 {
			// Not left by Stop: the broker drops it when its session times out.
			lingered++
			lingerNotes = append(lingerNotes, fmt.Sprintf("round %d (delay %s, Start %v, joined %v): %d member(s) in the group when Stop returned, gone after %s",
				i, delay.Round(time.Millisecond), startErr, k.Health().Generation > 0, len(first), waited.Round(time.Millisecond)))
			t.Errorf("%s: Stop did not leave the group", lingerNotes[len(lingerNotes)-1])
		}
		if len(members) > 0 {
			zombies++
			t.Errorf("round %d (delay %s, Start %v): the group still has members %v after Stop", i, delay, startErr, members)
		}
	}
	led.Set("interleavings", rounds)
	led.Set("start_won", won)
	led.Set("start_won_and_joined", joined)
	led.Set("start_err_closed", closed)
	led.Set("zombies", zombies)
	led.Set("members_left_at_stop_return", lingered)
	led.Set("goroutines_left", leftGoroutines)
	led.Set("longest_wait_for_empty_group", maxEmpty)
	t.Logf("%d interleavings: Start won %d (joined before Stop %d), returned ErrClosed %d; zombies %d; goroutines left %d; join time %s",
		rounds, won, joined, closed, zombies, leftGoroutines, join.Round(time.Millisecond))

	// A fresh consumer gets every partition and every record.
	fresh := newConsumer("fresh", false)
	begin = time.Now()
	if err := fresh.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, func() bool {
		h := fresh.Health()
		return h.Connected && len(h.Assigned[topic]) == parts
	}, "the fresh consumer did not get every partition: %+v", fresh.Health())
	wctx, cancel2 := context.WithTimeout(ctx, time.Minute)
	defer cancel2()
	if !led.WaitAllHandled(wctx) {
		_, _, _, pending := led.Counts()
		t.Errorf("the fresh consumer did not handle the %d records left", pending)
	}
	led.Recovered(time.Since(begin), "fresh consumer's Start to every record handled")
	led.Assert(t)
	led.Note("%d interleavings (delays 0..%s): Start won %d (joined before Stop %d), ErrClosed %d; zombie members %d; rounds with a member still in the group when Stop returned %d; consumer goroutines left %d",
		rounds, (join * 5 / 4).Round(time.Millisecond), won, joined, closed, zombies, lingered, leftGoroutines)
	for _, n := range lingerNotes {
		led.Note("%s", n)
	}
}

// consumerGoroutines returns the stacks of goroutines not in before that run
// kavari's code, kafka-go's consumer group and readers or franz-go's client. Unlike
// kavariGoroutines it leaves out kafka-go's transport connections, which the
// test's own publisher may open at any time.
func consumerGoroutines(before map[string]bool) []string {
	var out []string
	for id, s := range goroutineStacks() {
		if before[id] {
			continue
		}
		if strings.Contains(s, "github.com/kavari-go/kavari.") || strings.Contains(s, "kafka-go.(*ConsumerGroup)") ||
			strings.Contains(s, "kafka-go.(*Generation)") || strings.Contains(s, "kafka-go.(*Reader)") ||
			strings.Contains(s, "github.com/twmb/franz-go/pkg/kgo.") {
			out = append(out, s)
		}
	}
	return out
}

// groupEmpty waits up to patience for group to have no member; it returns
// how long it waited, the members of its first look and those left (none
// when empty).
func groupEmpty(t *testing.T, client *kafka.Client, group string, patience time.Duration) (waited time.Duration, first, left []string) {
	t.Helper()
	begin := time.Now()
	for look := 0; ; look++ {
		var members []string
		resp, err := client.DescribeGroups(context.Background(), &kafka.DescribeGroupsRequest{GroupIDs: []string{group}})
		if err == nil {
			for _, g := range resp.Groups {
				if g.Error != nil {
					err = g.Error
				}
				for _, m := range g.Members {
					members = append(members, m.MemberID)
				}
			}
		}
		if err == nil && (look == 0 || first == nil) {
			first = members
		}
		if err == nil && len(members) == 0 {
			return time.Since(begin), first, nil
		}
		if time.Since(begin) > patience {
			if err != nil {
				t.Fatalf("DescribeGroups %s: %v", group, err)
			}
			return time.Since(begin), first, members
		}
		time.Sleep(50 * time.Millisecond)
	}
}
