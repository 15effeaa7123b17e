package fault

import (
	"context"
	"fmt"
	"github.com/kavari-go/kavari"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/test/fault/faultmsg"
	"github.com/kavari-go/kavari/test/fault/ledger"
)

// TestRebalanceStorm keeps messages flowing over two topics while consumer
// processes (faultapp) join and leave the group again and again: each cycle
// starts a new process, waits until it holds partitions, then takes the oldest
// one away — with SIGTERM (k.Stop: drain, commit, leave) and, every fifth
// cycle, with SIGKILL. Throughout, the group's committed offsets are polled
// from the broker (OffsetFetch) and must never go backwards on any partition.
//
// Assertions: no acknowledged message lost; per key, first deliveries in
// publish order (redeliveries after a rebalance may repeat a suffix: counted
// as rewinds); committed offsets monotonic per partition; every SIGTERMed
// process stops cleanly (Stop returns nil). Normal run: 12,000 messages and
// 6 join/leave cycles (one by SIGKILL); KAVARI_LONG=1: 50,000 messages and
// 20 cycles.
func TestRebalanceStorm(t *testing.T) {
	brokers := testenv.RequireReal(t)
	bin := buildFaultApp(t)
	n, cycles, period := 12000, 6, 4*time.Second
	if long() {
		n, cycles = 50000, 20
	}
	led := ledger.ForTest(t, fmt.Sprintf("rebalance storm: %d join/leave cycles of consumer processes while %d messages flow", cycles, n))
	led.CheckOrder()
	run, group := testenv.ID("run"), testenv.ID("storm")
	const partitions, keys, workers, batch = 6, 200, 2, 50
	led.Setup("shared broker; 2 topics × %d partitions, %d keys; producer in the test (%d goroutines, batches of %d); 2–3 faultapp processes (handler 2 ms, CommitInterval 1s, session 6 s, heartbeat 500 ms)",
		partitions, keys, workers, batch)

	pub := publisher(t, brokers, partitions, &faultmsg.Storm0{}, &faultmsg.Storm1{})
	topics := map[string]int{}
	for _, tp := range faultmsg.StormTopics {
		topics[tp] = partitionsOf(t, brokers, tp)
	}
	watch := watchCommits(brokers, group, topics, 200*time.Millisecond)

	args := appArgs(brokers, group, run, "storm", "-topics", "2", "-sleep", "2ms")
	var live []*app
	seq := 0
	spawn := func() *app {
		seq++
		a := startApp(t, bin, "consumer-"+strconv.Itoa(seq), led, args...)
		live = append(live, a)
		return a
	}
	spawn()
	spawn()
	waitFor(t, time.Minute, func() bool { return live[0].joined() || live[1].joined() }, "the first consumers did not join")

	// Publish over about the length of the storm: a cycle takes its period,
	// ~0.8 s to join, ~0.8 s to rebalance after a SIGTERM, ~7 s after a
	// SIGKILL (the dead member's 6 s session).
	storm := time.Duration(cycles)*(period+1600*time.Millisecond) + time.Duration(cycles/5)*6*time.Second
	storm += storm / 10
	pace := time.Duration(int64(storm) * workers * batch / int64(n))
	s := &stream{k: pub, led: led, run: run, mk: func(b faultmsg.Body) kavari.Msg {
		i, _ := strconv.Atoi(b.Key[1:])
		return faultmsg.Storm(i, b)
	}}
	ctx := context.Background()
	stormBegin := time.Now()
	s.startPublishing(ctx, plan{to: n, keys: keys, workers: workers, batch: batch, pace: pace})

	var joins, afterTerm, afterKill []time.Duration
	var killed []*app
	var stopErrs []string
	terms, kills := 0, 0
	for c := 1; c <= cycles; c++ {
		begin := time.Now()
		a := spawn()
		waitFor(t, time.Minute, a.joined, "cycle %d: %s did not get partitions", c, a.name)
		joins = append(joins, time.Since(begin))
		if c%5 == 0 {
			// The members' generation (and commit ticker) began with this
			// join; kill between two commits, so that handled work is still
			// uncommitted and must be redelivered.
			time.Sleep(period/2 + 500*time.Millisecond)
		} else {
			time.Sleep(period / 2)
		}

		old := live[0]
		live = live[1:]
		genBefore := a.gen()
		leftAt := time.Now()
		if c%5 == 0 {
			old.kill()
			kills++
			killed = append(killed, old)
		} else {
			stopped, err := old.term(time.Minute)
			terms++
			switch {
			case stopped == nil:
				stopErrs = append(stopErrs, fmt.Sprintf("%s: no stopped event (exit %v)", old.name, err))
			case stopped.Err != "" || err != nil:
				stopErrs = append(stopErrs, fmt.Sprintf("%s: Stop after %d ms: %s (exit %v)", old.name, stopped.Ms, stopped.Err, err))
			}
		}
		// The survivors rebalance: a new generation in which all hold partitions.
		waitFor(t, time.Minute, func() bool {
			for _, m := range live {
				if m.gen() <= genBefore || !m.joined() {
					return false
				}
			}
			return true
		}, "cycle %d: the group did not rebalance after %s left", c, old.name)
		if c%5 == 0 {
			afterKill = append(afterKill, time.Since(leftAt))
		} else {
			afterTerm = append(afterTerm, time.Since(leftAt))
		}
		_, acked, handled, _ := led.Counts()
		t.Logf("cycle %d: %s joined in %s, %s left (%s); acked %d, handled %d", c, a.name,
			joins[len(joins)-1].Round(time.Millisecond), old.name, map[bool]string{true: "SIGKILL", false: "SIGTERM"}[c%5 == 0], acked, handled)
		time.Sleep(period / 2)
	}

	s.waitPublished(t, 5*time.Minute)
	row := s.finish(t, 3*time.Minute)
	led.Set("storm", time.Since(stormBegin))

	for _, a := range live {
		if stopped, err := a.term(time.Minute); stopped == nil || stopped.Err != "" || err != nil {
			stopErrs = append(stopErrs, fmt.Sprintf("%s (final): %+v, exit %v", a.name, stopped, err))
		}
	}
	for _, e := range stopErrs {
		t.Errorf("graceful leave failed: %s", e)
	}

	// Work of the SIGKILLed members handled again by the survivors: what they
	// had handled since their last commit.
	redone := 0
	for _, k := range killed {
		mine := k.handledIDs()
		for _, h := range led.Handles() {
			if mine[h.ID] && !strings.HasPrefix(h.Proc, k.name+" ") {
				redone++
			}
		}
	}
	led.Set("redelivered_after_sigkill", redone)

	polls, failures, regressions := watch.finish()
	led.Set("offset_polls", polls)
	led.Set("offset_poll_failures", failures)
	led.Set("offset_regressions", len(regressions))
	if polls < 10 {
		t.Errorf("only %d successful OffsetFetch polls: the monotonic check saw too little", polls)
	}
	for i, r := range regressions {
		if i < 10 {
			t.Errorf("committed offset went backwards: %s", r)
		}
	}

	for name, ds := range map[string][]time.Duration{"join": joins, "rebalance_after_sigterm": afterTerm, "rebalance_after_sigkill": afterKill} {
		if len(ds) == 0 {
			continue
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		led.Set(name+"_median", ds[len(ds)/2])
		led.Set(name+"_max", ds[len(ds)-1])
	}
	led.Set("longest_pause_all_partitions", longestPause(led.Handles(), stormBegin))
	gap, where := longestPartitionPause(led.Handles(), stormBegin)
	led.Recovered(gap, "longest time one partition ("+where+") went without a handled message during the storm; the worst case is a SIGKILLed member's partitions, idle until its 6 s session expires")
	led.Note("%d cycles: %d leaves by SIGTERM (k.Stop), %d by SIGKILL; %d OffsetFetch polls, %d regressions; a new member held partitions after %s (median); the survivors were reassigned %s (median) after a SIGTERM leave, %s after a SIGKILL (session timeout 6 s)",
		cycles, terms, kills, polls, len(regressions), median(joins), median(afterTerm), median(afterKill))
	_ = row
}

// median returns the median of sorted ds, rounded, or "-".
func median(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	return ds[len(ds)/2].Round(time.Millisecond).String()
}

// longestPartitionPause returns the longest time between two consecutive
// handlings on one partition after from, and which partition.
func longestPartitionPause(hs []ledger.Handle, from time.Time) (time.Duration, string) {
	by := map[string][]ledger.Handle{}
	for _, h := range hs {
		if h.At.After(from) {
			k := h.Topic + "/" + strconv.Itoa(h.Partition)
			by[k] = append(by[k], h)
		}
	}
	var gap time.Duration
	where := "-"
	for k, ps := range by {
		if d := longestPause(ps, from); d > gap {
			gap, where = d, k
		}
	}
	return gap, where
}

// longestPause returns the longest time between two consecutive handlings
// after from.
func longestPause(hs []ledger.Handle, from time.Time) time.Duration {
	var ts []time.Time
	for _, h := range hs {
		if h.At.After(from) {
			ts = append(ts, h.At)
		}
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	var gap time.Duration
	for i := 1; i < len(ts); i++ {
		gap = max(gap, ts[i].Sub(ts[i-1]))
	}
	return gap
}
