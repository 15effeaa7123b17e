package kavari_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
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
	"github.com/kavari-go/kavari/internal/testkit"
)

type ordMsg struct {
	kavari.Message `kavari:"topic=kavari-test-order,key=Key"`
	Run            string `json:"run"`
	Key            string `json:"key"`
	Seq            int    `json:"seq"`
}

// TestPerKeyOrderUnderConcurrency publishes interleaved sequences for many keys
// and checks that each key's messages are handled strictly in order, never two
// at once, while different keys run in parallel.
func TestPerKeyOrderUnderConcurrency(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("run")
	reg := kavari.NewRegistry()
	const keys, per = 40, 50
	var mu sync.Mutex
	last := map[string]int{}
	busy := map[string]bool{}
	var violations, handled, maxParallel, parallel atomic.Int64
	require.NoError(t, kavari.RegisterFuncOn(reg, &ordMsg{}, func(ctx context.Context, m *ordMsg) error {
		if m.Run != run {
			return nil
		}
		mu.Lock()
		if busy[m.Key] {
			violations.Add(1)
		}
		busy[m.Key] = true
		if prev, ok := last[m.Key]; (ok && m.Seq != prev+1) || (!ok && m.Seq != 0) {
			violations.Add(1)
		}
		last[m.Key] = m.Seq
		mu.Unlock()
		n := parallel.Add(1)
		for {
			old := maxParallel.Load()
			if n <= old || maxParallel.CompareAndSwap(old, n) {
				break
			}
		}
		time.Sleep(time.Duration(rand.IntN(1000)) * time.Microsecond)
		parallel.Add(-1)
		mu.Lock()
		busy[m.Key] = false
		mu.Unlock()
		handled.Add(1)
		return nil
	}))
	k := newKavari(t, reg, brokers, func(c *kavari.Config) { c.Consume.MaxInFlight = 32; c.Topics.Partitions = 4 })
	ctx := context.Background()
	require.NoError(t, k.Start(ctx))
	var batch []kavari.Msg
	for s := 0; s < per; s++ {
		for i := 0; i < keys; i++ {
			batch = append(batch, &ordMsg{Run: run, Key: "k" + strconv.Itoa(i), Seq: s})
		}
	}
	_, err := k.PublishBatch(ctx, batch...)
	require.NoError(t, err)
	eventually(t, 90*time.Second, func() bool { return handled.Load() == keys*per }, "handled %d of %d", handled.Load(), keys*per)
	assert.Zero(t, violations.Load(), "per-key order violations")
	assert.Greater(t, maxParallel.Load(), int64(1), "different keys ran in parallel")
	assert.LessOrEqual(t, maxParallel.Load(), int64(32), "MaxInFlight bounds concurrency")
}

type failMsg struct {
	kavari.Message `kavari:"topic=kavari-test-fail,key=ID"`
	Run            string `json:"run"`
	ID             string `json:"id"`
	Mode           string `json:"mode"` // ok, flaky, error, panic, permanent
}

// TestHandlerFailuresRetryThenDeadLetter covers the failure ladder: a flaky
// handler succeeds on retry; an always-failing, a panicking and a
// Permanent-failing handler are dead-lettered with the right headers, and the
// consumer keeps going.
func TestHandlerFailuresRetryThenDeadLetter(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("run")
	reg := kavari.NewRegistry()
	var mu sync.Mutex
	attempts := map[string]int{}
	okDone := make(chan struct{}, 10)
	require.NoError(t, kavari.RegisterFuncOn(reg, &failMsg{}, func(ctx context.Context, m *failMsg) error {
		if m.Run != run {
			return nil
		}
		rec, _ := kavari.RecordFromContext(ctx)
		mu.Lock()
		attempts[m.ID]++
		n := attempts[m.ID]
		mu.Unlock()
		if rec.Attempt != n {
			return kavari.Permanent(fmt.Errorf("Record.Attempt %d, want %d", rec.Attempt, n))
		}
		switch m.Mode {
		case "flaky":
			if n < 3 {
				return errors.New("flaky")
			}
		case "error":
			return errors.New("always fails")
		case "panic":
			panic("boom")
		case "permanent":
			return kavari.Permanent(errors.New("bad business data"))
		}
		okDone <- struct{}{}
		return nil
	}))
	k := newKavari(t, reg, brokers, func(c *kavari.Config) { c.Consume.Retry = kavari.FibonacciRetry(time.Millisecond, 4) })
	ctx := context.Background()
	require.NoError(t, k.Start(ctx))
	for _, mode := range []string{"error", "panic", "permanent", "flaky", "ok"} {
		_, err := k.Publish(ctx, &failMsg{Run: run, ID: mode, Mode: mode})
		require.NoError(t, err)
	}
	dl := readTopic(t, brokers, "kavari-test-fail.dlq", 3, func(m kafka.Message) bool {
		return header(m, kavari.HeaderErrorKind) != "" && string(m.Value) != "" && containsRun(m.Value, run)
	})
	byKey := map[string]kafka.Message{}
	for _, m := range dl {
		byKey[string(m.Key)] = m
		assert.Equal(t, "handler", header(m, kavari.HeaderErrorKind))
		assert.Equal(t, "kavari-test-fail", header(m, kavari.HeaderOriginalTopic))
		assert.NotEmpty(t, header(m, kavari.HeaderOriginalOffset))
		assert.NotEmpty(t, header(m, kavari.HeaderID), "original headers are kept")
		assert.Equal(t, "failMsg", header(m, kavari.HeaderMsgType))
	}
	require.Contains(t, byKey, "error")
	require.Contains(t, byKey, "panic")
	require.Contains(t, byKey, "permanent")
	assert.Equal(t, "4", header(byKey["error"], kavari.HeaderAttempts))
	assert.Contains(t, header(byKey["error"], kavari.HeaderOriginalError), "always fails")
	assert.Contains(t, header(byKey["panic"], kavari.HeaderOriginalError), "panicked: boom")
	assert.Equal(t, "1", header(byKey["permanent"], kavari.HeaderAttempts))
	for i := 0; i < 2; i++ {
		select {
		case <-okDone:
		case <-time.After(60 * time.Second):
			t.Fatal("flaky and ok messages were not handled")
		}
	}
	mu.Lock()
	assert.Equal(t, 3, attempts["flaky"])
	assert.Equal(t, 1, attempts["permanent"])
	mu.Unlock()
}

func containsRun(v []byte, run string) bool {
	return len(run) > 0 && len(v) > 0 && bytesContains(v, []byte(run))
}

func bytesContains(b, sub []byte) bool {
	for i := 0; i+len(sub) <= len(b); i++ {
		if string(b[i:i+len(sub)]) == string(sub) {
			return true
		}
	}
	return false
}

type poisonMsg struct {
	kavari.Message `kavari:"topic=kavari-test-poison,key=ID"`
	Run            string `json:"run"`
	ID             string `json:"id" validate:"required"`
	N              int    `json:"n" validate:"gte=0"`
}

// TestPoisonRecordsAreDeadLetteredAndGoodOnesHandled produces raw bad records
// between good ones: each bad one is dead-lettered at once with its kind, the
// good ones are all handled, the consumer never stops.
func TestPoisonRecordsAreDeadLetteredAndGoodOnesHandled(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("run")
	reg := kavari.NewRegistry()
	var handled atomic.Int64
	require.NoError(t, kavari.RegisterFuncOn(reg, &poisonMsg{}, func(ctx context.Context, m *poisonMsg) error {
		if m.Run == run {
			handled.Add(1)
		}
		return nil
	}))
	k := newKavari(t, reg, brokers)
	ctx := context.Background()
	require.NoError(t, k.Start(ctx))
	typ := []kafka.Header{{Key: "msg_type", Value: []byte("poisonMsg")}}
	bad := []struct {
		name string
		kind string
		msg  kafka.Message
	}{
		{"no-headers", "unknown_type", kafka.Message{Value: []byte(`{"run":"` + run + `","id":"x"}`)}},
		{"unknown-type", "unknown_type", kafka.Message{Value: []byte(`{"run":"` + run + `"}`), Headers: []kafka.Header{{Key: "msg_type", Value: []byte("nope")}}}},
		{"invalid-json", "decode", kafka.Message{Value: []byte(`{"run":"` + run + `",`), Headers: typ}},
		{"wrong-types", "decode", kafka.Message{Value: []byte(`{"run":"` + run + `","id":5}`), Headers: typ}},
		{"invalid", "validation", kafka.Message{Value: []byte(`{"run":"` + run + `","id":"","n":-1}`), Headers: typ}},
		{"empty", "decode", kafka.Message{Value: nil, Headers: append(typ, kafka.Header{Key: "run", Value: []byte(run)})}},
		{"garbage", "decode", kafka.Message{Value: append([]byte{0xff, 0x00, 0x13}, []byte(run)...), Headers: typ}},
	}
	for i, b := range bad {
		_, err := k.Publish(ctx, &poisonMsg{Run: run, ID: "good-" + strconv.Itoa(i)})
		require.NoError(t, err)
		m := b.msg
		m.Key = []byte(b.name)
		// writeRaw waits out a metadata cache (kafka-go's DefaultTransport,
		// shared by the tests of the process) that does not list the topic yet.
		writeRaw(t, brokers, "kavari-test-poison", m)
	}
	_, err := k.Publish(ctx, &poisonMsg{Run: run, ID: "good-last"})
	require.NoError(t, err)
	dl := readTopic(t, brokers, "kavari-test-poison.dlq", len(bad), func(m kafka.Message) bool {
		return containsRun(m.Value, run) || header(m, "run") == run
	})
	kinds := map[string]string{}
	for _, m := range dl {
		kinds[string(m.Key)] = header(m, kavari.HeaderErrorKind)
		assert.NotEmpty(t, header(m, kavari.HeaderOriginalError), string(m.Key))
	}
	for _, b := range bad {
		assert.Equal(t, b.kind, kinds[b.name], b.name)
	}
	eventually(t, 30*time.Second, func() bool { return handled.Load() == int64(len(bad)+1) }, "good messages handled: %d", handled.Load())
}

type provMsg struct {
	kavari.Message `kavari:"topic=kavari-test-prov,key=ID"`
	Run            string `json:"run"`
	ID             string `json:"id"`
}

type provHandler struct {
	seen *atomic.Int64
	run  string
}

func (h *provHandler) Handle(ctx context.Context, m *provMsg) error {
	if m.Run == h.run {
		h.seen.Add(1)
	}
	return nil
}

// TestProviderResolvesHandlersAndItsErrorsAreHandlerFailures checks that a
// provider supplies handler instances per message, and that a failing
// provider is retried and then dead-lettered rather than crashing.
func TestProviderResolvesHandlersAndItsErrorsAreHandlerFailures(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("run")
	reg := kavari.NewRegistry()
	require.NoError(t, kavari.RegisterProvidedOn(reg, &provMsg{}, (*provHandler)(nil)))
	k := newKavari(t, reg, brokers)
	var seen, calls atomic.Int64
	var fail atomic.Bool
	k.SetProvider(func(typ reflect.Type) (any, error) {
		calls.Add(1)
		if typ != reflect.TypeFor[*provHandler]() {
			return nil, fmt.Errorf("unexpected type %s", typ)
		}
		if fail.Load() {
			return nil, errors.New("container not ready")
		}
		return &provHandler{seen: &seen, run: run}, nil
	})
	ctx := context.Background()
	require.NoError(t, k.Start(ctx)) // Start resolves every handler type once
	fail.Store(true)
	_, err := k.Publish(ctx, &provMsg{Run: run, ID: "a"})
	require.NoError(t, err)
	dl := readTopic(t, brokers, "kavari-test-prov.dlq", 1, func(m kafka.Message) bool { return containsRun(m.Value, run) })
	assert.Contains(t, header(dl[0], kavari.HeaderOriginalError), "container not ready")
	assert.Equal(t, "*kavari_test.provHandler", header(dl[0], kavari.HeaderHandler))
	fail.Store(false)
	for i := 0; i < 5; i++ {
		_, err := k.Publish(ctx, &provMsg{Run: run, ID: "b" + strconv.Itoa(i)})
		require.NoError(t, err)
	}
	eventually(t, 30*time.Second, func() bool { return seen.Load() == 5 }, "provider-built handler saw %d", seen.Load())
}

type slowMsg struct {
	kavari.Message `kavari:"topic=kavari-test-slow,key=ID"`
	Run            string `json:"run"`
	ID             string `json:"id"`
	Seq            int    `json:"seq"`
}

// TestHandlerTimeoutCancelsContext checks that HandlerTimeout cancels a slow
// handler's context and counts as a failure.
func TestHandlerTimeoutCancelsContext(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("run")
	reg := kavari.NewRegistry()
	var cancelled atomic.Int64
	require.NoError(t, kavari.RegisterFuncOn(reg, &slowMsg{}, func(ctx context.Context, m *slowMsg) error {
		if m.Run != run {
			return nil
		}
		<-ctx.Done()
		cancelled.Add(1)
		return ctx.Err()
	}))
	k := newKavari(t, reg, brokers, func(c *kavari.Config) {
		c.Consume.HandlerTimeout = 50 * time.Millisecond
		c.Consume.Retry = kavari.ConstantRetry(time.Millisecond, 2)
	})
	ctx := context.Background()
	require.NoError(t, k.Start(ctx))
	_, err := k.Publish(ctx, &slowMsg{Run: run, ID: "x"})
	require.NoError(t, err)
	dl := readTopic(t, brokers, "kavari-test-slow.dlq", 1, func(m kafka.Message) bool { return containsRun(m.Value, run) })
	assert.Contains(t, header(dl[0], kavari.HeaderOriginalError), "deadline exceeded")
	assert.Equal(t, int64(2), cancelled.Load())
}

var (
	readTopic = testkit.ReadTopic
	header    = testkit.Header
)
