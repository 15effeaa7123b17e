package kavariotel_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
	kavariotel "github.com/kavari-go/kavari/otel"
)

type tierOrder struct {
	kavari.Message `kavari:"topic=kavari-otel-tier,key=ID"`
	ID             string `json:"id"`
}

// TestRetriesCountTheirTier: kavari.consumer.retries has kavari.retry.tier,
// 0 for an in-place retry, n for a move to retry topic tier n
// (Consume.RetryTopics); the retry event says it too.
func TestRetriesCountTheirTier(t *testing.T) {
	group := testenv.ID("otel-tier")
	s := newSetup(t, group)
	reg := kavari.NewRegistry()
	var calls atomic.Int64
	require.NoError(t, kavari.RegisterFuncOn(reg, &tierOrder{}, func(ctx context.Context, m *tierOrder) error {
		if calls.Add(1) <= 3 {
			return errors.New("not yet")
		}
		return nil
	}))
	run := testenv.ID("t")
	k := s.kavari(t, group, reg, true, func(c *kavari.Config) {
		c.Consume.Retry = kavari.ConstantRetry(10*time.Millisecond, 2)
		c.Consume.RetryTopics = []time.Duration{100 * time.Millisecond, 200 * time.Millisecond}
		c.Topics.Name = func(t string) string { return t + "-" + run }
	})
	require.NoError(t, k.Start(context.Background()))
	_, err := k.Publish(context.Background(), &tierOrder{ID: "o-1"})
	require.NoError(t, err)
	eventually(t, func() bool { return calls.Load() == 4 }, func() string { return fmt.Sprintf("calls: %d", calls.Load()) })
	topic := "kavari-otel-tier-" + run
	retries := func(topic string, tier int) int64 {
		return s.sum(t, kavariotel.MetricRetries, attribute.String("messaging.destination.name", topic), kavariotel.AttrRetryTier.Int(tier))
	}
	assert.Equal(t, int64(1), retries(topic, 0), "in place")
	assert.Equal(t, int64(1), retries(topic, 1), "the move to tier 1")
	assert.Equal(t, int64(1), retries(topic+".retry.1", 2), "the move from tier 1 to tier 2")
	var tiers []int64
	for _, p := range s.spansNamed("process " + topic + ".retry.1") {
		for _, ev := range p.Events {
			if ev.Name == kavariotel.EventRetryScheduled {
				for _, a := range ev.Attributes {
					if a.Key == kavariotel.AttrRetryTier {
						tiers = append(tiers, a.Value.AsInt64())
					}
				}
			}
		}
	}
	assert.Equal(t, []int64{2}, tiers, "tier 1's failed attempt: the retry event names tier 2")
}
