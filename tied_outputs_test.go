package kavari_test

// A handler's PublishAsync with its context is part of its record: the
// record completes (and its offset may be committed) only once those
// messages are acknowledged, and one that fails fails the attempt.

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/transport"
	"github.com/kavari-go/kavari/internal/transport/memory"
)

// outBroker returns an in-memory broker with the engine tests' topics and
// engout, whose writes of a record fail (retriable) while fail says so.
func outBroker(fail func(rec *transport.Record) bool) *memory.Broker {
	b := engBroker(1)
	b.CreateTopic("engout", 1)
	b.FailProduce = func(rec *transport.Record) error {
		if rec.Topic == "engout" && fail(rec) {
			return errors.New("broker unavailable")
		}
		return nil
	}
	return b
}

type engOut struct {
	kavari.Message `kavari:"topic=engout,key=Key"`
	Key            string `json:"key"`
	N              int    `json:"n"`
}

// TestHandlerPublishAsyncHoldsItsRecordUntilAcknowledged: while the
// message a handler published with PublishAsync keeps failing, its record
// is not committed and the handler is tried again; once the message is
// written, the record is committed.
func TestHandlerPublishAsyncHoldsItsRecordUntilAcknowledged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var failing atomic.Bool
		failing.Store(true)
		b := outBroker(func(*transport.Record) bool { return failing.Load() })
		b.Append(engRecord(0, "a", 0))
		var k *kavari.Client
		var runs atomic.Int64
		k = memKavari(t, b, transport.Capabilities{}, "g", func(ctx context.Context, m *engMsg) error {
			runs.Add(1)
			k.PublishAsync(ctx, &engOut{Key: m.Key, N: m.N}, nil)
			return nil
		}, func(c *kavari.Config) {
			c.Consume.Retry = kavari.ConstantRetry(time.Second, 100)
			c.Publish.Retry = kavari.ConstantRetry(10*time.Millisecond, 2)
		})
		require.NoError(t, k.Start(context.Background()))
		for i := 0; i < 100 && runs.Load() < 3; i++ {
			time.Sleep(100 * time.Millisecond)
		}
		assert.GreaterOrEqual(t, runs.Load(), int64(3), "the handler is tried again while its message fails")
		assert.LessOrEqual(t, memCommitted(b, "g", 0), int64(0), "committed past a record whose message was never written")
		failing.Store(false)
		for i := 0; i < 100 && memCommitted(b, "g", 0) < 1; i++ {
			time.Sleep(100 * time.Millisecond)
		}
		assert.Equal(t, int64(1), memCommitted(b, "g", 0))
		assert.NotEmpty(t, b.Records("engout", 0))
		require.NoError(t, stopNow(t, k))
	})
}

// TestHandlerPublishAsyncFailingForGoodDeadLetters: a message that is never
// written fails every attempt; the record is dead-lettered as a handler
// failure saying why, and the partition goes on.
func TestHandlerPublishAsyncFailingForGoodDeadLetters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := outBroker(func(rec *transport.Record) bool { return string(rec.Key) == "a" })
		b.Append(engRecord(0, "a", 0))
		b.Append(engRecord(0, "b", 1))
		var k *kavari.Client
		var calls atomic.Int64
		k = memKavari(t, b, transport.Capabilities{}, "g", func(ctx context.Context, m *engMsg) error {
			k.PublishAsync(ctx, &engOut{Key: m.Key, N: m.N}, func(_ kavari.Receipt, err error) {
				if err != nil {
					calls.Add(1)
				}
			})
			return nil
		}, func(c *kavari.Config) {
			c.Publish.Retry = kavari.ConstantRetry(10*time.Millisecond, 2)
		})
		require.NoError(t, k.Start(context.Background()))
		for i := 0; i < 100 && memCommitted(b, "g", 0) < 2; i++ {
			time.Sleep(100 * time.Millisecond)
		}
		require.NoError(t, stopNow(t, k))
		assert.Equal(t, int64(2), memCommitted(b, "g", 0))
		assert.Equal(t, int64(3), calls.Load(), "the callback hears of each failure")
		dl := b.Records(engTopic+".dlq", 0)
		require.Len(t, dl, 1)
		var kind, attempts, msg string
		for _, h := range dl[0].Headers {
			switch h.Key {
			case kavari.HeaderErrorKind:
				kind = string(h.Value)
			case kavari.HeaderAttempts:
				attempts = string(h.Value)
			case kavari.HeaderOriginalError:
				msg = string(h.Value)
			}
		}
		assert.Equal(t, "handler/3", kind+"/"+attempts)
		assert.True(t, strings.Contains(msg, "PublishAsync"), "the dead letter says a message failed: %q", msg)
		assert.Len(t, b.Records("engout", 0), 1, "the other record's message")
	})
}

// TestHandlerPublishAsyncOutlivesHandlerTimeout: Consume.HandlerTimeout
// cancels the handler's context when it returns; a message it queued with
// that context is still sent, and its record completes after it.
func TestHandlerPublishAsyncOutlivesHandlerTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		b := outBroker(func(rec *transport.Record) bool {
			if string(rec.Key) == "blocker" {
				<-release
			}
			return false
		})
		b.Append(engRecord(0, "a", 0))
		var k *kavari.Client
		var returned atomic.Bool
		k = memKavari(t, b, transport.Capabilities{}, "g", func(ctx context.Context, m *engMsg) error {
			k.PublishAsync(ctx, &engOut{Key: m.Key, N: m.N}, nil)
			returned.Store(true)
			return nil
		}, func(c *kavari.Config) {
			c.Consume.HandlerTimeout = time.Minute
			c.Publish.AsyncWorkers = 1
		})
		// The only writer is busy with a message the test holds.
		k.PublishAsync(context.Background(), &engOut{Key: "blocker"}, nil)
		synctest.Wait()
		require.NoError(t, k.Start(context.Background()))
		for i := 0; i < 100 && !returned.Load(); i++ {
			time.Sleep(100 * time.Millisecond)
		}
		require.True(t, returned.Load())
		time.Sleep(time.Second) // commit intervals pass
		assert.LessOrEqual(t, memCommitted(b, "g", 0), int64(0), "committed before the handler's message was written")
		close(release)
		for i := 0; i < 100 && memCommitted(b, "g", 0) < 1; i++ {
			time.Sleep(100 * time.Millisecond)
		}
		require.NoError(t, stopNow(t, k))
		assert.Equal(t, int64(1), memCommitted(b, "g", 0))
		assert.Len(t, b.Records("engout", 0), 2, "the blocker and the handler's message")
	})
}

// TestHandlerPublishAsyncTiedInEveryForm: the same hold for a batch
// handler, and for both kinds of handler with middleware installed (their
// context is another type).
func TestHandlerPublishAsyncTiedInEveryForm(t *testing.T) {
	passThrough := []kavari.Middleware{func(next kavari.AttemptFunc) kavari.AttemptFunc {
		return func(ctx context.Context, msg any) error { return next(ctx, msg) }
	}}
	for _, form := range []string{"batch", "batch+middleware", "single+middleware"} {
		t.Run(form, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var failing atomic.Bool
				failing.Store(true)
				b := outBroker(func(*transport.Record) bool { return failing.Load() })
				b.Append(engRecord(0, "a", 0))
				b.Append(engRecord(0, "b", 1))
				var k *kavari.Client
				var runs atomic.Int64
				mutate := func(c *kavari.Config) {
					c.Consume.Retry = kavari.ConstantRetry(time.Second, 100)
					c.Publish.Retry = kavari.ConstantRetry(10*time.Millisecond, 2)
					if form != "batch" {
						c.Middleware = passThrough
					}
				}
				if form == "single+middleware" {
					k = memKavari(t, b, transport.Capabilities{}, "g", func(ctx context.Context, m *engMsg) error {
						runs.Add(1)
						k.PublishAsync(ctx, &engOut{Key: m.Key, N: m.N}, nil)
						return nil
					}, mutate)
				} else {
					k = memBatchKavari(t, b, "g", func(ctx context.Context, ms []*engMsg) error {
						runs.Add(1)
						for _, m := range ms {
							k.PublishAsync(ctx, &engOut{Key: m.Key, N: m.N}, nil)
						}
						return nil
					}, mutate)
				}
				require.NoError(t, k.Start(context.Background()))
				for i := 0; i < 100 && runs.Load() < 3; i++ {
					time.Sleep(100 * time.Millisecond)
				}
				assert.GreaterOrEqual(t, runs.Load(), int64(3), "the handler is tried again while its messages fail")
				assert.LessOrEqual(t, memCommitted(b, "g", 0), int64(0), "committed past a record whose message was never written")
				failing.Store(false)
				for i := 0; i < 100 && memCommitted(b, "g", 0) < 2; i++ {
					time.Sleep(100 * time.Millisecond)
				}
				require.NoError(t, stopNow(t, k))
				assert.Equal(t, int64(2), memCommitted(b, "g", 0))
				assert.Len(t, b.Records("engout", 0), 2)
			})
		})
	}
}

// TestStopWhileARecordWaitsForItsMessage: Stop while a record waits for a
// message that keeps failing ends at its deadline's drain budget, leaves
// the record uncommitted (it is redelivered), and Stop from the handler
// itself does not wait for the handler's own record.
func TestStopWhileARecordWaitsForItsMessage(t *testing.T) {
	for _, from := range []string{"outside", "handler"} {
		t.Run(from, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := outBroker(func(*transport.Record) bool { return true })
				b.Append(engRecord(0, "a", 0))
				var k *kavari.Client
				var runs atomic.Int64
				stopped := make(chan error, 1)
				k = memKavari(t, b, transport.Capabilities{}, "g", func(ctx context.Context, m *engMsg) error {
					k.PublishAsync(ctx, &engOut{Key: m.Key, N: m.N}, nil)
					if runs.Add(1) == 1 && from == "handler" {
						go func() {
							sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
							defer cancel()
							stopped <- k.Stop(sctx)
						}()
					}
					return nil
				}, func(c *kavari.Config) {
					c.Consume.Retry = kavari.ConstantRetry(time.Second, 1000)
					c.Publish.Retry = kavari.ConstantRetry(100*time.Millisecond, 1000)
				})
				require.NoError(t, k.Start(context.Background()))
				for i := 0; i < 100 && runs.Load() < 1; i++ {
					time.Sleep(100 * time.Millisecond)
				}
				start := time.Now()
				if from == "outside" {
					sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					stopped <- k.Stop(sctx)
				}
				<-stopped
				assert.LessOrEqual(t, time.Since(start), 11*time.Second, "Stop ends by its deadline")
				assert.LessOrEqual(t, memCommitted(b, "g", 0), int64(0), "the record waiting for its message stays uncommitted")
			})
		})
	}
}

// TestParkedRecordKeepsItsKeysOrder: the first record of a key waits for
// its message, which fails once; the key's next record runs only after the
// first completed (its handler ran again), and records of other keys run
// meanwhile.
func TestParkedRecordKeepsItsKeysOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var fails atomic.Int64
		b := outBroker(func(rec *transport.Record) bool { return string(rec.Key) == "a" && fails.Add(1) <= 2 }) // both writes of the first message
		b.Append(engRecord(0, "a", 0))
		b.Append(engRecord(0, "a", 1))
		b.Append(engRecord(0, "b", 0))
		var k *kavari.Client
		var mu sync.Mutex
		var order []string
		k = memKavari(t, b, transport.Capabilities{}, "g", func(ctx context.Context, m *engMsg) error {
			mu.Lock()
			order = append(order, m.Key+strconv.Itoa(m.N))
			mu.Unlock()
			k.PublishAsync(ctx, &engOut{Key: m.Key, N: m.N}, nil)
			return nil
		}, func(c *kavari.Config) {
			c.Publish.Retry = kavari.ConstantRetry(10*time.Millisecond, 2)
			c.Consume.Retry = kavari.ConstantRetry(time.Second, 3)
		})
		require.NoError(t, k.Start(context.Background()))
		for i := 0; i < 100 && memCommitted(b, "g", 0) < 3; i++ {
			time.Sleep(100 * time.Millisecond)
		}
		require.NoError(t, stopNow(t, k))
		assert.Equal(t, int64(3), memCommitted(b, "g", 0))
		mu.Lock()
		defer mu.Unlock()
		var a []string
		for _, o := range order {
			if o[0] == 'a' {
				a = append(a, o)
			}
		}
		assert.Equal(t, []string{"a0", "a0", "a1"}, a, "a1 ran after a0's second attempt")
		assert.Less(t, slices.Index(order, "b0"), slices.Index(order, "a1"), "b ran while a0 waited")
		assert.Len(t, b.Records("engout", 0), 3)
	})
}

// TestParkedRecordOnRevokeStaysOpenForTheNextOwner: a member whose record
// waits for a message that keeps failing has its partition revoked (a
// second member joins); the record is not committed on revoke, and the
// partition's next owner handles it again once the message can be written.
func TestParkedRecordOnRevokeStaysOpenForTheNextOwner(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var failing atomic.Bool
		failing.Store(true)
		b := outBroker(func(*transport.Record) bool { return failing.Load() })
		b.Append(engRecord(0, "a", 0))
		var runs [2]atomic.Int64
		var ks [2]*kavari.Client
		for i := range ks {
			ks[i] = memKavari(t, b, transport.Capabilities{}, "g", func(ctx context.Context, m *engMsg) error {
				runs[i].Add(1)
				ks[i].PublishAsync(ctx, &engOut{Key: m.Key, N: m.N}, nil)
				return nil
			}, func(c *kavari.Config) {
				c.Publish.Retry = kavari.ConstantRetry(100*time.Millisecond, 1000)
				c.Consume.Retry = kavari.ConstantRetry(time.Second, 1000)
				c.Consume.DrainTimeout = 2 * time.Second
			})
		}
		require.NoError(t, ks[0].Start(context.Background()))
		for i := 0; i < 100 && runs[0].Load() < 1; i++ {
			time.Sleep(100 * time.Millisecond)
		}
		// The second member's join revokes the partition; the first drains
		// past its budget.
		require.NoError(t, ks[1].Start(context.Background()))
		time.Sleep(5 * time.Second)
		synctest.Wait()
		assert.LessOrEqual(t, memCommitted(b, "g", 0), int64(0), "the parked record was committed on revoke")
		failing.Store(false)
		for i := 0; i < 200 && memCommitted(b, "g", 0) < 1; i++ {
			time.Sleep(100 * time.Millisecond)
		}
		require.NoError(t, stopNow(t, ks[1]))
		require.NoError(t, stopNow(t, ks[0]))
		assert.Equal(t, int64(1), memCommitted(b, "g", 0))
		// The memory broker may give the partition back to the first member:
		// either way the record was handled again by its owner after the revoke.
		assert.GreaterOrEqual(t, runs[0].Load()+runs[1].Load(), int64(2), "handled again after the revoke")
		assert.NotEmpty(t, b.Records("engout", 0))
	})
}
