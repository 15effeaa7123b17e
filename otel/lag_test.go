package kavariotel_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
	kavariotel "github.com/kavari-go/kavari/otel"
)

type stoppedOrder struct {
	kavari.Message `kavari:"topic=kavari-otel-stopped,key=ID"`
	ID             string `json:"id"`
}

// Lag rises while a group has no running member: records published while
// its consumer is stopped show, as soon as a new member is assigned the
// partition, as exactly that lag, in Health and in the gauge, although the
// new member's handler holds the first record and the partition fetches no
// more; it falls to 0 once the member caught up.
func TestLagOfStoppedConsumer(t *testing.T) {
	const topic = "kavari-otel-stopped"
	group := testenv.ID("otel-stopped")
	s := newSetup(t, group)
	run := testenv.ID("run")

	// A first member catches up on the partition and stops, committing.
	regA := kavari.NewRegistry()
	require.NoError(t, kavari.RegisterFuncOn(regA, &stoppedOrder{}, func(context.Context, *stoppedOrder) error { return nil }))
	a := s.kavari(t, group, regA, false)
	require.NoError(t, a.Start(context.Background()))
	_, err := a.Publish(context.Background(), &stoppedOrder{ID: run + "-before"})
	require.NoError(t, err)
	position := func(k *kavari.Client) (kavari.PartitionHealth, bool) {
		for _, p := range k.Health().Positions {
			if p.Topic == topic && p.Partition == 0 {
				return p, true
			}
		}
		return kavari.PartitionHealth{}, false
	}
	eventually(t, func() bool { p, ok := position(a); return ok && p.HighWatermark > 0 && p.Lag == 0 },
		func() string { return fmt.Sprintf("the first member never caught up: %+v", a.Health().Positions) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, a.Stop(ctx))

	// While no member runs, n records are published.
	const n = 7
	pub := s.kavari(t, "", kavari.NewRegistry(), false)
	for i := range n {
		_, err := pub.Publish(context.Background(), &stoppedOrder{ID: fmt.Sprintf("%s-%d", run, i)})
		require.NoError(t, err)
	}

	// A new member whose handler holds every record until released.
	regB := kavari.NewRegistry()
	release := make(chan struct{})
	var mu sync.Mutex
	handled := 0
	require.NoError(t, kavari.RegisterFuncOn(regB, &stoppedOrder{}, func(ctx context.Context, _ *stoppedOrder) error {
		select {
		case <-release:
		case <-ctx.Done():
			return ctx.Err()
		}
		mu.Lock()
		handled++
		mu.Unlock()
		return nil
	}))
	b := s.kavari(t, group, regB, true, func(c *kavari.Config) {
		// One record at a time: the partition is paused behind the held
		// one, so its lag cannot come from records fetched.
		c.Consume.MaxInFlight, c.Consume.MaxBuffered = 1, 1
	})
	_, err = s.inst.Observe(b)
	require.NoError(t, err)
	partition := []attribute.KeyValue{attribute.String("messaging.destination.name", topic), attribute.String("messaging.destination.partition.id", "0")}
	gauge := func() (int64, bool) { return s.gauge(t, kavariotel.MetricLag, partition...) }
	require.NoError(t, b.Start(context.Background()))

	// The first lag observed, by the gauge and by Health, is n.
	var first int64
	eventually(t, func() bool {
		v, ok := gauge()
		first = v
		return ok
	}, func() string { return fmt.Sprintf("no lag reported: %+v", b.Health().Positions) })
	assert.Equal(t, int64(n), first, "the gauge's first lag")
	p, ok := position(b)
	require.True(t, ok)
	assert.Equal(t, int64(n), p.Lag, "Health's lag: %+v", p)
	mu.Lock()
	assert.Zero(t, handled, "no record finished")
	mu.Unlock()

	close(release)
	eventually(t, func() bool { v, ok := gauge(); return ok && v == 0 },
		func() string {
			v, _ := gauge()
			return fmt.Sprintf("lag never fell to 0: gauge %d, %+v", v, b.Health().Positions)
		})
	p, _ = position(b)
	assert.Equal(t, int64(0), p.Lag, "Health's lag: %+v", p)
	mu.Lock()
	assert.Equal(t, n, handled)
	mu.Unlock()
}
