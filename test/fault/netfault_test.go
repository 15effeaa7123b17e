package fault

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/kafkaproc"
	"github.com/kavari-go/kavari/internal/netfault"
	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/test/fault/faultmsg"
	"github.com/kavari-go/kavari/test/fault/ledger"
)

// NetFault is consumed through a fault proxy (network-fault tests); each
// case maps it to a topic of its own (Config.Topics.Name).
type NetFault struct {
	kavari.Message `kavari:"topic=kavari-fault-net,key=Key"`
	faultmsg.Body
}

// netFaultCase is one network fault between a consumer and its broker.
type netFaultCase struct {
	name  string
	title string
	// fault injects the fault into the consumer's proxy; it returns at
	// once, and the fault heals after lasts.
	fault func(p *netfault.Proxy)
	lasts time.Duration
	// withinSession: the fault is over before the session timeout, so the
	// member keeps its session: no handler may be cancelled and no
	// completed record handled again. Otherwise only "nothing lost" holds.
	withinSession bool
}

// netSession is the consumer's session timeout in the network-fault tests.
const netSession = 10 * time.Second

// TestNetFault runs a consumer whose every connection goes through a TCP
// fault proxy (the publisher and the checks go to the broker directly) and
// breaks the network under it while handlers run and records arrive: a
// silent cut of 2 s and of 6 s, a reset of every connection, 2 s of refused
// connections — all inside the 10 s session, so the member's session
// survives each: no handler may be cancelled and no completed record handled
// again — and a cut longer than the session (15 s), after which the member
// has lost its partitions: records may be handled again, none may be lost.
//
// Each case logs sent / handled / duplicates (completed records handled
// again) / lost / stuck (never handled when the test ends) / cancelled
// (handler contexts cancelled) and writes them in its ledger row.
func TestNetFault(t *testing.T) {
	parallelOwnCluster(t)
	c := ownProxiedCluster(t, 1)
	for _, tc := range netFaultCases() {
		t.Run(tc.name, func(t *testing.T) { netFault(t, c, tc) })
	}
}

// netFaultCases are TestNetFault's faults.
func netFaultCases() []netFaultCase {
	return []netFaultCase{
		{name: "cut-2s", title: "silent network cut of 2 s (inside a 10 s session)", lasts: 2 * time.Second, withinSession: true,
			fault: func(p *netfault.Proxy) { p.Cut(2 * time.Second) }},
		{name: "cut-6s", title: "silent network cut of 6 s (inside a 10 s session)", lasts: 6 * time.Second, withinSession: true,
			fault: func(p *netfault.Proxy) { p.Cut(6 * time.Second) }},
		{name: "reset", title: "every connection reset (RST) once", withinSession: true,
			fault: func(p *netfault.Proxy) { p.Reset() }},
		{name: "refuse-2s", title: "connections reset and refused for 2 s (inside a 10 s session)", lasts: 2 * time.Second, withinSession: true,
			fault: func(p *netfault.Proxy) { p.Refuse(2 * time.Second) }},
		{name: "cut-beyond-session", title: "silent network cut of 15 s (beyond the 10 s session)", lasts: 15 * time.Second,
			fault: func(p *netfault.Proxy) { p.Cut(15 * time.Second) }},
	}
}

// netFault runs one case on cluster c (one node, proxied); mutate, if any,
// changes the consumer's Config last.
func netFault(t *testing.T, c *kafkaproc.Cluster, tc netFaultCase, mutate ...func(*kavari.Config)) *ledger.Ledger {
	led := ledger.ForTest(t, "network fault under a consumer: "+tc.title)
	led.KafkaVersion(c.Version())
	const (
		partitions = 4
		keys       = 40
		perPhase   = 200
		slowEvery  = 25 // every 25th message takes slowMs
		slowMs     = 3000
	)
	run := testenv.ID("run")
	topic := "kavari-fault-net-" + tc.name
	names := func(string) string { return topic }
	led.Setup("own 1-node cluster; the consumer reaches it through a fault proxy only (SessionTimeout %s, HeartbeatInterval 1s, CommitInterval 200ms); a direct publisher: %d messages on %d partitions, %d keys, in three phases (before, during and after the fault); every %dth message's handler takes %d ms (honouring its context)",
		netSession, 3*perPhase, partitions, keys, slowEvery, slowMs)

	pubReg := kavari.NewRegistry()
	if err := pubReg.Declare(&NetFault{}); err != nil {
		t.Fatal(err)
	}
	pubCfg := baseConfig(c.Brokers(), pubReg)
	pubCfg.Topics.Partitions = partitions
	pubCfg.Topics.Name = names
	pub := newKavari(t, pubCfg)

	var running, cancelled atomic.Int64
	var cancelledIDs sync.Map
	reg := kavari.NewRegistry()
	if err := kavari.RegisterFuncOn(reg, &NetFault{}, func(ctx context.Context, m *NetFault) error {
		if m.Run != run {
			return nil
		}
		if m.SleepMs > 0 {
			running.Add(1)
			defer running.Add(-1)
			select {
			case <-ctx.Done():
				cancelled.Add(1)
				cancelledIDs.Store(m.ID, true)
				return ctx.Err()
			case <-time.After(time.Duration(m.SleepMs) * time.Millisecond):
			}
		}
		handle(ctx, led, run, &m.Body)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	cfg := baseConfig(c.ProxiedBrokers(), reg)
	cfg.Topics.Partitions = partitions
	cfg.Topics.Name = names
	cfg.Consume.SessionTimeout = netSession
	cfg.Consume.HeartbeatInterval = time.Second
	cfg.Consume.RebalanceTimeout = 20 * time.Second
	for _, m := range mutate {
		m(&cfg)
	}
	k := newKavari(t, cfg)
	if err := k.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, func() bool { return len(k.Health().Assigned[topic]) == partitions }, "consumer not assigned")

	mk := func(b faultmsg.Body) kavari.Msg { return &NetFault{Body: b} }
	slow := func(b *faultmsg.Body) {
		var i int
		fmt.Sscanf(b.ID, "m%d", &i)
		if i%slowEvery == slowEvery-1 {
			b.SleepMs = slowMs
		}
	}
	ctx := context.Background()
	phase := func(i int) plan {
		return plan{from: i * perPhase, to: (i + 1) * perPhase, keys: keys, workers: 4, pace: 10 * time.Millisecond, body: slow}
	}
	publishAll(ctx, pub, led, run, mk, phase(0), nil)
	// The fault hits while slow handlers run.
	waitFor(t, time.Minute, func() bool { return running.Load() > 0 }, "no slow handler running")
	_, _, handledBefore, _ := led.Counts()
	begin := time.Now()
	tc.fault(c.Proxy(0))
	t.Logf("%s injected with %d handlers running, %d records handled", tc.name, running.Load(), handledBefore)
	publishAll(ctx, pub, led, run, mk, phase(1), nil) // during the fault
	if d := tc.lasts - time.Since(begin); d > 0 {
		time.Sleep(d)
	}
	publishAll(ctx, pub, led, run, mk, phase(2), nil)

	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	all := led.WaitAllHandled(wctx)
	led.Recovered(time.Since(begin), "every acknowledged message handled after the fault began")
	// A redelivery of a completed record, if any, comes soon after the
	// member rejoins (fetch wait 500 ms); this leaves time for it.
	time.Sleep(3 * time.Second)
	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	defer scancel()
	stopErr := k.Stop(sctx)

	row := led.Row()
	led.Set("cancelled", cancelled.Load())
	led.Set("stuck", row.NeverHandled)
	led.Set("stop_error", fmt.Sprint(stopErr))
	t.Logf("%s: sent %d, handled %d, duplicates %d (completed records handled again), lost %d, stuck %d, cancelled %d; Stop: %v",
		tc.name, row.Sent, row.Handled, row.Duplicates, row.Lost, row.NeverHandled, cancelled.Load(), stopErr)
	if !all || row.Lost > 0 {
		t.Errorf("lost %d acknowledged messages (%v)", row.Lost, row.LostIDs)
	}
	if !tc.withinSession {
		return led
	}
	if n := cancelled.Load(); n > 0 {
		var ids []string
		cancelledIDs.Range(func(k, _ any) bool { ids = append(ids, k.(string)); return true })
		knownBug(t, led, "%s inside the session timeout cancelled %d running handlers (%v)", tc.name, n, ids)
	}
	if row.Duplicates > 0 {
		knownBug(t, led, "%s inside the session timeout: %d completed records handled again", tc.name, row.Duplicates)
	}
	return led
}

// TestNetFaultStopWithBrokerGone: the consumer's connections are refused
// (the broker is gone for it) while a handler runs; the handler completes
// after that, so its record cannot be committed, and Stop must say so
// (ErrCommitFailed, a *CommitError naming the partition), on both
// transports. franz-go's Stop used to return nil: kgo reported the failed
// heartbeat as lost partitions, whose completed work was dropped silently.
func TestNetFaultStopWithBrokerGone(t *testing.T) {
	parallelOwnCluster(t)
	c := ownProxiedCluster(t, 1)
	led := ledger.ForTest(t, "consumer's connections refused while a handler finishes, then Stop")
	led.KafkaVersion(c.Version())
	const slowMs = 3000
	run := testenv.ID("run")
	topic := "kavari-fault-net-gone"
	names := func(string) string { return topic }
	led.Setup("own 1-node cluster; the consumer reaches it through a fault proxy only (SessionTimeout %s, HeartbeatInterval 1s, CommitInterval 200ms); 10 fast messages then one whose handler takes %d ms; the proxy refuses every connection from then on; Stop (20 s deadline) after the slow handler completed", netSession, slowMs)

	pubReg := kavari.NewRegistry()
	if err := pubReg.Declare(&NetFault{}); err != nil {
		t.Fatal(err)
	}
	pubCfg := baseConfig(c.Brokers(), pubReg)
	pubCfg.Topics.Partitions = 1
	pubCfg.Topics.Name = names
	pub := newKavari(t, pubCfg)

	var running, cancelled atomic.Int64
	reg := kavari.NewRegistry()
	if err := kavari.RegisterFuncOn(reg, &NetFault{}, func(ctx context.Context, m *NetFault) error {
		if m.Run != run {
			return nil
		}
		if m.SleepMs > 0 {
			running.Add(1)
			defer running.Add(-1)
			select {
			case <-ctx.Done():
				cancelled.Add(1)
				return ctx.Err()
			case <-time.After(time.Duration(m.SleepMs) * time.Millisecond):
			}
		}
		handle(ctx, led, run, &m.Body)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	cfg := baseConfig(c.ProxiedBrokers(), reg)
	cfg.Topics.Partitions = 1
	cfg.Topics.Name = names
	cfg.Consume.SessionTimeout = netSession
	cfg.Consume.HeartbeatInterval = time.Second
	cfg.Consume.RebalanceTimeout = 20 * time.Second
	k := newKavari(t, cfg)
	if err := k.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, func() bool { return len(k.Health().Assigned[topic]) == 1 }, "consumer not assigned")

	mk := func(b faultmsg.Body) kavari.Msg { return &NetFault{Body: b} }
	ctx := context.Background()
	publishAll(ctx, pub, led, run, mk, plan{from: 0, to: 10, keys: 10}, nil)
	waitFor(t, time.Minute, func() bool { _, _, h, _ := led.Counts(); return h == 10 }, "fast messages not handled")
	publishAll(ctx, pub, led, run, mk, plan{from: 10, to: 11, keys: 10, body: func(b *faultmsg.Body) { b.SleepMs = slowMs }}, nil)
	waitFor(t, time.Minute, func() bool { return running.Load() > 0 }, "slow handler not running")
	c.Proxy(0).Refuse(5 * time.Minute)
	waitFor(t, time.Minute, func() bool { _, _, h, _ := led.Counts(); return h == 11 || cancelled.Load() > 0 }, "slow handler neither completed nor cancelled")
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	stopErr := k.Stop(sctx)
	_, _, handled, _ := led.Counts()
	led.Set("cancelled", cancelled.Load())
	led.Set("stop_error", fmt.Sprint(stopErr))
	t.Logf("handled %d of 11, cancelled %d; Stop: %v", handled, cancelled.Load(), stopErr)
	if cancelled.Load() > 0 {
		knownBug(t, led, "the running handler was cancelled before it completed, within %d ms of the connections being refused: inside the %s session", slowMs, netSession)
	}
	if handled == 11 && !errors.Is(stopErr, kavari.ErrCommitFailed) {
		knownBug(t, led, "a record completed after the broker went away was never committed, and Stop returned %v (want ErrCommitFailed)", stopErr)
	}
	var ce *kavari.CommitError
	if errors.As(stopErr, &ce) {
		t.Logf("CommitError offsets %v, may have been applied %v", ce.Offsets, ce.MayHaveBeenApplied)
	}
}
