package integration

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/internal/testkit"
)

type isoEvent struct {
	kavari.Message `kavari:"topic=it-iso,key=Key"`
	Key            string `json:"key"`
	Batch          string `json:"batch"` // "aborted", "committed" or "plain"
	Seq            int    `json:"seq"`
}

// produceTxn writes n isoEvents of batch to topic in one transaction of a
// raw franz-go transactional producer, and commits or aborts it. The
// records carry the headers a kavari consumer routes on.
func produceTxn(t *testing.T, cl *kgo.Client, topic, batch string, n int, commit bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, cl.BeginTransaction())
	for i := range n {
		v, err := json.Marshal(isoEvent{Key: "k", Batch: batch, Seq: i})
		require.NoError(t, err)
		rec := &kgo.Record{Topic: topic, Key: []byte("k"), Value: v, Headers: []kgo.RecordHeader{
			{Key: "msg_type", Value: []byte("isoEvent")},
			{Key: "content-type", Value: []byte("application/json")},
		}}
		require.NoError(t, cl.ProduceSync(ctx, rec).FirstErr())
	}
	require.NoError(t, cl.EndTransaction(ctx, kgo.TransactionEndTry(commit)))
}

// TestIsolation writes, on one partition, a transaction that aborts, one
// that commits and a plain record, and consumes them under each Isolation.
// ReadCommitted hands the handler the committed and plain records and never
// one of the aborted transaction, which precedes them in the log;
// ReadUncommitted hands it all three batches. Neither dead-letters anything
// (the transaction markers are not records). On a transport that cannot
// read committed, New refuses ReadCommitted.
func TestIsolation(t *testing.T) {
	brokers := testenv.RequireReal(t)
	for _, iso := range []kavari.Isolation{kavari.ReadCommitted, kavari.ReadUncommitted} {
		t.Run(iso.String(), func(t *testing.T) {
			run := testenv.ID("iso")
			topic := "it-iso-" + run
			var mu sync.Mutex
			seen := map[string]int{}
			reg := kavari.NewRegistry()
			require.NoError(t, kavari.RegisterFuncOn(reg, &isoEvent{}, func(_ context.Context, m *isoEvent) error {
				mu.Lock()
				seen[m.Batch]++
				mu.Unlock()
				return nil
			}))
			cfg := kavari.Config{
				Brokers: brokers, Registry: reg, Logger: testkit.Logger(),
				Consume: kavari.ConsumeConfig{GroupID: testenv.ID("g"), Isolation: iso, CommitInterval: 200 * time.Millisecond,
					HeartbeatInterval: 500 * time.Millisecond, SessionTimeout: 10 * time.Second, DrainTimeout: 5 * time.Second},
				Topics: kavari.TopicConfig{Partitions: 1, Name: func(string) string { return topic }},
			}
			testkit.UseTransport(&cfg)
			k, err := kavari.New(cfg)
			if iso == kavari.ReadCommitted && cfg.Transport == kavari.KafkaGo {
				require.ErrorContains(t, err, "Consume.Isolation ReadCommitted")
				return
			}
			require.NoError(t, err)
			ctx := context.Background()
			require.NoError(t, k.EnsureTopics(ctx))
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				_ = k.Stop(ctx)
			})

			const n = 20
			txn, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.TransactionalID(testenv.ID("tx")))
			require.NoError(t, err)
			defer txn.Close()
			produceTxn(t, txn, topic, "aborted", n, false)
			produceTxn(t, txn, topic, "committed", n, true)
			plain, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
			require.NoError(t, err)
			defer plain.Close()
			v, _ := json.Marshal(isoEvent{Key: "k", Batch: "plain"})
			require.NoError(t, plain.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: []byte("k"), Value: v, Headers: []kgo.RecordHeader{
				{Key: "msg_type", Value: []byte("isoEvent")}, {Key: "content-type", Value: []byte("application/json")},
			}}).FirstErr())

			require.NoError(t, k.Start(ctx))
			// One partition, delivered in offset order: once the plain
			// record, the last one, is handled, every earlier record that
			// is to be handed over has been.
			waitUntil(t, 60*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return seen["plain"] == 1 }, "the plain record handled")
			// Every record of the partition, transaction markers included,
			// finished: the committed offset reached the log end.
			waitUntil(t, 30*time.Second, func() bool {
				ps := k.Health().Positions
				return len(ps) == 1 && ps[0].HighWatermark > 0 && ps[0].Committed == ps[0].HighWatermark
			}, "the group committed up to the log end")
			mu.Lock()
			defer mu.Unlock()
			want := map[string]int{"committed": n, "plain": 1}
			if iso == kavari.ReadUncommitted {
				want["aborted"] = n
			}
			assert.Equal(t, want, seen)
			assert.Zero(t, k.Health().DeadLettered, "dead letters (a transaction marker taken for a record?)")
			t.Logf("%v on %v: handled %s", iso, cfg.Transport, strconv.Quote(fmtCounts(seen)))
		})
	}
}

func fmtCounts(seen map[string]int) string {
	b, _ := json.Marshal(seen)
	return string(b)
}
