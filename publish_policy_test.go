package kavari_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
)

type ktPolicyMsg struct {
	kavari.Message `kavari:"topic=kt-policy,key=ID"`
	ID             string `json:"id"`
}

// policyAttemptAllowance is what one failed attempt against a closed port
// may cost on top of the policy's waits. A refused connection fails in
// microseconds on kafka-go; a franz-go attempt waits for kgo's next
// metadata load, at most about 250 ms apart. The allowance is three times
// that, for a loaded machine, and still well below what an attempt cost on
// franz-go before one attempt was one kgo try (about 2 s from the second
// attempt on). Measured with the policy below (4 attempts, 900 ms of
// waits): kafka-go 0.9 s; franz-go 1.5-1.8 s, 8.7 s before.
const policyAttemptAllowance = 750 * time.Millisecond

// TestPublishFailureFollowsRetryPolicy: with no broker listening, a failed
// Publish (and a failed PublishAsync, whose callback reports it) gives up
// after the policy's attempts, in about the sum of its waits, on every
// transport: one attempt costs about the same on each. The bound is the
// sum of the waits plus a generous allowance per attempt.
func TestPublishFailureFollowsRetryPolicy(t *testing.T) {
	policy := kavari.ConstantRetry(300*time.Millisecond, 4)
	var waits time.Duration
	for _, d := range policy.Delays(10) {
		waits += d
	}
	bound := waits + 4*policyAttemptAllowance
	for _, tr := range []kavari.Transport{kavari.KafkaGo, kavari.FranzGo} {
		t.Run(fmt.Sprint(tr), func(t *testing.T) {
			reg := kavari.NewRegistry()
			require.NoError(t, reg.Declare(&ktPolicyMsg{}))
			k, err := kavari.New(kavari.Config{
				Brokers:   ktAbsentBroker(t),
				Transport: tr,
				Registry:  reg,
				Logger:    ktLogger(),
				Publish:   kavari.PublishConfig{Retry: policy},
			})
			require.NoError(t, err)
			defer func() { _ = k.Stop(context.Background()) }()
			for i := 0; i < 2; i++ { // the second on a client whose earlier attempts failed
				start := time.Now()
				_, err := k.Publish(context.Background(), &ktPolicyMsg{ID: "p"})
				elapsed := time.Since(start)
				t.Logf("Publish %d failed after %v (policy waits %v, bound %v): %v", i, elapsed, waits, bound, err)
				require.Error(t, err)
				require.Less(t, elapsed, bound, "Publish %d took longer than the policy allows", i)
			}
			done := make(chan error, 1)
			start := time.Now()
			k.PublishAsync(context.Background(), &ktPolicyMsg{ID: "a"}, func(_ kavari.Receipt, err error) { done <- err })
			select {
			case err := <-done:
				elapsed := time.Since(start)
				t.Logf("PublishAsync callback after %v: %v", elapsed, err)
				require.Error(t, err)
				require.Less(t, elapsed, bound, "the PublishAsync callback came later than the policy allows")
			case <-time.After(ktHangGuard):
				t.Fatal("no PublishAsync callback (hang guard)")
			}
		})
	}
}
