package kavari_test

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
)

type hotKeyMsg struct {
	kavari.Message `kavari:"topic=kavari-test-hotkey,key=ID"`
	Run            string `json:"run"`
	ID             string `json:"id"`
}

// TestStuckKeyDoesNotStallOtherPartitions: one key's handler hangs and 40 of
// its records queue behind it on partition 0, with MaxBuffered 16. The
// partition may hold only its share of the buffer, so the records written
// afterwards to partitions 1-3 are all handled while the key stays stuck.
func TestStuckKeyDoesNotStallOtherPartitions(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("run")
	const topic = "kavari-test-hotkey"
	createTopic(t, brokers, topic, 4, nil)
	reg := kavari.NewRegistry()
	var stuckRunning, others atomic.Int64
	require.NoError(t, kavari.RegisterFuncOn(reg, &hotKeyMsg{}, func(ctx context.Context, m *hotKeyMsg) error {
		if m.Run != run {
			return nil
		}
		if m.ID == "p0-stuck" {
			stuckRunning.Add(1)
			<-ctx.Done() // hangs until Stop
			return ctx.Err()
		}
		if !strings.HasPrefix(m.ID, "p0-") {
			others.Add(1)
		}
		return nil
	}))
	k := newKavari(t, reg, brokers, func(c *kavari.Config) { c.Consume.MaxInFlight, c.Consume.MaxBuffered = 4, 16 })
	ctx := context.Background()
	require.NoError(t, k.Start(ctx))
	// The partition is the key's first digit.
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond,
		Balancer: kafka.BalancerFunc(func(m kafka.Message, _ ...int) int { return int(m.Key[1] - '0') })}
	defer w.Close()
	rec := func(id string) kafka.Message {
		return kafka.Message{Key: []byte(id), Value: []byte(`{"run":"` + run + `","id":"` + id + `"}`),
			Headers: []kafka.Header{{Key: kavari.HeaderMsgType, Value: []byte("hotKeyMsg")}}}
	}
	var stuck []kafka.Message
	for range 40 {
		stuck = append(stuck, rec("p0-stuck"))
	}
	require.NoError(t, w.WriteMessages(ctx, stuck...))
	eventually(t, 60*time.Second, func() bool { return stuckRunning.Load() == 1 }, "the stuck handler did not start")
	var rest []kafka.Message
	for i := range 30 {
		rest = append(rest, rec("p"+strconv.Itoa(1+i%3)+"-k"+strconv.Itoa(i)))
	}
	require.NoError(t, w.WriteMessages(ctx, rest...))
	eventually(t, 60*time.Second, func() bool { return others.Load() == 30 },
		"only %d of 30 records on other partitions handled while one key is stuck (Health %+v)", others.Load(), k.Health())
	// Health names the stuck key and shows its partition paused at its share.
	var p0 kavari.PartitionHealth
	eventually(t, 60*time.Second, func() bool {
		for _, p := range k.Health().Partitions {
			if p.Topic == topic && p.Partition == 0 && p.Paused {
				p0 = p
				return true
			}
		}
		return false
	}, "partition 0 not shown paused: %+v", k.Health().Partitions)
	assert.Equal(t, "p0-stuck", p0.OldestKey)
	assert.Equal(t, 4, p0.Open, "its share of MaxBuffered 16 over 4 partitions")
	assert.Positive(t, p0.OldestAge)
	sctx, cancel := context.WithTimeout(ctx, 3*time.Second) // ends the stuck handler
	defer cancel()
	_ = k.Stop(sctx)
}

// TestPartitionShare: with two or more partitions none may take more than
// half the buffer; a partition gets at least its even share, and MaxInFlight
// when the buffer allows, so one busy partition can keep every handler busy.
func TestPartitionShare(t *testing.T) {
	for _, c := range []struct{ buffered, inFlight, n, want int }{
		{1024, 256, 1, 1024},
		{1024, 256, 2, 512},
		{1024, 256, 3, 341},
		{1024, 256, 100, 256},
		{256, 256, 100, 128}, // MaxBuffered = MaxInFlight: half the buffer at most
		{16, 4, 4, 4},
		{32, 8, 4, 8},
		{3, 1, 10, 1},
	} {
		got := kavari.PartitionShare(c.buffered, c.inFlight, c.n)
		assert.Equal(t, c.want, got, "MaxBuffered %d, MaxInFlight %d, %d partitions", c.buffered, c.inFlight, c.n)
		if c.n > 1 {
			assert.LessOrEqual(t, got, max(c.buffered/2, 1))
		}
	}
}
