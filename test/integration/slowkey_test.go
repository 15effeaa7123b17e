package integration

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
)

type slowKeyMsg struct {
	kavari.Message `kavari:"topic=it-slowkey,key=Key"`
	Key            string `json:"key"`
	Seq            int    `json:"seq"`
}

// TestSlowKeyDoesNotThrottleOtherPartitions: on 8 partitions, one key takes
// 20 ms a record (400 of them, 1 in 200 records); the records of the 7
// partitions it is not on are handled at once, and must not wait at its
// pace. They are all handled while the slow key has most of its records
// left, on every transport. Before, on franz-go, the slow key's partition's
// backlog held every partition back until its feeder drained it, room for
// a few records every 50 ms or so, never waiting the 100 ms that pauses a
// partition: the others finished with most of the slow key's records
// handled.
func TestSlowKeyDoesNotThrottleOtherPartitions(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	topic := testenv.ID("it-slowkey")
	const slowN, every = 400, 200
	var slow, healthy, slowAtHealthyDone atomic.Int64
	var slowPart atomic.Int32
	var healthyWant atomic.Int64
	reg := kavari.NewRegistry()
	require.NoError(t, kavari.RegisterFuncOn(reg, &slowKeyMsg{}, func(ctx context.Context, m *slowKeyMsg) error {
		if m.Key == "slow" {
			select {
			case <-time.After(20 * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
			slow.Add(1)
			return nil
		}
		rec, _ := kavari.RecordFromContext(ctx)
		if int32(rec.Partition) != slowPart.Load() && healthy.Add(1) == healthyWant.Load() {
			slowAtHealthyDone.Store(slow.Load())
		}
		return nil
	}))
	k := newKavari(t, reg, brokers, func(c *kavari.Config) {
		c.Topics.Partitions = 8
		c.Topics.Name = func(string) string { return topic }
	})
	ctx := context.Background()
	msgs := make([]kavari.Msg, 0, slowN*every)
	for i := range slowN * every {
		key := "k" + strconv.Itoa(i%5000)
		if i%every == 0 {
			key = "slow"
		}
		msgs = append(msgs, &slowKeyMsg{Key: key, Seq: i})
	}
	rs, err := k.PublishBatch(ctx, msgs...)
	require.NoError(t, err)
	perPart := map[int]int64{}
	sp := -1
	for _, r := range rs {
		perPart[r.Partition]++
		if r.Message.(*slowKeyMsg).Key == "slow" {
			sp = r.Partition
		}
	}
	require.GreaterOrEqual(t, sp, 0)
	want := int64(0)
	for p, n := range perPart {
		if p != sp {
			want += n
		}
	}
	slowPart.Store(int32(sp))
	healthyWant.Store(want)
	require.NoError(t, k.Start(ctx))
	waitUntil(t, 2*time.Minute, func() bool { return healthy.Load() >= want }, "the other partitions' records handled")
	t.Logf("the other partitions' %d records handled with %d of the slow key's %d", want, slowAtHealthyDone.Load(), slowN)
	assert.Less(t, slowAtHealthyDone.Load(), int64(slowN/2), "slow-key records handled when the other partitions were done")
}
