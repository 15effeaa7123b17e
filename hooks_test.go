package kavari_test

// Hooks and middleware on the in-memory transport: what they see, in what
// order, and that Health counts the same.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/transport"
)

// recorder implements every hook and logs each call as a line.
type recorder struct {
	mu    sync.Mutex
	lines []string
}

func (r *recorder) add(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, fmt.Sprintf(format, args...))
}

func (r *recorder) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.lines...)
}

func (r *recorder) OnPublishBefore(_ context.Context, msg kavari.Msg) []Header {
	r.add("before %T", msg)
	return []Header{{Key: "x-hook", Value: []byte("1")}}
}

func (r *recorder) OnPublishAfter(_ context.Context, rec *kavari.Record, _ time.Time, err error) {
	v := ""
	for _, h := range rec.Headers {
		if h.Key == "x-hook" {
			v = string(h.Value)
		}
	}
	r.add("after %s/%d@%d x-hook=%s err=%v", rec.Topic, rec.Partition, rec.Offset, v, err != nil)
}

func (r *recorder) OnAssigned(m map[string][]int) { r.add("assigned %v", m) }
func (r *recorder) OnRevoked(m map[string][]int, lost bool) {
	r.add("revoked %v lost=%v", m, lost)
}
func (r *recorder) OnCommitted(o map[string]map[int]int64, _ time.Duration, err error) {
	r.add("committed %v err=%v", o, err != nil)
}
func (r *recorder) OnRetryScheduled(rec *kavari.Record, wait time.Duration, err error) {
	r.add("retry @%d attempt=%d wait=%v err=%v", rec.Offset, rec.Attempt, wait, err)
}
func (r *recorder) OnDeadLettered(rec *kavari.Record, kind kavari.ErrorKind, err error) {
	r.add("dead @%d attempt=%d kind=%v", rec.Offset, rec.Attempt, kind)
}
func (r *recorder) OnFetched(topic string, p, n int, last, hw int64) {
	r.add("fetched %s/%d n=%d last=%d hw=%d", topic, p, n, last, hw)
}

type Header = kavari.Header

func only(lines []string, prefix string) []string {
	var out []string
	for _, l := range lines {
		if len(l) >= len(prefix) && l[:len(prefix)] == prefix {
			out = append(out, l)
		}
	}
	return out
}

// A record retried twice then dead-lettered, between two that succeed:
// middleware sees every attempt in order with its record and outcome; the
// retry, dead-letter, assigned, committed and revoked hooks fire; Health
// counts the same and shows the partition caught up.
func TestHooksConsume(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := engBroker(1)
		for n := range 3 {
			b.Append(engRecord(0, "k", n))
		}
		rec := &recorder{}
		var mwMu sync.Mutex
		var attempts []string
		mw := func(next kavari.AttemptFunc) kavari.AttemptFunc {
			return func(ctx context.Context, msg any) error {
				r, _ := kavari.RecordFromContext(ctx)
				err := next(ctx, msg)
				mwMu.Lock()
				attempts = append(attempts, fmt.Sprintf("%s %s/%d@%d type=%s attempt=%d n=%d err=%v",
					r.Handler, r.Topic, r.Partition, r.Offset, r.Type, r.Attempt, msg.(*engMsg).N, err))
				mwMu.Unlock()
				return err
			}
		}
		inner := func(next kavari.AttemptFunc) kavari.AttemptFunc {
			return func(ctx context.Context, msg any) error {
				mwMu.Lock()
				attempts = append(attempts, "inner")
				mwMu.Unlock()
				return next(ctx, msg)
			}
		}
		k := memKavari(t, b, transport.Capabilities{}, "g", func(ctx context.Context, m *engMsg) error {
			if m.N == 1 {
				return errors.New("boom")
			}
			return nil
		}, func(c *kavari.Config) {
			c.Hooks = []kavari.Hook{rec}
			c.Middleware = []kavari.Middleware{mw, inner}
		})
		require.NoError(t, k.Start(context.Background()))
		time.Sleep(time.Second)
		synctest.Wait()

		mwMu.Lock()
		got := attempts
		mwMu.Unlock()
		var want []string
		for _, a := range []struct{ off, attempt, n int }{{0, 1, 0}, {1, 1, 1}, {1, 2, 1}, {1, 3, 1}, {2, 1, 2}} {
			err := "<nil>"
			if a.n == 1 {
				err = "boom"
			}
			want = append(want, "inner", fmt.Sprintf("%s eng/0@%d type=engMsg attempt=%d n=%d err=%s", handlerName(got), a.off, a.attempt, a.n, err))
		}
		assert.Equal(t, want, got)

		lines := rec.got()
		assert.Equal(t, []string{"assigned map[eng:[0]]"}, only(lines, "assigned"))
		assert.Equal(t, []string{
			"retry @1 attempt=1 wait=10ms err=boom",
			"retry @1 attempt=2 wait=10ms err=boom",
		}, only(lines, "retry"))
		assert.Equal(t, []string{"dead @1 attempt=3 kind=handler"}, only(lines, "dead"))
		assert.Contains(t, only(lines, "committed"), "committed map[eng:map[0:3]] err=false")
		assert.Equal(t, []string{"fetched eng/0 n=3 last=2 hw=3"}, only(lines, "fetched"))
		// The dead letter was written by the consumer, not published: no
		// publish hook saw it.
		assert.Empty(t, only(lines, "after"))

		h := k.Health()
		assert.Equal(t, int64(3), h.Handled)
		assert.Equal(t, int64(2), h.Retried)
		assert.Equal(t, int64(1), h.DeadLettered)
		assert.False(t, h.LastCommit.IsZero())
		assert.Equal(t, []kavari.PartitionHealth{{Topic: engTopic, Partition: 0, Committed: 3, HighWatermark: 3, Lag: 0, OldestOffset: -1}}, h.Positions)
		assert.True(t, h.Ready(), "%+v", h)

		require.NoError(t, stopNow(t, k))
		assert.Equal(t, []string{"revoked map[eng:[0]] lost=false"}, only(rec.got(), "revoked"))
		assert.False(t, k.Health().Ready())
	})
}

// handlerName returns the handler name middleware logged (the first word of
// its second line), which RegisterFunc derives from the function.
func handlerName(lines []string) string {
	if len(lines) < 2 {
		return ""
	}
	var s string
	fmt.Sscan(lines[1], &s)
	return s
}

// Middleware that does not call next skips the handler and commits the
// record (idempotency); one returning Permanent dead-letters without retries.
func TestMiddlewareShortCircuit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := engBroker(1)
		for n := range 3 {
			b.Append(engRecord(0, "k", n))
		}
		var handled []int
		k := memKavari(t, b, transport.Capabilities{}, "g", func(ctx context.Context, m *engMsg) error {
			handled = append(handled, m.N)
			return nil
		}, func(c *kavari.Config) {
			c.Middleware = []kavari.Middleware{func(next kavari.AttemptFunc) kavari.AttemptFunc {
				return func(ctx context.Context, msg any) error {
					switch msg.(*engMsg).N {
					case 0:
						return nil // seen before
					case 1:
						return kavari.Permanent(errors.New("unauthorised"))
					}
					return next(ctx, msg)
				}
			}}
		})
		require.NoError(t, k.Start(context.Background()))
		time.Sleep(time.Second)
		synctest.Wait()
		assert.Equal(t, []int{2}, handled)
		assert.Equal(t, int64(3), memCommitted(b, "g", 0))
		assert.Len(t, b.Records(engTopic+".dlq", 0), 1)
		h := k.Health()
		assert.Equal(t, int64(0), h.Retried)
		assert.Equal(t, int64(1), h.DeadLettered)
		require.NoError(t, stopNow(t, k))
	})
}

// Publish hooks see every message of Publish, PublishBatch and PublishAsync:
// before encoding (the header they add is sent) and after the
// acknowledgement, with the record's partition and offset, or the failure.
func TestHooksPublish(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := engBroker(1)
		rec := &recorder{}
		k := memKavari(t, b, transport.Capabilities{}, "g", func(context.Context, *engMsg) error { return nil }, func(c *kavari.Config) {
			c.Hooks = []kavari.Hook{rec}
		})
		ctx := context.Background()
		_, err := k.Publish(ctx, &engMsg{Key: "a"})
		require.NoError(t, err)
		_, err = k.PublishBatch(ctx, &engMsg{Key: "b"}, &engMsg{Key: "c"})
		require.NoError(t, err)
		done := make(chan error, 1)
		k.PublishAsync(context.Background(), &engMsg{Key: "d"}, func(_ kavari.Receipt, err error) { done <- err })
		require.NoError(t, <-done)
		lines := rec.got()
		assert.Equal(t, []string{"before *kavari_test.engMsg", "before *kavari_test.engMsg", "before *kavari_test.engMsg", "before *kavari_test.engMsg"}, only(lines, "before"))
		assert.Equal(t, []string{
			"after eng/0@0 x-hook=1 err=false",
			"after eng/0@1 x-hook=1 err=false",
			"after eng/0@2 x-hook=1 err=false",
			"after eng/0@3 x-hook=1 err=false",
		}, only(lines, "after"))
		for _, r := range b.Records(engTopic, 0) {
			v, _ := headerOf(r.Headers, "x-hook")
			assert.Equal(t, "1", v, "offset %d", r.Offset)
		}
		require.NoError(t, stopNow(t, k))
	})
}

func headerOf(hs []transport.Header, key string) (string, bool) {
	for _, h := range hs {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

// A hook that implements no hook interface is refused by New.
func TestHooksInvalid(t *testing.T) {
	_, err := kavari.New(kavari.Config{Brokers: []string{"localhost:9092"}, Hooks: []kavari.Hook{42}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "kavari: Config.Hooks[0] (int) implements no HookXxx interface")
}

// oldHook has OnPublishBefore with another signature than HookPublishBefore's
// (the message as any), next to a method that is right.
type oldHook struct{}

func (oldHook) OnPublishBefore(context.Context, any) []kavari.Header { return nil }
func (oldHook) OnAssigned(map[string][]int)                          {}

// A hook whose OnXxx method does not match its interface would be silently
// skipped for that method: New refuses it and says which.
func TestHooksWrongSignature(t *testing.T) {
	_, err := kavari.New(kavari.Config{Brokers: []string{"localhost:9092"}, Hooks: []kavari.Hook{oldHook{}}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "OnPublishBefore")
	assert.Contains(t, err.Error(), "HookPublishBefore")
}

// Lag is measured also when no record flows: a partition paused behind a
// stuck handler fetches nothing, yet records written meanwhile show in its
// lag (the engine asks the broker for end offsets).
func TestHealthLagWhilePaused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := engBroker(1)
		for n := range 4 {
			b.Append(engRecord(0, "k", n))
		}
		release := make(chan struct{})
		k := memKavari(t, b, transport.Capabilities{}, "g", func(ctx context.Context, m *engMsg) error {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil
		}, func(c *kavari.Config) { c.Consume.MaxInFlight, c.Consume.MaxBuffered = 1, 1 })
		require.NoError(t, k.Start(context.Background()))
		time.Sleep(time.Second)
		synctest.Wait()
		for n := 4; n < 10; n++ {
			b.Append(engRecord(0, "k", n))
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		pos := k.Health().Positions
		require.Len(t, pos, 1)
		assert.Equal(t, int64(10), pos[0].HighWatermark, "%+v", pos)
		assert.Equal(t, int64(10), pos[0].Lag, "%+v", pos)
		close(release)
		time.Sleep(time.Second)
		synctest.Wait()
		assert.Equal(t, int64(0), k.Health().Positions[0].Lag)
		require.NoError(t, stopNow(t, k))
	})
}

// hookBatchMsg is valid only with an ID.
type hookBatchMsg struct {
	kavari.Message `kavari:"topic=eng,key=ID"`
	ID             string `json:"id" validate:"required"`
}

// A PublishBatch refused because one of its messages is invalid sends
// nothing: every OnPublishBefore call still gets its OnPublishAfter (here:
// the refused batch reports neither), so that a hook holding state between
// the two (a producer span) never leaks it.
func TestHooksPublishBatchRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := engBroker(1)
		rec := &recorder{}
		k := memKavari(t, b, transport.Capabilities{}, "", func(context.Context, *engMsg) error { return nil }, func(c *kavari.Config) {
			c.Hooks = []kavari.Hook{rec}
			require.NoError(t, c.Registry.Declare(&hookBatchMsg{}))
		})
		ctx := context.Background()
		_, err := k.PublishBatch(ctx, &hookBatchMsg{ID: "a"}, &hookBatchMsg{}, &hookBatchMsg{ID: "c"})
		require.ErrorIs(t, err, kavari.ErrInvalid)
		lines := rec.got()
		assert.Equal(t, len(only(lines, "before")), len(only(lines, "after")), "every before has its after: %q", lines)
		assert.Empty(t, b.Records(engTopic, 0), "nothing was sent")
		// A valid batch afterwards is reported as usual.
		_, err = k.PublishBatch(ctx, &hookBatchMsg{ID: "d"}, &hookBatchMsg{ID: "e"})
		require.NoError(t, err)
		lines = rec.got()
		assert.Len(t, only(lines, "before"), 2)
		assert.Len(t, only(lines, "after"), 2)
		require.NoError(t, stopNow(t, k))
	})
}
