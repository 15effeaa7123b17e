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

// pubPolicy is published while the only broker is down.
type pubPolicy struct {
	kavari.Message `kavari:"topic=kavari-fault-pub-policy,key=Key"`
	faultmsg.Body
}

// TestPublishRetryPolicyBrokerDown: with the only broker killed (and left
// down), a Publish and a PublishAsync of a topic the client already knows
// fail after the policy's attempts in about the policy's waits, on each
// transport: one attempt costs about the same on both. The bound is the
// sum of the waits plus a generous 750 ms per attempt (a refused
// connection costs microseconds on kafka-go, a franz-go attempt at most
// about one of kgo's 250 ms waits between metadata loads).
func TestPublishRetryPolicyBrokerDown(t *testing.T) {
	parallelOwnCluster(t)
	c := ownCluster(t, 1)
	led := ledger.ForTest(t, "only broker killed: a failed publish takes what Publish.Retry says")
	led.KafkaVersion(c.Version())
	policy := kavari.ConstantRetry(300*time.Millisecond, 4)
	var waits time.Duration
	for _, d := range policy.Delays(10) {
		waits += d
	}
	const allowance = 750 * time.Millisecond
	bound := waits + 4*allowance
	led.Setup("own 1-node cluster; Publish.Retry constant 300 ms x 4 (%s of waits); one Publish acknowledged, then the broker is SIGKILLed and left down", waits)
	reg := kavari.NewRegistry()
	if err := reg.Declare(&pubPolicy{}); err != nil {
		t.Fatal(err)
	}
	cfg := baseConfig(c.Brokers(), reg)
	cfg.Publish.Retry = policy
	k := newKavari(t, cfg)
	run := testenv.ID("run")
	body := func(i int) faultmsg.Body { return faultmsg.Body{Run: run, ID: msgID(i), Key: msgKey(i, 1), Seq: i} }

	// The client learns the topic's leader first (not in the ledger).
	if _, err := k.Publish(context.Background(), &pubPolicy{Body: body(0)}); err != nil {
		t.Fatal(err)
	}
	if err := c.Kill(0); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 2; i++ { // the second on a client whose attempts already failed
		b := body(i)
		led.Sent(b.ID, b.Key, b.Seq)
		begin := time.Now()
		_, err := k.Publish(context.Background(), &pubPolicy{Body: b})
		elapsed := time.Since(begin)
		led.Published(b.ID, err)
		led.Set("publish_"+b.ID+"_failed_after", elapsed)
		t.Logf("%s: Publish %d failed after %s (waits %s, bound %s): %v", testenv.Transport(), i, elapsed.Round(time.Millisecond), waits, bound, err)
		if err == nil {
			t.Fatalf("Publish %d with the only broker down succeeded", i)
		}
		if elapsed > bound {
			t.Errorf("Publish %d failed after %s: over the policy's %s of waits plus %s per attempt", i, elapsed.Round(time.Millisecond), waits, allowance)
		}
	}
	b := body(3)
	led.Sent(b.ID, b.Key, b.Seq)
	done := make(chan error, 1)
	begin := time.Now()
	k.PublishAsync(context.Background(), &pubPolicy{Body: b}, func(_ kavari.Receipt, err error) { done <- err })
	select {
	case err := <-done:
		elapsed := time.Since(begin)
		led.Published(b.ID, err)
		led.Set("publish_async_failed_after", elapsed)
		t.Logf("%s: PublishAsync callback after %s: %v", testenv.Transport(), elapsed.Round(time.Millisecond), err)
		if err == nil {
			t.Fatal("PublishAsync with the only broker down succeeded")
		}
		if elapsed > bound {
			t.Errorf("PublishAsync failed after %s: over the policy's %s of waits plus %s per attempt", elapsed.Round(time.Millisecond), waits, allowance)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("no PublishAsync callback 2 min after the call (hang guard)")
	}
}
