package kavari_test

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/transport"
)

// countingTransport counts the Pause and Resume calls of its consumers.
type countingTransport struct {
	transport.Transport
	pauses, resumes atomic.Int64
}

func (t *countingTransport) NewConsumer(cfg transport.Config) (transport.Consumer, error) {
	c, err := t.Transport.NewConsumer(cfg)
	if err != nil {
		return nil, err
	}
	return &countingConsumer{Consumer: c, t: t}, nil
}

type countingConsumer struct {
	transport.Consumer
	t *countingTransport
}

func (c *countingConsumer) Pause(tps ...transport.TopicPartition) {
	c.t.pauses.Add(1)
	c.Consumer.Pause(tps...)
}

func (c *countingConsumer) Resume(tps ...transport.TopicPartition) {
	c.t.resumes.Add(1)
	c.Consumer.Resume(tps...)
}

type fetchCounter struct{ fetches atomic.Int64 }

func (f *fetchCounter) OnFetched(string, int, int, int64, int64) { f.fetches.Add(1) }

// A client that fetches more records at once than a partition's share (kgo
// brings up to a MiB per partition, thousands of small records) must not
// have the partition paused at every fetch: kgo drops what it buffered for a
// paused partition, and the partition stalls for a fetch round trip each
// time. A fetch that arrives while less than the share is waiting is taken
// without pausing.
func TestFetchesLargerThanTheShareDoNotPauseEveryTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := engBroker(1)
		b.Batch = 40 // records per delivery, over the share of 8
		const n = 2000
		for i := 0; i < n; i++ {
			b.Append(engRecord(0, "k"+string(rune('a'+i%26)), i))
		}
		tr := &countingTransport{Transport: b.Transport(transport.Capabilities{})}
		fc := &fetchCounter{}
		reg := kavari.NewRegistry()
		var handled atomic.Int64
		require.NoError(t, kavari.RegisterFuncOn(reg, &engMsg{}, func(context.Context, *engMsg) error {
			handled.Add(1)
			return nil
		}))
		k, err := kavari.NewOnTransport(kavari.Config{
			Brokers: []string{"memory"}, Registry: reg, Logger: testLogger(), Hooks: []kavari.Hook{fc},
			Consume: kavari.ConsumeConfig{GroupID: "g-pause", MaxInFlight: 2, MaxBuffered: 8, CommitInterval: 100 * time.Millisecond},
		}, tr)
		require.NoError(t, err)
		require.NoError(t, k.Start(context.Background()))
		for memCommitted(b, "g-pause", 0) < n {
			time.Sleep(100 * time.Millisecond)
		}
		require.NoError(t, stopNow(t, k))
		require.EqualValues(t, n, handled.Load())
		fetches, pauses := fc.fetches.Load(), tr.pauses.Load()
		t.Logf("%d fetches, %d pauses, %d resumes", fetches, pauses, tr.resumes.Load())
		require.Less(t, pauses, fetches, "every fetch paused the partition")
	})
}
