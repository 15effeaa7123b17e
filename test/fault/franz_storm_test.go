package fault

import (
	"context"
	"fmt"
	"github.com/kavari-go/kavari"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/test/fault/faultmsg"
	"github.com/kavari-go/kavari/test/fault/ledger"
)

// TestCooperativeRebalanceStorm measures what a rebalance costs the
// partitions that do not move. Messages flow over the two storm topics while
// faultapp members join and leave (SIGTERM: k.Stop) the group; per partition
// every gap between two consecutive handled records is classified: "moved"
// when the two records were handled by different processes (the partition
// changed owner in between), "kept" when by the same one. It runs on
// kafka-go (eager: every rebalance revokes every partition, so kept
// partitions pause too) and on franz-go (cooperative-sticky: only moved
// partitions are revoked, so a kept partition's longest gap should stay near
// the normal gap between records). The gaps are reported, never asserted;
// the assertions are correctness: no acknowledged message lost, per-key
// order of first deliveries, every leave's Stop returns nil.
func TestCooperativeRebalanceStorm(t *testing.T) {
	testenv.RequireReal(t)
	ownTransports(t)
	bin := buildFaultApp(t)
	for _, tr := range []string{"kafka-go", "franz-go"} {
		t.Run(tr, func(t *testing.T) { gapStorm(t, bin, tr) })
	}
}

func gapStorm(t *testing.T, bin, tr string) {
	brokers := testenv.RequireReal(t)
	n, cycles, period := 8000, 6, 3*time.Second
	led := ledger.ForTest(t, fmt.Sprintf("rebalance storm on %s: %d join/leave cycles; longest gap per partition, moved vs kept", tr, cycles))
	led.SetTransport(tr)
	led.CheckOrder()
	led.Set("transport", tr)
	run, group := testenv.ID("run"), testenv.ID("gapstorm")
	const partitions, keys, workers, batch = 6, 200, 2, 20
	led.Setup("shared broker; 2 topics × %d partitions, %d keys; producer in the test (%d goroutines, batches of %d); 2–3 faultapp processes on %s (handler 2 ms, CommitInterval 1s, session 6 s, heartbeat 500 ms); leaves by SIGTERM",
		partitions, keys, workers, batch, tr)

	pub := publisher(t, brokers, partitions, &faultmsg.Storm0{}, &faultmsg.Storm1{})
	all := map[string]bool{}
	for _, tp := range faultmsg.StormTopics {
		for p := 0; p < partitionsOf(t, brokers, tp); p++ {
			all[tp+"/"+strconv.Itoa(p)] = true
		}
	}
	args := appArgs(brokers, group, run, "storm", "-topics", "2", "-sleep", "2ms", "-transport", tr)
	var live []*app
	seq := 0
	spawn := func() *app {
		seq++
		a := startApp(t, bin, "consumer-"+strconv.Itoa(seq), led, args...)
		live = append(live, a)
		return a
	}
	// covered reports whether the live members together hold every
	// partition, each exactly once: the rebalance is over.
	covered := func() bool {
		held := map[string]int{}
		for _, a := range live {
			a.mu.Lock()
			for topic, ps := range a.assigned {
				for _, p := range ps {
					held[topic+"/"+strconv.Itoa(p)]++
				}
			}
			a.mu.Unlock()
		}
		for tp := range all {
			if held[tp] != 1 {
				return false
			}
		}
		return len(held) == len(all)
	}
	spawn()
	spawn()
	waitFor(t, time.Minute, func() bool { return live[0].joined() && live[1].joined() && covered() }, "the first consumers did not share the partitions")

	storm := time.Duration(cycles) * (period + 2*time.Second)
	pace := time.Duration(int64(storm) * workers * batch / int64(n))
	s := &stream{k: pub, led: led, run: run, mk: func(b faultmsg.Body) kavari.Msg {
		i, _ := strconv.Atoi(b.Key[1:])
		return faultmsg.Storm(i, b)
	}}
	ctx := context.Background()
	stormBegin := time.Now()
	s.startPublishing(ctx, plan{to: n, keys: keys, workers: workers, batch: batch, pace: pace})
	time.Sleep(period / 2)

	var stopErrs []string
	var windows [][2]time.Time // from a join or leave to the group covering every partition again
	for c := 1; c <= cycles; c++ {
		begin := time.Now()
		a := spawn()
		waitFor(t, time.Minute, func() bool { return a.joined() && covered() }, "cycle %d: %s did not get partitions", c, a.name)
		windows = append(windows, [2]time.Time{begin, time.Now()})
		time.Sleep(period / 2)
		old := live[0]
		live = live[1:]
		begin = time.Now()
		stopped, err := old.term(time.Minute)
		switch {
		case stopped == nil:
			stopErrs = append(stopErrs, fmt.Sprintf("%s: no stopped event (exit %v)", old.name, err))
		case stopped.Err != "" || err != nil:
			stopErrs = append(stopErrs, fmt.Sprintf("%s: Stop after %d ms: %s (exit %v)", old.name, stopped.Ms, stopped.Err, err))
		}
		waitFor(t, time.Minute, covered, "cycle %d: the group did not rebalance after %s left", c, old.name)
		windows = append(windows, [2]time.Time{begin, time.Now()})
		time.Sleep(period / 2)
	}
	stormEnd := time.Now()

	s.waitPublished(t, 5*time.Minute)
	s.finish(t, 3*time.Minute)
	for _, a := range live {
		if stopped, err := a.term(time.Minute); stopped == nil || stopped.Err != "" || err != nil {
			stopErrs = append(stopErrs, fmt.Sprintf("%s (final): %+v, exit %v", a.name, stopped, err))
		}
	}
	for _, e := range stopErrs {
		t.Errorf("graceful leave failed: %s", e)
	}

	g := ownerGaps(led.Handles(), stormBegin, stormEnd, windows)
	led.Set("rebalances", 2*cycles)
	led.Set("gap_p90", g.p90)
	led.Set("gap_kept_p99", g.keptP99)
	led.Set("gap_kept_max", g.keptMax)
	led.Set("gap_kept_max_partition", g.keptWhere)
	led.Set("gap_kept_max_in_rebalance", g.keptInRebalance)
	led.Set("gap_kept_max_outside_rebalance", g.keptOutside)
	led.Set("gap_moved_max", g.movedMax)
	led.Set("gap_moved_median", g.movedMedian)
	led.Set("partitions_moved", g.moved)
	led.Set("partitions_never_moved", g.neverMoved)
	led.Recovered(g.keptMax, "longest gap between two records of a partition that did not move (handled by the same process), "+g.keptWhere)
	led.Note("%s, %d joins and %d SIGTERM leaves: longest gap on a partition that did not move %s (%s; overlapping a rebalance %s, outside any %s; p99 of such gaps %s), on a partition that moved %s (median of moved gaps %s); 90%% of all gaps under %s; %d partition moves, %d partitions never moved",
		tr, cycles, cycles, g.keptMax.Round(time.Millisecond), g.keptWhere, g.keptInRebalance.Round(time.Millisecond), g.keptOutside.Round(time.Millisecond), g.keptP99.Round(time.Millisecond), g.movedMax.Round(time.Millisecond),
		g.movedMedian.Round(time.Millisecond), g.p90.Round(time.Millisecond), g.moved, g.neverMoved)
	t.Logf("gaps: %+v", g)
}

// gaps is the gap analysis of a storm.
type gaps struct {
	p90, keptP99, keptMax, movedMax, movedMedian time.Duration
	keptInRebalance, keptOutside                 time.Duration // longest kept gap overlapping a rebalance window, and not
	keptWhere                                    string
	moved                                        int // gaps across a change of owner
	neverMoved                                   int // partitions whose records one process handled throughout
}

// ownerGaps splits the gaps between consecutive handlings on each partition
// within [from, to] into those across a change of handling process (moved)
// and those within one process (kept); kept gaps are also split by whether
// they overlap one of the rebalance windows.
func ownerGaps(hs []ledger.Handle, from, to time.Time, windows [][2]time.Time) gaps {
	by := map[string][]ledger.Handle{}
	for _, h := range hs {
		if h.At.After(from) && h.At.Before(to) {
			k := h.Topic + "/" + strconv.Itoa(h.Partition)
			by[k] = append(by[k], h)
		}
	}
	var g gaps
	var kept, moved, every []time.Duration
	g.keptWhere = "-"
	for k, ps := range by {
		sort.Slice(ps, func(i, j int) bool { return ps[i].At.Before(ps[j].At) })
		changed := false
		for i := 1; i < len(ps); i++ {
			d := ps[i].At.Sub(ps[i-1].At)
			every = append(every, d)
			if ps[i].Proc != ps[i-1].Proc {
				moved = append(moved, d)
				changed = true
				continue
			}
			kept = append(kept, d)
			overlaps := false
			for _, w := range windows {
				if ps[i-1].At.Before(w[1]) && ps[i].At.After(w[0]) {
					overlaps = true
				}
			}
			if overlaps {
				g.keptInRebalance = max(g.keptInRebalance, d)
			} else {
				g.keptOutside = max(g.keptOutside, d)
			}
			if d > g.keptMax {
				g.keptMax, g.keptWhere = d, k
			}
		}
		if !changed {
			g.neverMoved++
		}
	}
	pct := func(ds []time.Duration, q float64) time.Duration {
		if len(ds) == 0 {
			return 0
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return ds[int(q*float64(len(ds)-1))]
	}
	g.p90, g.keptP99 = pct(every, 0.9), pct(kept, 0.99)
	g.movedMedian, g.movedMax = pct(moved, 0.5), pct(moved, 1)
	g.moved = len(moved)
	return g
}
