package kavariotel_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
	kavariotel "github.com/kavari-go/kavari/otel"
)

type eoIn struct {
	kavari.Message `kavari:"topic=kavari-otel-eo-in,key=Key"`
	Key            string `json:"key"`
	N              int    `json:"n"`
}

type eoOut struct {
	kavari.Message `kavari:"topic=kavari-otel-eo-out,key=Key"`
	Key            string `json:"key"`
	N              int    `json:"n"`
}

// Exactly-once transactions are counted by outcome: a handler that panics
// after publishing, once, aborts one; the others commit.
func TestTransactionsCounted(t *testing.T) {
	group := testenv.ID("otel-eo")
	s := newSetup(t, group)
	reg := kavari.NewRegistry()
	var k *kavari.Client
	var panicked atomic.Bool
	require.NoError(t, kavari.RegisterFuncOn(reg, &eoIn{}, func(ctx context.Context, m *eoIn) error {
		if _, err := k.Publish(ctx, &eoOut{Key: m.Key, N: m.N}); err != nil {
			return err
		}
		if m.N == 3 && panicked.CompareAndSwap(false, true) {
			panic("after publishing")
		}
		return nil
	}))
	require.NoError(t, reg.Declare(&eoOut{}))
	k = s.kavari(t, group, reg, true, func(c *kavari.Config) {
		c.Transport = kavari.FranzGo
		c.Consume.ExactlyOnce = kavari.ExactlyOnceConfig{TransactionalIDPrefix: group}
		c.Topics.Name = func(topic string) string { return topic + "-" + group }
	})
	ctx := context.Background()
	require.NoError(t, k.Start(ctx))
	for i := range 10 {
		_, err := k.Publish(ctx, &eoIn{Key: fmt.Sprintf("k%d", i), N: i})
		require.NoError(t, err)
	}
	committed := kavariotel.AttrTransactionOutcome.String("committed")
	aborted := kavariotel.AttrTransactionOutcome.String("aborted")
	eventually(t, func() bool {
		return k.Health().Handled >= 10 && s.sum(t, kavariotel.MetricTransactions, committed) >= 1 && s.sum(t, kavariotel.MetricTransactions, aborted) >= 1
	}, func() string {
		return fmt.Sprintf("transactions: %d committed, %d aborted; health %+v", s.sum(t, kavariotel.MetricTransactions, committed),
			s.sum(t, kavariotel.MetricTransactions, aborted), k.Health().Transaction)
	})
}
