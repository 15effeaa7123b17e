package integration

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
)

type batchEvent struct {
	kavari.Message `kavari:"topic=it-batch,key=Key"`
	Run            string `json:"run"`
	Key            string `json:"key"`
	Seq            int    `json:"seq"`
}

// revokes records the partitions a member was revoked.
type revokes struct{ n atomic.Int64 }

func (r *revokes) OnRevoked(partitions map[string][]int, lost bool) {
	for _, ps := range partitions {
		r.n.Add(int64(len(ps)))
	}
}

// A second member joins while the first member's batch handler holds a
// batch on every partition: the partitions that move are drained (their
// batches finish within DrainTimeout) and committed before the new member
// reads them, so no record of those batches is handled twice; every record
// is handled, each key's records in order.
func TestBatchRevokeInTheMiddleOfABatch(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("run")
	const partitions, keys, per = 4, 16, 25
	var mu sync.Mutex
	count := map[string]int{}      // key/seq -> times handled
	order := map[string][]int{}    // key -> seqs, first handlings, in order
	inflight := map[string]bool{}  // key/seq of the batches held at the join
	held := map[int]bool{}         // partitions whose first batch was held
	started := make(chan struct{}) // a batch is held on every partition
	handler := func(first bool) func(context.Context, []*batchEvent) error {
		return func(ctx context.Context, ms []*batchEvent) error {
			var mine []*batchEvent
			for _, m := range ms {
				if m.Run == run {
					mine = append(mine, m)
				}
			}
			if len(mine) == 0 {
				return nil
			}
			r, _ := kavari.BatchRecordFromContext(ctx, 0)
			mu.Lock()
			hold := first && !held[r.Partition]
			if hold {
				held[r.Partition] = true
				for _, m := range mine {
					inflight[fmt.Sprintf("%s/%d", m.Key, m.Seq)] = true
				}
				if len(held) == partitions {
					close(started)
				}
			}
			mu.Unlock()
			if hold {
				time.Sleep(2 * time.Second) // ignores ctx: the drain waits for it (DrainTimeout 5 s)
			}
			mu.Lock()
			defer mu.Unlock()
			for _, m := range mine {
				id := fmt.Sprintf("%s/%d", m.Key, m.Seq)
				if count[id]++; count[id] == 1 {
					order[m.Key] = append(order[m.Key], m.Seq)
				}
			}
			return nil
		}
	}
	reg1 := kavari.NewRegistry()
	require.NoError(t, kavari.RegisterBatchFuncOn(reg1, &batchEvent{}, handler(true)))
	rv := &revokes{}
	group := testenv.ID("it-batch")
	k1 := newKavari(t, reg1, brokers, func(c *kavari.Config) {
		c.Consume.GroupID = group
		c.Topics.Partitions = partitions
		c.Consume.MaxBatchRecords = 20
		c.Hooks = []kavari.Hook{rv}
	})
	ctx := context.Background()
	require.NoError(t, k1.Start(ctx))
	msgs := make([]kavari.Msg, 0, keys*per)
	for s := 0; s < per; s++ {
		for k := 0; k < keys; k++ {
			msgs = append(msgs, &batchEvent{Run: run, Key: "k" + strconv.Itoa(k), Seq: s})
		}
	}
	_, err := k1.PublishBatch(ctx, msgs...)
	require.NoError(t, err)
	select {
	case <-started:
	case <-time.After(time.Minute):
		t.Fatal("no batch held on every partition")
	}
	reg2 := kavari.NewRegistry()
	require.NoError(t, kavari.RegisterBatchFuncOn(reg2, &batchEvent{}, handler(false)))
	k2 := newKavari(t, reg2, brokers, func(c *kavari.Config) {
		c.Consume.GroupID = group
		c.Topics.Partitions = partitions
		c.Consume.MaxBatchRecords = 20
	})
	require.NoError(t, k2.Start(ctx))
	waitUntil(t, 2*time.Minute, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(count) == keys*per
	}, "every record handled")
	assert.Positive(t, rv.n.Load(), "the first member was revoked partitions")
	stop, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	assert.NoError(t, k2.Stop(stop))
	assert.NoError(t, k1.Stop(stop))
	mu.Lock()
	defer mu.Unlock()
	dups := 0
	for id, n := range count {
		if n > 1 {
			dups++
			assert.False(t, inflight[id], "%s was in a batch drained at the revoke, and handled %d times", id, n)
		}
	}
	for key, seqs := range order {
		for i, s := range seqs {
			assert.Equal(t, i, s, "key %s out of order: %v", key, seqs)
		}
	}
	t.Logf("%d records, %d in the held batches, %d handled twice, %d partitions revoked from the first member", len(count), len(inflight), dups, rv.n.Load())
}
