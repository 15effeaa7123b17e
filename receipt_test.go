package kavari_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/internal/transport"
	"github.com/kavari-go/kavari/internal/transport/memory"
)

// memPublisher is a Client on b that only publishes, retrying quickly.
func memPublisher(t *testing.T, b *memory.Broker, mutate ...func(*kavari.Config)) *kavari.Client {
	t.Helper()
	k := memKavari(t, b, transport.Capabilities{}, "receipts", func(context.Context, *engMsg) error { return nil },
		append([]func(*kavari.Config){func(c *kavari.Config) { c.Publish.Retry = kavari.ConstantRetry(time.Millisecond, 5) }}, mutate...)...)
	t.Cleanup(func() { _ = stopNow(t, k) })
	return k
}

func stored(b *memory.Broker, r kavari.Receipt) transport.Record {
	return b.Records(r.Topic, int32(r.Partition))[r.Offset]
}

func idOf(rec transport.Record) string {
	for _, h := range rec.Headers {
		if h.Key == kavari.HeaderID {
			return string(h.Value)
		}
	}
	return ""
}

// A write that reached the broker but was reported failed, then retried,
// is stored twice: the receipt names the write that was acknowledged.
func TestReceiptNamesTheStoredWriteAfterRetries(t *testing.T) {
	b := engBroker(1)
	var mu sync.Mutex
	first := true
	b.FailProduce = func(rec *transport.Record) error {
		mu.Lock()
		defer mu.Unlock()
		if !first {
			return nil
		}
		first = false
		b.Append(*rec) // stored, and yet reported failed (a timed-out ack)
		return &transport.ProduceError{Kind: transport.Retriable, MayHaveBeenWritten: true, Err: errors.New("kt: ack lost")}
	}
	k := memPublisher(t, b)
	msg := &engMsg{Key: "a", N: 1}
	r, err := k.Publish(context.Background(), msg)
	require.NoError(t, err)
	assert.Same(t, msg, r.Message)
	assert.Equal(t, engTopic, r.Topic)
	assert.Equal(t, 0, r.Partition)
	assert.Equal(t, int64(1), r.Offset, "offset 0 holds the lost-ack write; the acknowledged one is 1")
	require.NotEmpty(t, r.ID)
	assert.Equal(t, r.ID, idOf(stored(b, r)))
	assert.Equal(t, r.ID, idOf(b.Records(engTopic, 0)[0]), "the same ce_id on both writes")
}

func TestReceiptsOfBatchAndFailures(t *testing.T) {
	b := engBroker(3)
	k := memPublisher(t, b)
	ctx := context.Background()
	var msgs []kavari.Msg
	for i := range 6 {
		msgs = append(msgs, &engMsg{Key: "k" + strconv.Itoa(i), N: i})
	}
	rs, err := k.PublishBatch(ctx, msgs...)
	require.NoError(t, err)
	require.Len(t, rs, len(msgs))
	seen := map[string]bool{}
	for i, r := range rs {
		assert.Same(t, msgs[i], r.Message)
		require.GreaterOrEqual(t, r.Offset, int64(0))
		assert.Equal(t, r.ID, idOf(stored(b, r)), "receipt %d names its own record", i)
		assert.False(t, seen[r.ID])
		seen[r.ID] = true
	}

	// An invalid message: refused before sending, no topic, no ID.
	bad := &engMsg{} // empty key
	r, err := k.Publish(ctx, bad)
	require.Error(t, err)
	assert.Equal(t, kavari.Receipt{Message: bad, Partition: -1, Offset: -1}, r)

	// A batch refused whole: every receipt unstored.
	rs, err = k.PublishBatch(ctx, &engMsg{Key: "ok"}, bad)
	var be *kavari.BatchError
	require.ErrorAs(t, err, &be)
	assert.True(t, be.Refused)
	for _, r := range rs {
		assert.Equal(t, int64(-1), r.Offset)
	}

	// A message that fails for good: topic and ID known, not stored.
	b.FailProduce = func(*transport.Record) error {
		return &transport.ProduceError{Kind: transport.Permanent, Err: errors.New("kt: refused")}
	}
	r, err = k.Publish(ctx, &engMsg{Key: "x"})
	var pe *kavari.PublishError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, engTopic, r.Topic)
	assert.Equal(t, pe.ID, r.ID)
	assert.Equal(t, -1, r.Partition)
}

// PublishAsync's ctx carries headers as Publish's does, and its callback
// gets the receipt.
func TestPublishAsyncReceiptAndContextHeaders(t *testing.T) {
	b := engBroker(2)
	k := memPublisher(t, b)
	ctx := kavari.WithHeaders(context.Background(), kavari.Header{Key: "tenant", Value: []byte("t-1")})
	got := make(chan kavari.Receipt, 1)
	msg := &engMsg{Key: "a"}
	k.PublishAsync(ctx, msg, func(r kavari.Receipt, err error) {
		assert.NoError(t, err)
		got <- r
	})
	var r kavari.Receipt
	select {
	case r = <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("no callback")
	}
	assert.Same(t, msg, r.Message)
	rec := stored(b, r)
	assert.Equal(t, r.ID, idOf(rec))
	var tenant string
	for _, h := range rec.Headers {
		if h.Key == "tenant" {
			tenant = string(h.Value)
		}
	}
	assert.Equal(t, "t-1", tenant, "the ctx's headers went with the async message")
}

// A message whose ctx ends while it waits in the queue is not sent, and a
// PublishAsync waiting for room gives up when its ctx ends.
func TestPublishAsyncContextEndsWhileQueuedOrWaiting(t *testing.T) {
	b := engBroker(1)
	release := make(chan struct{})
	entered := make(chan struct{}, 10)
	b.FailProduce = func(rec *transport.Record) error {
		entered <- struct{}{}
		<-release // hold the writer
		return nil
	}
	k := memPublisher(t, b, func(c *kavari.Config) { c.Publish.AsyncQueue, c.Publish.AsyncWorkers, c.Publish.BatchSize = 1, 1, 1 })
	type result struct {
		r   kavari.Receipt
		err error
	}
	results := make(chan result, 3)
	cb := func(r kavari.Receipt, err error) { results <- result{r, err} }
	bg := context.Background()

	k.PublishAsync(bg, &engMsg{Key: "held", N: 1}, cb)
	<-entered // the writer holds message 1; the queue is empty
	queuedCtx, cancelQueued := context.WithCancel(bg)
	k.PublishAsync(queuedCtx, &engMsg{Key: "queued", N: 2}, cb) // fills the queue
	waitCtx, cancelWait := context.WithCancel(bg)
	returned := make(chan struct{})
	go func() {
		k.PublishAsync(waitCtx, &engMsg{Key: "waiting", N: 3}, cb) // blocks: the queue is full
		close(returned)
	}()
	cancelWait()
	select {
	case <-returned:
	case <-time.After(30 * time.Second):
		t.Fatal("PublishAsync kept waiting for room after its ctx ended")
	}
	res := <-results
	assert.Equal(t, 3, res.r.Message.(*engMsg).N)
	assert.ErrorIs(t, res.err, context.Canceled)

	cancelQueued()
	close(release)
	got := map[int]error{}
	for range 2 {
		select {
		case res := <-results:
			got[res.r.Message.(*engMsg).N] = res.err
		case <-time.After(30 * time.Second):
			t.Fatal("callbacks missing")
		}
	}
	assert.NoError(t, got[1])
	var pe *kavari.PublishError
	require.ErrorAs(t, got[2], &pe, "the queued message's ctx ended before its write")
	assert.ErrorIs(t, got[2], context.Canceled)
	assert.False(t, pe.MayHaveBeenWritten)
	assert.Len(t, b.Records(engTopic, 0), 1, "only message 1 was stored")
}

// On a real broker the receipt's partition and offset are where the
// consumer finds the message.
func TestReceiptMatchesConsumedRecord(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("run")
	reg := kavari.NewRegistry()
	type seen struct {
		p   int
		off int64
	}
	got := make(chan seen, 10)
	require.NoError(t, kavari.RegisterFuncOn(reg, &ktReceiptMsg{}, func(ctx context.Context, m *ktReceiptMsg) error {
		if m.Run != run {
			return nil
		}
		rec, _ := kavari.RecordFromContext(ctx)
		got <- seen{rec.Partition, rec.Offset}
		return nil
	}))
	k := ktNew(t, brokers, reg, func(c *kavari.Config) { c.Topics.Create = true })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	require.NoError(t, k.Start(ctx))
	want := map[seen]bool{}
	for i := range 3 {
		r, err := k.Publish(ctx, &ktReceiptMsg{Run: run, ID: strconv.Itoa(i)})
		require.NoError(t, err)
		want[seen{r.Partition, r.Offset}] = true
	}
	done := make(chan struct{})
	var async kavari.Receipt
	k.PublishAsync(ctx, &ktReceiptMsg{Run: run, ID: "async"}, func(r kavari.Receipt, err error) {
		assert.NoError(t, err)
		async = r
		close(done)
	})
	<-done
	want[seen{async.Partition, async.Offset}] = true
	require.Len(t, want, 4)
	for range 4 {
		select {
		case s := <-got:
			assert.True(t, want[s], "consumed at %v, not in a receipt %v", s, want)
		case <-ctx.Done():
			t.Fatal("not all consumed")
		}
	}
}

type ktReceiptMsg struct {
	kavari.Message `kavari:"topic=kt-receipts,key=ID"`
	Run            string `json:"run"`
	ID             string `json:"id"`
}
