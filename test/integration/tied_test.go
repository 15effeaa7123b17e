package integration

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
)

type tiedIn struct {
	kavari.Message `kavari:"topic=it-tied-in,key=Key"`
	Key            string `json:"key"`
}

type tiedOut struct {
	kavari.Message `kavari:"topic=it-tied-out,key=Key"`
	Key            string `json:"key"`
}

// TestHandlerPublishAsyncWaitsForTheBroker: a handler publishes its output
// with PublishAsync and returns at once. While the output's topic does not
// exist every output fails, so no input is committed and the handlers are
// tried again; once the topic exists every input is committed, after its
// output was written.
func TestHandlerPublishAsyncWaitsForTheBroker(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("run")
	group := testenv.ID("g")
	in, out := "it-tied-in-"+run, "it-tied-out-"+run
	reg := kavari.NewRegistry()
	var k *kavari.Client
	var runs atomic.Int64
	require.NoError(t, kavari.RegisterFuncOn(reg, &tiedIn{}, func(ctx context.Context, m *tiedIn) error {
		runs.Add(1)
		k.PublishAsync(ctx, &tiedOut{Key: m.Key}, nil)
		return nil
	}))
	k = newKavari(t, reg, brokers, func(c *kavari.Config) {
		c.Consume.GroupID = group
		c.Topics.Name = func(topic string) string { return topic + "-" + run }
		c.Topics.Partitions = 1
		c.Consume.Retry = kavari.ConstantRetry(300*time.Millisecond, 1000)
		c.Publish.Retry = kavari.ConstantRetry(50*time.Millisecond, 3)
	})
	ctx := context.Background()
	const n = 3
	for i := 0; i < n; i++ {
		_, err := k.Publish(ctx, &tiedIn{Key: "k" + strconv.Itoa(i)})
		require.NoError(t, err)
	}
	require.NoError(t, k.Start(ctx))
	waitUntil(t, 60*time.Second, func() bool { return runs.Load() >= 2*n }, "handlers tried again while their outputs fail")
	committed := func() int64 {
		c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
		resp, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{in: {0}}})
		require.NoError(t, err)
		for _, p := range resp.Topics[in] {
			return p.CommittedOffset
		}
		return -1
	}
	time.Sleep(time.Second) // commit intervals pass
	assert.LessOrEqual(t, committed(), int64(0), "committed an input whose output was never written")
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	resp, err := c.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{Topic: out, NumPartitions: 1, ReplicationFactor: 1}}})
	require.NoError(t, err)
	require.NoError(t, resp.Errors[out])
	waitUntil(t, 60*time.Second, func() bool { return committed() == n }, "every input committed once its output was written")
	keys := map[string]bool{}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: out, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for len(keys) < n {
		m, err := r.ReadMessage(rctx)
		require.NoError(t, err, "outputs read: %v", keys)
		keys[string(m.Key)] = true
	}
	assert.Len(t, keys, n)
}
