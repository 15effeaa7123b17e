package engine

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/transport/franz"
	"github.com/kavari-go/kavari/kavaritest"
)

type ktDupMsg struct {
	kavari.Message `kavari:"topic=kt-dup,key=ID"`
	ID             string `json:"id"`
}

// ktLateBroker starts an embedded broker whose first produce request is
// answered only after late (the broker then stores it), and a FranzGo
// client on it whose produce attempts are bounded by writeTimeout.
func ktLateBroker(t *testing.T, late, writeTimeout time.Duration) (*kavaritest.Broker, *kavari.Client) {
	t.Helper()
	t.Cleanup(franz.SetWriteTimeoutForTest(writeTimeout))
	b := kavaritest.NewBroker(t, kavaritest.Topics("kt-dup"), kavaritest.Partitions(1))
	var once sync.Once
	b.Cluster().ControlKey(kmsg.Produce.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		b.Cluster().DropControl()
		once.Do(func() { b.Cluster().SleepControl(func() { time.Sleep(late) }) })
		return nil, nil, false // then the broker handles (stores) it
	})
	reg := kavari.NewRegistry()
	require.NoError(t, reg.Declare(&ktDupMsg{}))
	k, err := kavari.New(kavari.Config{
		Brokers:   b.Addrs(),
		Transport: kavari.FranzGo,
		Registry:  reg,
		Logger:    testLogger(),
		// 100, 100, 200, 300, 500, 800 ms, …: many attempts of writeTimeout
		// before the late answer.
		Publish: kavari.PublishConfig{Retry: kavari.FibonacciRetry(100*time.Millisecond, 10)},
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = k.Stop(context.Background()) })
	return b, k
}

// ktStoredIDs reads topic from the start to its end and counts the records
// of each ce_id.
func ktStoredIDs(t *testing.T, brokers []string, topic string) map[string]int {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), ktHangGuard)
	defer cancel()
	// The end offset first, then read up to it.
	var end int64 = -1
	for end < 0 {
		req := kmsg.NewPtrListOffsetsRequest()
		rt := kmsg.NewListOffsetsRequestTopic()
		rt.Topic = topic
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Timestamp = -1
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl)
		require.NoError(t, err)
		end = resp.Topics[0].Partitions[0].Offset
	}
	ids := map[string]int{}
	var read int64
	for read < end {
		fs := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "reading %s: %d of %d records", topic, read, end)
		fs.EachRecord(func(r *kgo.Record) {
			read++
			for _, h := range r.Headers {
				if h.Key == kavari.HeaderID {
					ids[string(h.Value)]++
				}
			}
		})
	}
	return ids
}

// TestRetriedPublishIsStoredOnce: the broker answers the first produce
// request after 1.5 s while one attempt is bounded by 300 ms. kavari's
// retries must not produce the message again as a new record (kgo would
// give it a new idempotent sequence number and the broker would store
// both): Publish succeeds and the message is stored once.
func TestRetriedPublishIsStoredOnce(t *testing.T) {
	b, k := ktLateBroker(t, 1500*time.Millisecond, 300*time.Millisecond)
	r, err := k.Publish(context.Background(), &ktDupMsg{ID: "sync"})
	require.NoError(t, err)
	ids := ktStoredIDs(t, b.Addrs(), "kt-dup")
	assert.Equal(t, map[string]int{r.ID: 1}, ids, "records stored per ce_id")
}

// TestRetriedPublishAsyncIsStoredOnce: the same through PublishAsync (the
// async writers and dead letters share the write path).
func TestRetriedPublishAsyncIsStoredOnce(t *testing.T) {
	b, k := ktLateBroker(t, 1500*time.Millisecond, 300*time.Millisecond)
	type res struct {
		r   kavari.Receipt
		err error
	}
	done := make(chan res, 1)
	k.PublishAsync(context.Background(), &ktDupMsg{ID: "async"}, func(r kavari.Receipt, err error) { done <- res{r, err} })
	var got res
	select {
	case got = <-done:
	case <-time.After(ktHangGuard):
		t.Fatal("no PublishAsync callback (hang guard)")
	}
	require.NoError(t, got.err)
	ids := ktStoredIDs(t, b.Addrs(), "kt-dup")
	assert.Equal(t, map[string]int{got.r.ID: 1}, ids, "records stored per ce_id")
}

type ktDupDLMsg struct {
	kavari.Message `kavari:"topic=kt-dupdl,key=ID"`
	ID             string `json:"id"`
}

// TestRetriedDeadLetterIsStoredOnce: a handler fails, and the broker answers
// the dead letter's first produce request after 1.5 s while one attempt is
// bounded by 300 ms. The dead-letter write shares the publish retry path:
// the dead letter is stored once.
func TestRetriedDeadLetterIsStoredOnce(t *testing.T) {
	t.Cleanup(franz.SetWriteTimeoutForTest(300 * time.Millisecond))
	b := kavaritest.NewBroker(t, kavaritest.Topics("kt-dupdl", "kt-dupdl.dlq"), kavaritest.Partitions(1))
	// Once armed (after the message itself was published), the next produce
	// request is the dead letter's: it is held (requests name topics by id).
	var armed, held atomic.Bool
	b.Cluster().ControlKey(kmsg.Produce.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		b.Cluster().KeepControl()
		if armed.Load() && !held.Swap(true) {
			b.Cluster().SleepControl(func() { time.Sleep(1500 * time.Millisecond) })
		}
		return nil, nil, false
	})
	reg := kavari.NewRegistry()
	require.NoError(t, kavari.RegisterFuncOn(reg, &ktDupDLMsg{}, func(context.Context, *ktDupDLMsg) error {
		return errors.New("always fails")
	}))
	k := newKavari(t, reg, b.Addrs(), func(c *kavari.Config) {
		c.Transport = kavari.FranzGo
		c.Consume.Retry = kavari.NoRetry()
		c.Publish.Retry = kavari.FibonacciRetry(100*time.Millisecond, 10)
	})
	ctx := context.Background()
	_, err := k.Publish(ctx, &ktDupDLMsg{ID: "dl"})
	require.NoError(t, err)
	armed.Store(true)
	require.NoError(t, k.Start(ctx))
	eventually(t, ktHangGuard, func() bool { return k.Health().DeadLettered == 1 }, "dead-lettered")
	require.True(t, held.Load(), "the dead letter's produce request was not held")
	ids := ktStoredIDs(t, b.Addrs(), "kt-dupdl.dlq")
	assert.Len(t, ids, 1, "dead letters stored per ce_id: %v", ids)
	for id, n := range ids {
		assert.Equal(t, 1, n, "dead letter of %s stored %d times", id, n)
	}
}
