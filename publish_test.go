package kavari_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/internal/testkit"
	"github.com/kavari-go/kavari/validate"
)

// ---- helpers shared by this package's kt- tests ----

// ktHangGuard bounds waits that should end long before it: it is a guard
// against hangs, never a performance assertion.
const ktHangGuard = 60 * time.Second

func ktLogger() *slog.Logger {
	if os.Getenv("KAVARI_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// ktNew builds a Client on reg, creates the registry's topics (and dead-letter
// topics) and stops it when the test ends.
func ktNew(t *testing.T, brokers []string, reg *kavari.Registry, mutate ...func(*kavari.Config)) *kavari.Client {
	t.Helper()
	if reg == nil {
		reg = kavari.NewRegistry()
	}
	cfg := kavari.Config{
		Brokers:           brokers,
		Registry:          reg,
		Logger:            ktLogger(),
		CloudEventsSource: "kt-tests",
		Publish: kavari.PublishConfig{
			Retry: kavari.FibonacciRetry(50*time.Millisecond, 10),
		},
		Consume: kavari.ConsumeConfig{
			GroupID:           testenv.ID("kt-g"),
			Retry:             kavari.FibonacciRetry(5*time.Millisecond, 3),
			CommitInterval:    200 * time.Millisecond,
			HeartbeatInterval: 500 * time.Millisecond,
			SessionTimeout:    10 * time.Second,
			DrainTimeout:      5 * time.Second,
		},
	}
	testkit.UseTransport(&cfg)
	for _, m := range mutate {
		m(&cfg)
	}
	k, err := kavari.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = k.Stop(ctx)
	})
	ctx, cancel := context.WithTimeout(context.Background(), ktHangGuard)
	defer cancel()
	require.NoError(t, k.EnsureTopics(ctx))
	return k
}

// ktRead returns every record of topic, all partitions, up to the high
// watermarks at the time of the call. Everything acknowledged before the call
// is in the result.
func ktRead(t *testing.T, brokers []string, topic string) []kafka.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ktHangGuard)
	defer cancel()
	client, done := ktClient(brokers)
	defer done()
	parts := ktPartitions(t, brokers, topic)
	var reqs []kafka.OffsetRequest
	for _, p := range parts {
		reqs = append(reqs, kafka.FirstOffsetOf(p), kafka.LastOffsetOf(p))
	}
	// Right after a topic is created the broker may still answer "not
	// leader" for a few milliseconds: ask again until it settles.
	var offs *kafka.ListOffsetsResponse
	for {
		var err error
		offs, err = client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
		require.NoError(t, err)
		settled := true
		for _, po := range offs.Topics[topic] {
			if errors.Is(po.Error, kafka.NotLeaderForPartition) || errors.Is(po.Error, kafka.LeaderNotAvailable) {
				settled = false
			}
		}
		if settled {
			break
		}
		require.NoError(t, ctx.Err(), "partition leaders of %s never settled", topic)
		time.Sleep(20 * time.Millisecond)
	}
	var out []kafka.Message
	for _, po := range offs.Topics[topic] {
		require.NoError(t, po.Error)
		if po.LastOffset <= po.FirstOffset {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{
			Brokers: brokers, Topic: topic, Partition: po.Partition,
			MaxWait: 50 * time.Millisecond, Logger: nil,
		})
		require.NoError(t, r.SetOffset(po.FirstOffset))
		for {
			m, err := r.ReadMessage(ctx)
			require.NoError(t, err, "reading %s/%d", topic, po.Partition)
			out = append(out, m)
			if m.Offset >= po.LastOffset-1 {
				break
			}
		}
		require.NoError(t, r.Close())
	}
	return out
}

// ktClient returns a kafka-go client with a transport of its own: kafka-go
// answers Metadata requests from its transport's cache, and the shared
// DefaultTransport may predate topics created since (by another client).
func ktClient(brokers []string) (*kafka.Client, func()) {
	tr := &kafka.Transport{}
	return &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 30 * time.Second, Transport: tr}, tr.CloseIdleConnections
}

// ktPartitions returns the partition ids of topic.
func ktPartitions(t *testing.T, brokers []string, topic string) []int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ktHangGuard)
	defer cancel()
	client, done := ktClient(brokers)
	defer done()
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	require.NoError(t, err)
	require.Len(t, md.Topics, 1)
	require.NoError(t, md.Topics[0].Error)
	var ids []int
	for _, p := range md.Topics[0].Partitions {
		ids = append(ids, p.ID)
	}
	return ids
}

// ktOfRun keeps the records whose JSON value has "run": run.
func ktOfRun(recs []kafka.Message, run string) []kafka.Message {
	var out []kafka.Message
	for _, r := range recs {
		var v struct {
			Run string `json:"run"`
		}
		if json.Unmarshal(r.Value, &v) == nil && v.Run == run {
			out = append(out, r)
		}
	}
	return out
}

// ktHeader returns the values of header key in rec.
func ktHeader(rec kafka.Message, key string) []string {
	var out []string
	for _, h := range rec.Headers {
		if h.Key == key {
			out = append(out, string(h.Value))
		}
	}
	return out
}

// ktWait polls cond until it holds, failing after the hang guard.
func ktWait(t *testing.T, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(ktHangGuard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf(format, args...)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ktAbsentBroker returns an address on which nothing listens.
func ktAbsentBroker(t *testing.T) []string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return []string{addr}
}

// ktJoined splits an errors.Join result.
func ktJoined(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	if err == nil {
		return nil
	}
	return []error{err}
}

// ---- publishing bad input ----

type ktPubLine struct {
	SKU string `json:"sku" validate:"required"`
	Qty int    `json:"qty" validate:"min=1"`
}

type ktPubOrder struct {
	kavari.Message `kavari:"topic=kt-publish,key=OrderID"`
	Run            string      `json:"run"`
	OrderID        string      `json:"order_id" validate:"required"`
	Amount         int64       `json:"amount" validate:"gt=0"`
	Email          string      `json:"email,omitempty" validate:"omitempty,email"`
	Lines          []ktPubLine `json:"lines,omitempty" validate:"dive"`
	Payload        string      `json:"payload,omitempty"`
}

type ktPubNoKey struct {
	kavari.Message `kavari:"topic=kt-publish,key=Ref"`
	Run            string `json:"run"`
	Ref            string `json:"ref"`
}

type ktPubFloatKey struct {
	kavari.Message `kavari:"topic=kt-publish,key=F"`
	Run            string  `json:"run"`
	F              float64 `json:"f"`
}

func TestPublishBadInput(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("run")
	reg := kavari.NewRegistry()
	require.NoError(t, reg.Declare(&ktPubOrder{}))
	k := ktNew(t, brokers, reg, func(c *kavari.Config) { c.Publish.MaxMessageBytes = 1000 })
	ctx := context.Background()

	t.Run("nil message", func(t *testing.T) {
		_, err := k.Publish(ctx, nil)
		require.ErrorIs(t, err, kavari.ErrNilMessage)
	})
	t.Run("nil pointer", func(t *testing.T) {
		_, err := k.Publish(ctx, (*ktPubOrder)(nil))
		require.ErrorIs(t, err, kavari.ErrNilMessage)
	})
	t.Run("empty key", func(t *testing.T) {
		_, err := k.Publish(ctx, &ktPubNoKey{Run: run})
		require.ErrorIs(t, err, kavari.ErrEmptyKey)
	})
	t.Run("key of unsupported type", func(t *testing.T) {
		_, err := k.Publish(ctx, &ktPubFloatKey{Run: run, F: 1.5})
		var te *kavari.TagError
		require.ErrorAs(t, err, &te)
		assert.Contains(t, te.Reason, "unsupported key type float64")
	})
	t.Run("several rules fail at once", func(t *testing.T) {
		_, err := k.Publish(ctx, &ktPubOrder{
			Run: run, Amount: -5, Email: "nope",
			Lines: []ktPubLine{{SKU: "a", Qty: 1}, {Qty: 0}},
		})
		require.ErrorIs(t, err, kavari.ErrInvalid)
		var verr *validate.Error
		require.ErrorAs(t, err, &verr)
		assert.Equal(t, "ktPubOrder", verr.Type)
		type field struct {
			Path, Rule string
			Value      any
		}
		var got []field
		for _, f := range verr.Fields {
			got = append(got, field{f.Path, f.Rule, f.Value})
		}
		assert.Equal(t, []field{
			{"order_id", "required", ""},
			{"amount", "gt", int64(-5)},
			{"email", "email", "nope"},
			{"lines[1].sku", "required", ""},
			{"lines[1].qty", "min", 0},
		}, got)
		var pe *kavari.PublishError
		assert.False(t, errors.As(err, &pe), "an invalid message is not a publish failure: nothing was tried")
	})
	t.Run("over MaxMessageBytes", func(t *testing.T) {
		_, err := k.Publish(ctx, &ktPubOrder{Run: run, OrderID: "big", Amount: 1, Payload: strings.Repeat("x", 2000)})
		require.ErrorIs(t, err, kavari.ErrTooLarge)
		assert.Contains(t, err.Error(), "MaxMessageBytes")
	})

	// Nothing of the above reached the topic: a valid message with the same
	// run, acknowledged afterwards, is the only one there.
	_, err := k.Publish(ctx, &ktPubOrder{Run: run, OrderID: "sentinel", Amount: 1})
	require.NoError(t, err)
	recs := ktOfRun(ktRead(t, brokers, "kt-publish"), run)
	require.Len(t, recs, 1)
	assert.Equal(t, "sentinel", string(recs[0].Key))
}

type ktPubUnregistered struct {
	kavari.Message `kavari:"topic=kt-publish-unreg,key=ID"`
	Run            string `json:"run"`
	ID             string `json:"id"`
}

// Publishing does not consult the registry: a valid message of a type that
// was never registered is published (only its tag is checked, on first use).
func TestPublishUnregisteredType(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("run")
	topics := kavari.NewRegistry()
	require.NoError(t, topics.Declare(&ktPubUnregistered{}))
	ktNew(t, brokers, topics) // creates the topic

	reg := kavari.NewRegistry()
	k := ktNew(t, brokers, reg)
	_, err := k.Publish(context.Background(), &ktPubUnregistered{Run: run, ID: "u-1"})
	require.NoError(t, err)
	assert.Empty(t, reg.Topics(), "publishing does not register the type")

	recs := ktOfRun(ktRead(t, brokers, "kt-publish-unreg"), run)
	require.Len(t, recs, 1)
	assert.Equal(t, []string{"ktPubUnregistered"}, ktHeader(recs[0], kavari.HeaderMsgType))
}

type ktPubClosed struct {
	kavari.Message `kavari:"topic=kt-publish-closed,key=ID"`
	Run            string `json:"run"`
	ID             string `json:"id"`
}

func TestPublishAfterStop(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("run")
	reg := kavari.NewRegistry()
	require.NoError(t, reg.Declare(&ktPubClosed{}))
	k := ktNew(t, brokers, reg)
	ctx := context.Background()
	_, err := k.Publish(ctx, &ktPubClosed{Run: run, ID: "before"})
	require.NoError(t, err)

	stopCtx, cancel := context.WithTimeout(ctx, ktHangGuard)
	defer cancel()
	require.NoError(t, k.Stop(stopCtx))
	require.NoError(t, k.Stop(stopCtx), "Stop is idempotent")

	_, err = k.Publish(ctx, &ktPubClosed{Run: run, ID: "after"})

	require.ErrorIs(t, err, kavari.ErrClosed)

	_, err = k.PublishBatch(ctx, &ktPubClosed{Run: run, ID: "after-1"}, &ktPubClosed{Run: run, ID: "after-2"})
	require.ErrorIs(t, err, kavari.ErrClosed)
	errs := ktJoined(err)
	require.Len(t, errs, 2)
	for i, e := range errs {
		var pe *kavari.PublishError
		require.ErrorAs(t, e, &pe)
		assert.Equal(t, i, pe.Index)
		assert.ErrorIs(t, e, kavari.ErrClosed)
	}

	var calls atomic.Int32
	var got error
	k.PublishAsync(context.Background(), &ktPubClosed{Run: run, ID: "after-async"}, func(r kavari.Receipt, err error) {
		calls.Add(1)
		got = err
	})
	require.Equal(t, int32(1), calls.Load(), "the callback ran before PublishAsync returned")
	require.ErrorIs(t, got, kavari.ErrClosed)

	require.ErrorIs(t, k.Start(ctx), kavari.ErrClosed)

	recs := ktOfRun(ktRead(t, brokers, "kt-publish-closed"), run)
	require.Len(t, recs, 1)
	assert.Equal(t, "before", string(recs[0].Key))
}

type ktPubCancel struct {
	kavari.Message `kavari:"topic=kt-publish-cancel,key=ID"`
	Run            string `json:"run"`
	ID             string `json:"id"`
	Seq            int    `json:"seq"`
}

func TestPublishCancelledContext(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("run")
	reg := kavari.NewRegistry()
	require.NoError(t, reg.Declare(&ktPubCancel{}))
	k := ktNew(t, brokers, reg)
	// Warm up: the writer knows the topic's partitions from now on.
	_, err := k.Publish(context.Background(), &ktPubCancel{Run: run, ID: "k", Seq: 0})
	require.NoError(t, err)

	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = k.Publish(cancelled, &ktPubCancel{Run: run, ID: "k", Seq: 1})
	require.ErrorIs(t, err, context.Canceled)
	var pe *kavari.PublishError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, "kt-publish-cancel", pe.Topic)
	assert.Equal(t, "k", pe.Key)
	assert.NotEmpty(t, pe.ID)

	expired, cancel2 := context.WithDeadline(context.Background(), time.Unix(0, 0))
	defer cancel2()
	_, err = k.Publish(expired, &ktPubCancel{Run: run, ID: "k", Seq: 2})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorAs(t, err, &pe)

	_, err = k.PublishBatch(cancelled, &ktPubCancel{Run: run, ID: "k", Seq: 3}, &ktPubCancel{Run: run, ID: "k", Seq: 4})
	require.ErrorIs(t, err, context.Canceled)

	for i := 0; i < 20; i++ { // the outcome is a race inside the writer: try it often
		_, err := k.Publish(cancelled, &ktPubCancel{Run: run, ID: "k", Seq: 10 + i})
		require.ErrorIs(t, err, context.Canceled)
	}

	// Same key, so the same partition: anything the cancelled calls handed to
	// the writer is written before this acknowledged message.
	_, err = k.Publish(context.Background(), &ktPubCancel{Run: run, ID: "k", Seq: 100})
	require.NoError(t, err)
	var seqs []int
	for _, r := range ktOfRun(ktRead(t, brokers, "kt-publish-cancel"), run) {
		var v ktPubCancel
		require.NoError(t, json.Unmarshal(r.Value, &v))
		seqs = append(seqs, v.Seq)
	}
	if len(seqs) != 2 {
		t.Fatalf("regression: publish.go publisher.write: a context cancelled before Publish/PublishBatch is called still hands the record to kafka-go's Writer, which sends it; seqs on the topic: %v (want [0 100])", seqs)
	}
	assert.Equal(t, []int{0, 100}, seqs, "a context that ended before the call sends nothing")
}

type ktPubAbsent struct {
	kavari.Message `kavari:"topic=kt-publish-absent,key=ID"`
	ID             string `json:"id"`
}

func TestPublishBrokerAbsent(t *testing.T) {
	k := ktNew(t, ktAbsentBroker(t), nil, func(c *kavari.Config) {
		c.Publish.Retry = kavari.FibonacciRetry(10*time.Millisecond, 4)
	})
	done := make(chan error, 1)
	go func() {
		_, err := k.Publish(context.Background(), &ktPubAbsent{ID: "a-1"})
		done <- err
	}()
	var err error
	select {
	case err = <-done:
	case <-time.After(ktHangGuard):
		t.Fatal("Publish to an absent broker did not return (hang guard)")
	}
	require.Error(t, err)
	var pe *kavari.PublishError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, "kt-publish-absent", pe.Topic)
	assert.Equal(t, "a-1", pe.Key)
	assert.False(t, pe.MayHaveBeenWritten, "no connection was ever made")
	var re *kavari.RetryError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, 4, re.Attempts, "every attempt of the policy was made")
	assert.Nil(t, re.Cause, "attempts ran out; the context did not end")
	var ne net.Error
	var oe *net.OpError
	assert.True(t, errors.As(err, &ne) || errors.As(err, &oe), "the network failure is visible: %v", err)
}

// ---- PublishBatch ----

type ktBatchMsg struct {
	kavari.Message `kavari:"topic=kt-publish-batch,key=ID"`
	Run            string `json:"run"`
	ID             string `json:"id" validate:"required"`
	Seq            int    `json:"seq" validate:"gte=0"`
}

func TestPublishBatch(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("run")
	reg := kavari.NewRegistry()
	require.NoError(t, reg.Declare(&ktBatchMsg{}))
	k := ktNew(t, brokers, reg)
	ctx := context.Background()

	t.Run("empty", func(t *testing.T) {
		_, err := k.PublishBatch(ctx)
		require.NoError(t, err)
	})
	t.Run("invalid messages: none is sent, each error has its index", func(t *testing.T) {
		_, err := k.PublishBatch(ctx,
			&ktBatchMsg{Run: run, ID: "bad-0", Seq: 0},
			&ktBatchMsg{Run: run, Seq: 1}, // no ID
			&ktBatchMsg{Run: run, ID: "bad-2", Seq: 2},
			nil,
			&ktBatchMsg{Run: run, ID: "bad-4", Seq: -1},
		)
		require.Error(t, err)
		require.ErrorIs(t, err, kavari.ErrInvalid)
		errs := ktJoined(err)
		require.Len(t, errs, 5, "one error per message, sent or not: %v", err)
		byIndex := map[int]error{}
		for _, e := range errs {
			var pe *kavari.PublishError
			require.ErrorAs(t, e, &pe)
			byIndex[pe.Index] = e
		}
		require.Len(t, byIndex, 5)
		assert.ErrorIs(t, byIndex[1], kavari.ErrInvalid)
		assert.ErrorIs(t, byIndex[3], kavari.ErrNilMessage)
		assert.ErrorIs(t, byIndex[4], kavari.ErrInvalid)
		var verr *validate.Error
		require.ErrorAs(t, byIndex[4], &verr)
		require.Len(t, verr.Fields, 1)
		assert.Equal(t, "seq", verr.Fields[0].Path)
		for _, i := range []int{0, 2} {
			assert.NotErrorIs(t, byIndex[i], kavari.ErrInvalid, "message %d was valid", i)
			assert.Contains(t, byIndex[i].Error(), "not sent")
		}
	})
	t.Run("valid messages", func(t *testing.T) {
		var msgs []kavari.Msg
		for i := 0; i < 20; i++ {
			msgs = append(msgs, &ktBatchMsg{Run: run, ID: fmt.Sprintf("ok-%d", i%5), Seq: 100 + i})
		}
		_, err := k.PublishBatch(ctx, msgs...)
		require.NoError(t, err)
	})

	recs := ktOfRun(ktRead(t, brokers, "kt-publish-batch"), run)
	seen := map[int]bool{}
	for _, r := range recs {
		var v ktBatchMsg
		require.NoError(t, json.Unmarshal(r.Value, &v))
		assert.GreaterOrEqual(t, v.Seq, 100, "a message of the invalid batch was sent: %s", r.Value)
		assert.False(t, seen[v.Seq], "seq %d twice", v.Seq)
		seen[v.Seq] = true
		assert.Equal(t, v.ID, string(r.Key))
	}
	assert.Len(t, seen, 20)
}

// ---- PublishAsync ----

type ktAsyncMsg struct {
	kavari.Message `kavari:"topic=kt-publish-async,key=ID"`
	Run            string `json:"run"`
	ID             string `json:"id" validate:"required"`
	Seq            int    `json:"seq"`
}

func TestPublishAsyncCallbackOncePerMessage(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("run")
	reg := kavari.NewRegistry()
	require.NoError(t, reg.Declare(&ktAsyncMsg{}))
	k := ktNew(t, brokers, reg, func(c *kavari.Config) { c.Publish.AsyncQueue = 64 })

	const n = 5000
	calls := make([]atomic.Int32, n)
	var total, failed atomic.Int32
	var firstErr atomic.Value
	for i := 0; i < n; i++ {
		k.PublishAsync(context.Background(), &ktAsyncMsg{Run: run, ID: fmt.Sprintf("k-%d", i%37), Seq: i}, func(r kavari.Receipt, err error) {
			seq := r.Message.(*ktAsyncMsg).Seq
			calls[seq].Add(1)
			total.Add(1)
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err)
			}
		})
	}
	// Stop flushes what is still queued: every callback has run when it returns.
	ctx, cancel := context.WithTimeout(context.Background(), ktHangGuard)
	defer cancel()
	require.NoError(t, k.Stop(ctx))
	require.Equal(t, int32(n), total.Load(), "one callback per message by the time Stop returns")
	require.Zero(t, failed.Load(), "first error: %v", firstErr.Load())
	for i := range calls {
		require.Equal(t, int32(1), calls[i].Load(), "message %d", i)
	}

	recs := ktOfRun(ktRead(t, brokers, "kt-publish-async"), run)
	seen := make(map[int]bool, n)
	for _, r := range recs {
		var v ktAsyncMsg
		require.NoError(t, json.Unmarshal(r.Value, &v))
		require.False(t, seen[v.Seq], "seq %d written twice", v.Seq)
		seen[v.Seq] = true
	}
	require.Len(t, seen, n, "every message is in the topic")
}

func TestPublishAsyncInvalidAndPanickingCallbacks(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("run")
	reg := kavari.NewRegistry()
	require.NoError(t, reg.Declare(&ktAsyncMsg{}))
	k := ktNew(t, brokers, reg)

	var calls atomic.Int32
	var got error
	k.PublishAsync(context.Background(), &ktAsyncMsg{Run: run}, func(r kavari.Receipt, err error) { calls.Add(1); got = err })
	require.Equal(t, int32(1), calls.Load(), "an invalid message gets its callback before PublishAsync returns")
	require.ErrorIs(t, got, kavari.ErrInvalid)

	k.PublishAsync(context.Background(), nil, func(r kavari.Receipt, err error) { calls.Add(1); got = err })
	require.Equal(t, int32(2), calls.Load())
	require.ErrorIs(t, got, kavari.ErrNilMessage)

	// A nil callback and a panicking callback break nothing.
	k.PublishAsync(context.Background(), &ktAsyncMsg{Run: run, ID: "nil-cb", Seq: 1}, nil)
	k.PublishAsync(context.Background(), &ktAsyncMsg{Run: run, ID: "panic-cb", Seq: 2}, func(kavari.Receipt, error) { panic("kt: callback panics") })
	k.PublishAsync(context.Background(), nil, nil)
	done := make(chan error, 1)
	k.PublishAsync(context.Background(), &ktAsyncMsg{Run: run, ID: "after", Seq: 3}, func(r kavari.Receipt, err error) { done <- err })
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(ktHangGuard):
		t.Fatal("callback never ran (hang guard)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), ktHangGuard)
	defer cancel()
	require.NoError(t, k.Stop(ctx))
	assert.Len(t, ktOfRun(ktRead(t, brokers, "kt-publish-async"), run), 3)
}

type ktAsyncAbsent struct {
	kavari.Message `kavari:"topic=kt-publish-async-absent,key=ID"`
	ID             string `json:"id"`
	Seq            int    `json:"seq"`
}

// With one worker taking one message at a time and a queue of one, at most
// two messages are accepted while the broker is away; the third PublishAsync
// call returns only once the first message is finished (its retries ran out
// and its callback ran). The proof is an order of events, not a duration.
func TestPublishAsyncBackpressure(t *testing.T) {
	k := ktNew(t, ktAbsentBroker(t), nil, func(c *kavari.Config) {
		c.Publish.AsyncQueue = 1
		c.Publish.AsyncWorkers = 1
		c.Publish.BatchSize = 1
		c.Publish.Retry = kavari.FibonacciRetry(10*time.Millisecond, 4)
	})
	const n = 4
	var done [n]atomic.Bool
	var errs [n]atomic.Value
	var returnedAfter [n][n]bool // returnedAfter[i][j]: callback j had run when PublishAsync(i) returned
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for i := 0; i < n; i++ {
			k.PublishAsync(context.Background(), &ktAsyncAbsent{ID: "k", Seq: i}, func(r kavari.Receipt, err error) {
				seq := r.Message.(*ktAsyncAbsent).Seq
				errs[seq].Store(err)
				assert.False(t, done[seq].Swap(true), "callback %d ran twice", seq)
			})
			for j := 0; j < n; j++ {
				returnedAfter[i][j] = done[j].Load()
			}
		}
	}()
	select {
	case <-finished:
	case <-time.After(ktHangGuard):
		t.Fatal("PublishAsync never returned (hang guard)")
	}
	assert.True(t, returnedAfter[2][0], "PublishAsync #2 returned before message #0 was finished: the queue did not apply backpressure")
	assert.True(t, returnedAfter[3][1], "PublishAsync #3 returned before message #1 was finished")

	ctx, cancel := context.WithTimeout(context.Background(), ktHangGuard)
	defer cancel()
	require.NoError(t, k.Stop(ctx))
	for i := 0; i < n; i++ {
		require.True(t, done[i].Load(), "callback %d ran by the time Stop returned", i)
		err, _ := errs[i].Load().(error)
		var pe *kavari.PublishError
		require.ErrorAs(t, err, &pe, "message %d", i)
		var re *kavari.RetryError
		require.ErrorAs(t, err, &re, "message %d", i)
	}
}

// Stop(ctx) must return by ctx's deadline even when the broker is gone and a
// PublishAsync call is blocked on a full queue; every callback still runs once.
func TestPublishAsyncStopWhileBlocked(t *testing.T) {
	k, err := kavari.New(kavari.Config{
		Brokers:  ktAbsentBroker(t),
		Registry: kavari.NewRegistry(),
		Logger:   ktLogger(),
		Publish: kavari.PublishConfig{
			AsyncQueue:   1,
			AsyncWorkers: 1,
			BatchSize:    1,
			Retry:        kavari.RetryPolicy{BaseDelay: 10 * time.Millisecond, MaxDelay: 20 * time.Millisecond, MaxAttempts: -1},
		},
	})
	require.NoError(t, err)
	// No Stop in a cleanup: a Stop that hangs must not hang the test binary.
	const n = 3
	var calls [n]atomic.Int32
	var stopCalled atomic.Bool
	var returnedBeforeStop atomic.Bool
	blocked := make(chan struct{})
	go func() {
		defer close(blocked)
		for i := 0; i < n; i++ {
			k.PublishAsync(context.Background(), &ktAsyncAbsent{ID: "k", Seq: i}, func(r kavari.Receipt, err error) {
				calls[r.Message.(*ktAsyncAbsent).Seq].Add(1)
			})
		}
		// Message 0 is retried forever and message 1 fills the queue, so the
		// third call can only return once Stop ends the retries.
		returnedBeforeStop.Store(!stopCalled.Load())
	}()
	time.Sleep(100 * time.Millisecond) // gives a broken queue the chance to let call #3 through (never a false failure)
	stopCalled.Store(true)
	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		stopped <- k.Stop(ctx)
	}()
	select {
	case err := <-stopped:
		require.Error(t, err, "the queue could not be flushed")
	case <-time.After(ktHangGuard):
		t.Fatal("Stop ignored its context (hang guard)")
	}
	select {
	case <-blocked:
	case <-time.After(ktHangGuard):
		t.Fatal("PublishAsync stayed blocked after Stop (hang guard)")
	}
	assert.False(t, returnedBeforeStop.Load(), "the third PublishAsync returned before Stop")
	ktWait(t, func() bool {
		for i := range calls {
			if calls[i].Load() == 0 {
				return false
			}
		}
		return true
	}, "not every callback ran")
	for i := range calls {
		assert.Equal(t, int32(1), calls[i].Load(), "callback %d", i)
	}
}

// ---- EnsureTopics ----

type ktEnsureA struct {
	kavari.Message `kavari:"topic=kt-ensure-a"`
}

type ktEnsureB struct {
	kavari.Message `kavari:"topic=kt-ensure-b"`
}

func TestEnsureTopics(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	reg := kavari.NewRegistry()
	require.NoError(t, reg.Declare(&ktEnsureA{}))
	require.NoError(t, kavari.RegisterFuncOn(reg, &ktEnsureB{}, func(context.Context, *ktEnsureB) error { return nil }))
	k := ktNew(t, brokers, reg, func(c *kavari.Config) {
		c.Topics.Partitions = 5
		c.Topics.DeadLetterSuffix = ".dead"
	})
	ctx, cancel := context.WithTimeout(context.Background(), ktHangGuard)
	defer cancel()
	require.NoError(t, k.EnsureTopics(ctx), "existing topics are left as they are")

	names := []string{"kt-ensure-a", "kt-ensure-a.dead", "kt-ensure-b", "kt-ensure-b.dead"}
	client, closeClient := ktClient(brokers)
	defer closeClient()
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: names})
	require.NoError(t, err)
	got := map[string]int{}
	for _, tp := range md.Topics {
		require.NoError(t, tp.Error, tp.Name)
		got[tp.Name] = len(tp.Partitions)
	}
	assert.Equal(t, map[string]int{"kt-ensure-a": 5, "kt-ensure-a.dead": 5, "kt-ensure-b": 5, "kt-ensure-b.dead": 5}, got)
}

func TestEnsureTopicsNothingRegistered(t *testing.T) {
	k, err := kavari.New(kavari.Config{Brokers: ktAbsentBroker(t), Registry: kavari.NewRegistry(), Logger: ktLogger()})
	require.NoError(t, err)
	defer func() { _ = k.Stop(context.Background()) }()
	require.NoError(t, k.EnsureTopics(context.Background()), "no topic, no request")
}

// ---- partitioning ----

// javaMurmur2 is Kafka's Utils.murmur2, written from the Java source with
// Java's int arithmetic, independently of kafka-go's port.
func javaMurmur2(data []byte) int32 {
	const (
		seed = int32(-1756908916) // 0x9747b28c
		m    = int32(0x5bd1e995)
		r    = 24
	)
	length := len(data)
	h := seed ^ int32(length)
	for i := 0; i+4 <= length; i += 4 {
		k := int32(data[i]) | int32(data[i+1])<<8 | int32(data[i+2])<<16 | int32(data[i+3])<<24
		k *= m
		k ^= int32(uint32(k) >> r) // Java's >>>
		k *= m
		h *= m
		h ^= k
	}
	tail := length &^ 3
	switch length % 4 {
	case 3:
		h ^= int32(data[tail+2]) << 16
		fallthrough
	case 2:
		h ^= int32(data[tail+1]) << 8
		fallthrough
	case 1:
		h ^= int32(data[tail])
		h *= m
	}
	h ^= int32(uint32(h) >> 13)
	h *= m
	h ^= int32(uint32(h) >> 15)
	return h
}

// javaPartition is the Java default partitioner's choice for a keyed record:
// Utils.toPositive(Utils.murmur2(key)) % numPartitions.
func javaPartition(key []byte, n int) int {
	return int(javaMurmur2(key)&0x7fffffff) % n
}

func TestJavaMurmur2Vectors(t *testing.T) {
	// Kafka's UtilsTest.testMurmur2.
	for key, want := range map[string]int32{
		"21":                         -973932308,
		"foobar":                     -790332482,
		"a-little-bit-long-string":   -985981536,
		"a-little-bit-longer-string": -1486304829,
		"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
		"abc": 479470107,
	} {
		assert.Equal(t, want, javaMurmur2([]byte(key)), key)
	}
	// librdkafka's rdmurmur2.c unit test (Java-compatible results).
	for key, want := range map[string]uint32{
		"kafka": 0xd067cf64, "giberish123456789": 0x8f552b0c, "1234": 0x9fc97b14,
		"234": 0xe7c009ca, "34": 0x873930da, "4": 0x5a4b5ca1, "": 0x106e08d9,
		"PreAmbleWillBeRemoved,ThePrePartThatIs": 0x78424f1c,
		"AmbleWillBeRemoved,ThePrePartThatIs":    0x62b8b43f,
	} {
		assert.Equal(t, want, uint32(javaMurmur2([]byte(key))), key)
	}
	// kafka-python's Murmur2Partitioner over 1000 partitions.
	for key, want := range map[string]int{"": 681, "a": 524, "ab": 434, "abc": 107, "123456789": 566, "\x00 ": 742} {
		assert.Equal(t, want, javaPartition([]byte(key), 1000), "%q", key)
	}
}

func TestCRC32Vector(t *testing.T) {
	assert.Equal(t, uint32(0xcbf43926), crc32.ChecksumIEEE([]byte("123456789")), "the CRC-32/IEEE check value")
}

type ktPartMurmur struct {
	kavari.Message `kavari:"topic=kt-part-murmur,key=Key"`
	Run            string `json:"run"`
	Key            string `json:"key"`
	Seq            int    `json:"seq"`
}

type ktPartCRC struct {
	kavari.Message `kavari:"topic=kt-part-crc32,key=Key"`
	Run            string `json:"run"`
	Key            string `json:"key"`
	Seq            int    `json:"seq"`
}

// ktPartitionKeys are the keys of the partitioning tests: the published
// vectors and enough others to reach every one of 12 partitions.
func ktPartitionKeys() []string {
	keys := []string{"21", "foobar", "a-little-bit-long-string", "a-little-bit-longer-string",
		"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", "abc", "kafka", "giberish123456789",
		"1234", "234", "34", "4", "a", "ab", "123456789", "order-42", "ünïcødé-kéy"}
	for i := 0; i < 100; i++ {
		keys = append(keys, fmt.Sprintf("key-%d", i))
	}
	return keys
}

func TestPartitionMurmur2MatchesJava(t *testing.T) {
	testPartitioning(t, "kt-part-murmur", nil, func(run, key string, seq int) kavari.Msg {
		return &ktPartMurmur{Run: run, Key: key, Seq: seq}
	}, javaPartition)
}

func TestPartitionCRC32MatchesLibrdkafka(t *testing.T) {
	testPartitioning(t, "kt-part-crc32", func(c *kavari.Config) { c.Publish.Partitioner = kavari.CRC32 },
		func(run, key string, seq int) kavari.Msg { return &ktPartCRC{Run: run, Key: key, Seq: seq} },
		func(key []byte, n int) int { return int(crc32.ChecksumIEEE(key) % uint32(n)) })
}

func testPartitioning(t *testing.T, topic string, mutate func(*kavari.Config), newMsg func(run, key string, seq int) kavari.Msg, want func([]byte, int) int) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("run")
	reg := kavari.NewRegistry()
	require.NoError(t, reg.Declare(newMsg("", "x", 0)))
	k := ktNew(t, brokers, reg, func(c *kavari.Config) {
		c.Topics.Partitions = 12
		if mutate != nil {
			mutate(c)
		}
	})
	n := len(ktPartitions(t, brokers, topic))
	require.Equal(t, 12, n, "topic %s has 12 partitions", topic)

	keys := ktPartitionKeys()
	var msgs []kavari.Msg
	for rep := 0; rep < 3; rep++ { // each key three times: same key, same partition
		for i, key := range keys {
			msgs = append(msgs, newMsg(run, key, rep*len(keys)+i))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), ktHangGuard)
	defer cancel()
	_, err := k.PublishBatch(ctx, msgs[:len(keys)]...)
	require.NoError(t, err)
	for _, m := range msgs[len(keys):] {
		_, err := k.Publish(ctx, m)
		require.NoError(t, err)
	}

	recs := ktOfRun(ktRead(t, brokers, topic), run)
	require.Len(t, recs, len(msgs))
	partitionOf := map[string]int{}
	used := map[int]bool{}
	for _, r := range recs {
		key := string(r.Key)
		if p, ok := partitionOf[key]; ok {
			require.Equal(t, p, r.Partition, "key %q on two partitions", key)
		}
		partitionOf[key] = r.Partition
		used[r.Partition] = true
		require.Equal(t, want(r.Key, n), r.Partition, "key %q", key)
	}
	require.Len(t, partitionOf, len(keys))
	assert.Len(t, used, n, "the keys reach every partition")
}

// Keyless messages are spread (no key, no partition affinity) and have a nil
// key on the wire.
type ktPartNoKey struct {
	kavari.Message `kavari:"topic=kt-part-nokey"`
	Run            string `json:"run"`
	Seq            int    `json:"seq"`
}

func TestPublishNoKey(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("run")
	reg := kavari.NewRegistry()
	require.NoError(t, reg.Declare(&ktPartNoKey{}))
	k := ktNew(t, brokers, reg)
	var msgs []kavari.Msg
	for i := 0; i < 30; i++ {
		msgs = append(msgs, &ktPartNoKey{Run: run, Seq: i})
	}
	_, err := k.PublishBatch(context.Background(), msgs...)
	require.NoError(t, err)
	recs := ktOfRun(ktRead(t, brokers, "kt-part-nokey"), run)
	require.Len(t, recs, 30)
	for _, r := range recs {
		assert.Nil(t, r.Key)
	}
}

// Publish is safe for concurrent use.
func TestPublishConcurrent(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("run")
	reg := kavari.NewRegistry()
	require.NoError(t, reg.Declare(&ktBatchMsg{}))
	k := ktNew(t, brokers, reg)
	var wg sync.WaitGroup
	const goroutines, each = 8, 25
	errs := make(chan error, goroutines*each)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				_, err := k.Publish(context.Background(), &ktBatchMsg{Run: run, ID: fmt.Sprintf("g%d", g), Seq: g*each + i})
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	recs := ktOfRun(ktRead(t, brokers, "kt-publish-batch"), run)
	require.Len(t, recs, goroutines*each)
}

type ktStopMsg struct {
	kavari.Message `kavari:"topic=kt-publish-stop,key=ID"`
	Run            string `json:"run"`
	ID             string `json:"id"`
}

// A second Stop while the first one is still flushing returns when its own
// context ends ("later calls wait for the first", but not past their ctx).
func TestStopConcurrentHonoursItsContext(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("run")
	reg := kavari.NewRegistry()
	require.NoError(t, reg.Declare(&ktStopMsg{}))
	k := ktNew(t, brokers, reg)
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	defer unblock()
	entered := make(chan struct{})
	k.PublishAsync(context.Background(), &ktStopMsg{Run: run, ID: "held"}, func(kavari.Receipt, error) {
		close(entered)
		<-release // holds the flush, so the first Stop cannot finish
	})
	<-entered

	first := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), ktHangGuard)
		defer cancel()
		first <- k.Stop(ctx)
	}()
	// The first Stop has begun once the publisher refuses new messages.
	ktWait(t, func() bool {
		_, err := k.Publish(context.Background(), &ktStopMsg{Run: run, ID: "probe"})
		return errors.Is(err, kavari.ErrClosed)
	}, "Stop never closed the publisher")

	second := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		second <- k.Stop(ctx)
	}()
	select {
	case err := <-second:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(10 * time.Second):
		unblock()
		t.Fatal("the second Stop waited for the first instead of returning when its context ended")
	}
	unblock()
	require.NoError(t, <-first)
}

// TryPublishAsync never waits: a full queue is ErrQueueFull; an invalid
// message or a closed Client is an error too; an error means no callback.
func TestTryPublishAsync(t *testing.T) {
	k, err := kavari.New(kavari.Config{
		Brokers:  ktAbsentBroker(t),
		Registry: kavari.NewRegistry(),
		Logger:   ktLogger(),
		Publish: kavari.PublishConfig{
			AsyncQueue:   1,
			AsyncWorkers: 1,
			BatchSize:    1,
			Retry:        kavari.RetryPolicy{BaseDelay: 10 * time.Millisecond, MaxDelay: 20 * time.Millisecond, MaxAttempts: -1},
		},
	})
	require.NoError(t, err)
	var calls sync.Map // seq -> *atomic.Int32
	cb := func(r kavari.Receipt, err error) {
		v, _ := calls.LoadOrStore(r.Message.(*ktAsyncAbsent).Seq, new(atomic.Int32))
		v.(*atomic.Int32).Add(1)
	}
	accepted := 0
	deadline := time.Now().Add(ktHangGuard)
	for {
		err := k.TryPublishAsync(context.Background(), &ktAsyncAbsent{ID: "k", Seq: accepted}, cb)
		if errors.Is(err, kavari.ErrQueueFull) {
			break
		}
		require.NoError(t, err)
		accepted++
		require.LessOrEqual(t, accepted, 2, "one message being written and one queued fill the queue")
		if time.Now().After(deadline) {
			t.Fatal("the queue never filled (hang guard)")
		}
	}
	require.ErrorIs(t, k.TryPublishAsync(context.Background(), &ktAsyncAbsent{Seq: 100}, cb), kavari.ErrEmptyKey)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	require.Error(t, k.Stop(ctx), "the queue could not be flushed")
	require.ErrorIs(t, k.TryPublishAsync(context.Background(), &ktAsyncAbsent{ID: "k", Seq: 101}, cb), kavari.ErrClosed)
	ktWait(t, func() bool {
		n := 0
		calls.Range(func(any, any) bool { n++; return true })
		return n == accepted
	}, "every accepted message gets its callback")
	calls.Range(func(k, v any) bool {
		assert.Less(t, k.(int), accepted, "callback for a refused message")
		assert.Equal(t, int32(1), v.(*atomic.Int32).Load(), "message %d", k)
		return true
	})
}

type ktAsyncReply struct {
	kavari.Message `kavari:"topic=kt-publish-async-reply,key=ID"`
	Run            string `json:"run"`
	ID             string `json:"id"`
	Reply          bool   `json:"reply"`
}

// Callbacks that publish again (here: each acknowledged message publishes a
// reply with the same key) while the application keeps the one-slot queue
// full must not deadlock the writer.
func TestPublishAsyncCallbacksRepublish(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("run")
	reg := kavari.NewRegistry()
	require.NoError(t, reg.Declare(&ktAsyncReply{}))
	k := ktNew(t, brokers, reg, func(c *kavari.Config) {
		c.Publish.AsyncQueue, c.Publish.AsyncWorkers, c.Publish.BatchSize = 1, 1, 1
	})
	const n = 200
	var replies, failures atomic.Int32
	var cb func(r kavari.Receipt, err error)
	cb = func(r kavari.Receipt, err error) {
		if err != nil {
			failures.Add(1)
		}
		msg := r.Message.(*ktAsyncReply)
		if msg.Reply {
			replies.Add(1)
			return
		}
		k.PublishAsync(context.Background(), &ktAsyncReply{Run: run, ID: msg.ID, Reply: true}, cb)
	}
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for i := 0; i < n; i++ {
			k.PublishAsync(context.Background(), &ktAsyncReply{Run: run, ID: fmt.Sprintf("k-%d", i%7)}, cb)
		}
	}()
	select {
	case <-sent:
	case <-time.After(ktHangGuard):
		t.Fatal("PublishAsync blocked for good: a callback publishing again deadlocked the writer (hang guard)")
	}
	ktWait(t, func() bool { return replies.Load() == n }, "not every reply was published")
	assert.Zero(t, failures.Load())
}
