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

// TestBrokerKilledAndRestarted SIGKILLs the only broker of its own cluster
// while messages are being published and consumed, keeps it down for a few
// seconds and restarts it. Publish retries (Constant 250 ms, up to 2 min)
// outlive the outage; every acknowledged message must be handled. Time to
// recover: from the restarted broker answering to the first message handled
// after it.
func TestBrokerKilledAndRestarted(t *testing.T) {
	parallelOwnCluster(t)
	c := ownCluster(t, 1)
	brokers := c.Brokers()
	led := ledger.ForTest(t, "broker SIGKILLed and restarted mid-publish and mid-consume")
	led.KafkaVersion(c.Version())
	led.CheckOrder()
	run := testenv.ID("run")

	n, outage := 3000, 3*time.Second
	if long() {
		n, outage = 12000, 10*time.Second
	}
	const keys, workers, partitions = 24, 8, 3
	handlerSleep := 15 * time.Millisecond

	reg := kavari.NewRegistry()
	if err := kavari.RegisterFuncOn(reg, &faultmsg.Restart{}, func(ctx context.Context, m *faultmsg.Restart) error {
		time.Sleep(handlerSleep)
		handle(ctx, led, run, &m.Body)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	cfg := baseConfig(brokers, reg)
	cfg.Topics.Partitions = partitions
	cfg.Publish.Retry = outagePolicy
	k := newKavari(t, cfg)
	ctx := context.Background()
	if err := k.Start(ctx); err != nil {
		t.Fatal(err)
	}
	led.Setup("own 1-node cluster; one in-process Client publishing (%d goroutines, sync Publish, %d keys) and consuming (%d partitions, handler %s)",
		workers, keys, partitions, handlerSleep)

	s := &stream{k: k, led: led, run: run, mk: func(b faultmsg.Body) kavari.Msg { return &faultmsg.Restart{Body: b} }}
	s.startPublishing(ctx, plan{to: n, keys: keys, workers: workers, pace: 5 * time.Millisecond})

	waitFor(t, 2*time.Minute, func() bool { return s.acked() >= n/3 }, "a third of the messages was not acknowledged")
	_, ackedAtKill, handledAtKill, _ := led.Counts()
	killAt := time.Now()
	if err := c.Kill(0); err != nil {
		t.Fatal(err)
	}
	t.Logf("broker killed: %d acknowledged, %d handled (backlog %d)", ackedAtKill, handledAtKill, ackedAtKill-handledAtKill)
	led.Set("acked_at_kill", ackedAtKill)
	led.Set("handled_at_kill", handledAtKill)
	if handledAtKill == 0 || handledAtKill >= n {
		t.Errorf("the kill did not happen mid-consume: %d handled", handledAtKill)
	}

	// While the broker is gone, Health says so and names the error.
	var down kavari.Health
	waitFor(t, outage+10*time.Second, func() bool {
		down = k.Health()
		return !down.Connected && down.LastError != ""
	}, "Health still reports a connected consumer with the only broker killed: %+v", k.Health())
	t.Logf("Health during the outage: connected=%v last_error=%q", down.Connected, down.LastError)
	if rest := outage - time.Since(killAt); rest > 0 {
		time.Sleep(rest)
	}
	restartAt := time.Now()
	if err := c.Restart(0); err != nil {
		t.Fatal(err)
	}
	ready := time.Now()
	t.Logf("broker restarted after %s down; answering %s after the restart began", ready.Sub(killAt).Round(time.Millisecond), ready.Sub(restartAt).Round(time.Millisecond))
	led.Set("down", ready.Sub(killAt))
	led.Set("broker_restart", ready.Sub(restartAt))

	var first ledger.Handle
	waitFor(t, 2*time.Minute, func() bool {
		var ok bool
		first, ok = led.FirstHandleAfter(ready, nil)
		return ok
	}, "nothing handled after the restart")
	led.Recovered(first.At.Sub(ready), "broker answering again → first message handled")
	if a, ok := s.firstAckAfter(ready); ok {
		led.Set("publish_resumed_after", a.Sub(ready))
	}

	s.waitPublished(t, 3*time.Minute)
	if s.acked() < n {
		t.Logf("%d of %d publishes returned an error", n-s.acked(), n)
	}
	row := s.finish(t, 2*time.Minute)
	if row.Acked != n {
		t.Errorf("acknowledged %d of %d: the publish retry policy should outlive a %s outage", row.Acked, n, outage)
	}
	h := k.Health()
	led.Note("broker down at least %s (SIGKILL, kept down until Health showed the consumer disconnected, restart on the same ports and data) while %d publishers were waiting in retries; publishing resumed as soon as the broker answered, consumption once the member rejoined (SessionTimeout %s). kafka-go used to rejoin under a new member id after the coordinator failure, and the restarted coordinator waited for the old member's session to expire (a run with SessionTimeout 12 s recovered in 12.3 s); its member now keeps its id",
		outage, workers, cfg.Consume.SessionTimeout)
	if !h.Connected {
		t.Errorf("consumer not connected at the end: %+v", h)
	}
	if h.InFlight != 0 {
		t.Errorf("records still in flight at the end: %+v", h)
	}
}
