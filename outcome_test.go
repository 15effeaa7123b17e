package kavari_test

import (
	"context"
	"errors"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
)

type lateMsg struct {
	kavari.Message `kavari:"topic=kavari-test-late,key=ID"`
	Run            string `json:"run"`
	ID             string `json:"id"`
	Seq            int    `json:"seq"`
}

// TestHandlerTimeoutDoesNotFailAHandlerThatReturnedNil: a handler that sees
// its HandlerTimeout pass and still returns nil has processed the record; it
// is neither retried nor dead-lettered. The second record of the key runs only
// after the first is finished (retries and dead letter included), so by then
// the first record's handler count is final.
func TestHandlerTimeoutDoesNotFailAHandlerThatReturnedNil(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("run")
	reg := kavari.NewRegistry()
	var first, second atomic.Int64
	require.NoError(t, kavari.RegisterFuncOn(reg, &lateMsg{}, func(ctx context.Context, m *lateMsg) error {
		if m.Run != run {
			return nil
		}
		if m.Seq == 0 {
			first.Add(1)
			<-ctx.Done() // past the timeout, then success anyway
			return nil
		}
		second.Add(1)
		return nil
	}))
	k := newKavari(t, reg, brokers, func(c *kavari.Config) {
		c.Consume.HandlerTimeout = 50 * time.Millisecond
		c.Consume.Retry = kavari.ConstantRetry(time.Millisecond, 3)
	})
	ctx := context.Background()
	require.NoError(t, k.Start(ctx))
	_, err := k.Publish(ctx, &lateMsg{Run: run, ID: "x", Seq: 0})
	require.NoError(t, err)
	_, err = k.Publish(ctx, &lateMsg{Run: run, ID: "x", Seq: 1})
	require.NoError(t, err)
	eventually(t, 60*time.Second, func() bool { return second.Load() == 1 }, "the second record was not handled")
	assert.Equal(t, int64(1), first.Load(), "a handler that returned nil was run again")
}

type dupTypeA struct {
	kavari.Message `kavari:"topic=kavari-test-duptype,key=ID,name=dup.a"`
	Run            string `json:"run"`
	ID             string `json:"id"`
}

type dupTypeB struct {
	kavari.Message `kavari:"topic=kavari-test-duptype,key=ID,name=dup.b"`
	Run            string `json:"run"`
	ID             string `json:"id"`
}

// TestDuplicateMsgTypeRoutedAndReportedAlike: a record carrying two msg_type
// headers is routed on the first one, and RecordFromContext reports that same
// type (and the first ce_id), whichever order the headers come in.
func TestDuplicateMsgTypeRoutedAndReportedAlike(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("run")
	reg := kavari.NewRegistry()
	type seen struct{ routed, reported, id string }
	var mu sync.Mutex
	got := map[string]seen{}
	note := func(ctx context.Context, routed, id string) {
		rec, _ := kavari.RecordFromContext(ctx)
		mu.Lock()
		got[id] = seen{routed: routed, reported: rec.Type, id: rec.ID}
		mu.Unlock()
	}
	require.NoError(t, kavari.RegisterFuncOn(reg, &dupTypeA{}, func(ctx context.Context, m *dupTypeA) error {
		if m.Run == run {
			note(ctx, "dup.a", m.ID)
		}
		return nil
	}))
	require.NoError(t, kavari.RegisterFuncOn(reg, &dupTypeB{}, func(ctx context.Context, m *dupTypeB) error {
		if m.Run == run {
			note(ctx, "dup.b", m.ID)
		}
		return nil
	}))
	k := newKavari(t, reg, brokers)
	ctx := context.Background()
	require.NoError(t, k.Start(ctx))
	hs := func(a, b string) []kafka.Header {
		return []kafka.Header{
			{Key: kavari.HeaderMsgType, Value: []byte(a)}, {Key: kavari.HeaderID, Value: []byte("id-" + a)},
			{Key: kavari.HeaderMsgType, Value: []byte(b)}, {Key: kavari.HeaderID, Value: []byte("id-" + b)},
		}
	}
	writeRaw(t, brokers, "kavari-test-duptype",
		kafka.Message{Key: []byte("ab"), Value: []byte(`{"run":"` + run + `","id":"ab"}`), Headers: hs("dup.a", "dup.b")},
		kafka.Message{Key: []byte("ba"), Value: []byte(`{"run":"` + run + `","id":"ba"}`), Headers: hs("dup.b", "dup.a")},
	)
	eventually(t, 60*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 2 }, "records with two msg_type headers were not handled")
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, seen{routed: "dup.a", reported: "dup.a", id: "id-dup.a"}, got["ab"])
	assert.Equal(t, seen{routed: "dup.b", reported: "dup.b", id: "id-dup.b"}, got["ba"])
}

type backoffMsg struct {
	kavari.Message `kavari:"topic=kavari-test-backoff,key=ID"`
	Run            string `json:"run"`
	ID             string `json:"id"`
}

// TestRetryBackoffReleasesTheRunSlot: with MaxInFlight 1, a record waiting
// for its retry (a backoff far longer than the test) leaves the run slot to
// another key's record, which is handled during the wait.
func TestRetryBackoffReleasesTheRunSlot(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("run")
	reg := kavari.NewRegistry()
	var failing, other atomic.Int64
	require.NoError(t, kavari.RegisterFuncOn(reg, &backoffMsg{}, func(ctx context.Context, m *backoffMsg) error {
		if m.Run != run {
			return nil
		}
		if m.ID == "failing" {
			failing.Add(1)
			return errors.New("try again later")
		}
		other.Add(1)
		return nil
	}))
	k := newKavari(t, reg, brokers, func(c *kavari.Config) {
		c.Consume.MaxInFlight = 1
		c.Consume.Retry = kavari.ConstantRetry(time.Hour, 3)
	})
	ctx := context.Background()
	require.NoError(t, k.Start(ctx))
	_, err := k.Publish(ctx, &backoffMsg{Run: run, ID: "failing"})
	require.NoError(t, err)
	eventually(t, 60*time.Second, func() bool { return failing.Load() == 1 }, "the failing record was not handled")
	_, err = k.Publish(ctx, &backoffMsg{Run: run, ID: "other"})
	require.NoError(t, err)
	eventually(t, 60*time.Second, func() bool { return other.Load() == 1 }, "another key's record waited for the retry backoff")
	assert.Equal(t, int64(1), failing.Load())
	sctx, cancel := context.WithTimeout(ctx, 3*time.Second) // ends the hour-long wait
	defer cancel()
	_ = k.Stop(sctx)
}

type burstMsg struct {
	kavari.Message `kavari:"topic=kavari-test-burst,key=ID"`
	Run            string `json:"run"`
	ID             string `json:"id"`
}

// TestIdleConsumerKeepsFewGoroutines: workers start on demand (a burst of
// blocked keys needs many) and exit once idle, so a consumer with nothing to
// do does not keep MaxBuffered goroutines parked.
func TestIdleConsumerKeepsFewGoroutines(t *testing.T) {
	defer kavari.SetWorkerIdle(50 * time.Millisecond)()
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("run")
	reg := kavari.NewRegistry()
	const burst = 64
	var arrived atomic.Int64
	release := make(chan struct{})
	require.NoError(t, kavari.RegisterFuncOn(reg, &burstMsg{}, func(ctx context.Context, m *burstMsg) error {
		if m.Run != run {
			return nil
		}
		arrived.Add(1)
		<-release
		return nil
	}))
	k := newKavari(t, reg, brokers, func(c *kavari.Config) { c.Consume.MaxInFlight, c.Consume.MaxBuffered = burst, 1024 })
	base := runtime.NumGoroutine()
	ctx := context.Background()
	require.NoError(t, k.Start(ctx))
	msgs := make([]kavari.Msg, burst)
	for i := range msgs {
		msgs[i] = &burstMsg{Run: run, ID: strconv.Itoa(i)}
	}
	_, err := k.PublishBatch(ctx, msgs...)
	require.NoError(t, err)
	eventually(t, 60*time.Second, func() bool { return arrived.Load() == burst }, "only %d of %d handlers running at once", arrived.Load(), burst)
	busy := runtime.NumGoroutine()
	assert.GreaterOrEqual(t, busy-base, burst, "a worker per running handler")
	close(release)
	// Fetchers, the group and the embedded broker's connections remain (about
	// 40 goroutines); the workers go.
	eventually(t, 60*time.Second, func() bool { return runtime.NumGoroutine()-base < burst },
		"idle consumer keeps %d goroutines more than before Start (MaxBuffered 1024)", runtime.NumGoroutine()-base)
}
