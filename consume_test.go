package kavari_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
)

type rtOrder struct {
	kavari.Message `kavari:"topic=kavari-test-rt,key=OrderID,name=order.placed,version=2"`
	Run            string `json:"run"`
	OrderID        string `json:"order_id" validate:"required"`
	Seq            int    `json:"seq"`
	Amount         int64  `json:"amount" validate:"gt=0"`
}

type rtRefund struct {
	kavari.Message `kavari:"topic=kavari-test-rt,key=OrderID"`
	Run            string `json:"run"`
	OrderID        string `json:"order_id" validate:"required"`
	Seq            int    `json:"seq"`
}

func TestRoundTripTwoTypesOneTopic(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("run")
	reg := kavari.NewRegistry()
	var mu sync.Mutex
	orders, refunds := map[int]bool{}, map[int]bool{}
	var headerOK atomic.Bool
	require.NoError(t, kavari.RegisterFuncOn(reg, &rtOrder{}, func(ctx context.Context, m *rtOrder) error {
		if m.Run != run {
			return nil
		}
		rec, ok := kavari.RecordFromContext(ctx)
		if ok && rec.Type == "order.placed" && rec.ID != "" {
			headerOK.Store(true)
		}
		mu.Lock()
		orders[m.Seq] = true
		mu.Unlock()
		return nil
	}))
	require.NoError(t, kavari.RegisterFuncOn(reg, &rtRefund{}, func(ctx context.Context, m *rtRefund) error {
		if m.Run != run {
			return nil
		}
		mu.Lock()
		refunds[m.Seq] = true
		mu.Unlock()
		return nil
	}))
	k := newKavari(t, reg, brokers)
	ctx := context.Background()
	require.NoError(t, k.Start(ctx))
	const n = 50
	for i := 0; i < n; i++ {
		_, err := k.Publish(ctx, &rtOrder{Run: run, OrderID: fmt.Sprintf("o-%d", i%7), Seq: i, Amount: 10})
		require.NoError(t, err)
		_, err = k.Publish(ctx, &rtRefund{Run: run, OrderID: fmt.Sprintf("o-%d", i%7), Seq: i})
		require.NoError(t, err)
	}
	eventually(t, 60*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(orders) == n && len(refunds) == n
	}, "not every message was handled")
	require.True(t, headerOK.Load(), "handler saw msg_type and ce_id through RecordFromContext")
	h := k.Health()
	require.True(t, h.Connected)
	require.Equal(t, []string{"kavari-test-rt"}, h.Topics)
}
