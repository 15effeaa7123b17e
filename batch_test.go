package kavari_test

// Batch handlers on the in-memory transport, in synctest bubbles: batches
// per partition, poison isolation (BatchFailed, bisection), per-key order
// across retries, Stop and revoke.

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"strconv"
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

// memBatchKavari returns a Client on b's in-memory transport with batch
// handler h for engMsg; Stop is left to the test.
func memBatchKavari(t *testing.T, b *memory.Broker, group string, h func(context.Context, []*engMsg) error, mutate ...func(*kavari.Config)) *kavari.Client {
	t.Helper()
	reg := kavari.NewRegistry()
	require.NoError(t, kavari.RegisterBatchFuncOn(reg, &engMsg{}, h))
	cfg := kavari.Config{
		Brokers:  []string{"memory"},
		Registry: reg,
		Logger:   testLogger(),
		Consume: kavari.ConsumeConfig{
			GroupID:        group,
			CommitInterval: 100 * time.Millisecond,
			Retry:          kavari.ConstantRetry(10*time.Millisecond, 3),
		},
	}
	for _, m := range mutate {
		m(&cfg)
	}
	k, err := kavari.NewOnTransport(cfg, b.Transport(transport.Capabilities{}))
	require.NoError(t, err)
	return k
}

// batchCalls records every call of a batch handler: the N of its records,
// and whether it returned nil.
type batchCalls struct {
	mu    sync.Mutex
	calls [][]int
	ok    []bool
}

func (c *batchCalls) add(msgs []*engMsg, err error) error {
	ns := make([]int, len(msgs))
	for i, m := range msgs {
		ns[i] = m.N
	}
	c.mu.Lock()
	c.calls = append(c.calls, ns)
	c.ok = append(c.ok, err == nil)
	c.mu.Unlock()
	return err
}

// handled returns how many successful calls held each N.
func (c *batchCalls) handled() map[int]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := map[int]int{}
	for i, ns := range c.calls {
		if c.ok[i] {
			for _, n := range ns {
				m[n]++
			}
		}
	}
	return m
}

func (c *batchCalls) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.calls)
}

// deadLettered returns the dead letters of engTopic: original offset →
// error kind/attempts.
func deadLettered(b *memory.Broker) map[string]string {
	out := map[string]string{}
	for _, r := range b.Records(engTopic+".dlq", 0) {
		var kind, off, att string
		for _, h := range r.Headers {
			switch h.Key {
			case kavari.HeaderErrorKind:
				kind = string(h.Value)
			case kavari.HeaderOriginalOffset:
				off = string(h.Value)
			case kavari.HeaderAttempts:
				att = string(h.Value)
			}
		}
		out[off] = kind + "/" + att
	}
	return out
}

func waitCommitted(b *memory.Broker, group string, p int32, off int64) {
	for memCommitted(b, group, p) < off {
		time.Sleep(100 * time.Millisecond)
	}
}

// Records are handed over in batches of one partition, at most
// MaxBatchRecords each, every record once, in offset order per key; all
// are committed.
func TestBatchHandlesBatchesPerPartition(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := engBroker(2)
		const per = 40
		for n := 0; n < per; n++ {
			for p := int32(0); p < 2; p++ {
				b.Append(engRecord(p, "k"+strconv.Itoa(n%3), int(p)*1000+n))
			}
		}
		var calls batchCalls
		var mixed atomic.Bool
		k := memBatchKavari(t, b, "g", func(ctx context.Context, ms []*engMsg) error {
			first, ok := kavari.BatchRecordFromContext(ctx, 0)
			require.True(t, ok)
			for i := range ms {
				r, ok := kavari.BatchRecordFromContext(ctx, i)
				require.True(t, ok)
				if r.Partition != first.Partition {
					mixed.Store(true)
				}
				assert.Equal(t, ms[i].Key, string(r.Key))
				assert.Equal(t, 1, r.Attempt)
			}
			_, ok = kavari.BatchRecordFromContext(ctx, len(ms))
			assert.False(t, ok)
			_, ok = kavari.RecordFromContext(ctx)
			assert.False(t, ok, "RecordFromContext in a batch handler")
			return calls.add(ms, nil)
		}, func(c *kavari.Config) { c.Consume.MaxBatchRecords = 16 })
		require.NoError(t, k.Start(context.Background()))
		waitCommitted(b, "g", 0, per)
		waitCommitted(b, "g", 1, per)
		require.NoError(t, stopNow(t, k))
		assert.False(t, mixed.Load(), "a batch mixed partitions")
		h := calls.handled()
		assert.Len(t, h, 2*per)
		for n, c := range h {
			assert.Equal(t, 1, c, "record %d handled %d times", n, c)
		}
		calls.mu.Lock()
		defer calls.mu.Unlock()
		last := map[string]int{}
		most := 0
		for _, ns := range calls.calls {
			assert.LessOrEqual(t, len(ns), 16)
			most = max(most, len(ns))
			for _, n := range ns {
				key := fmt.Sprintf("%d/%d", n/1000, (n%1000)%3)
				if prev, ok := last[key]; ok {
					assert.Greater(t, n, prev, "key %s out of order", key)
				}
				last[key] = n
			}
		}
		assert.Equal(t, 16, most, "batches fill to MaxBatchRecords")
	})
}

// One poison record in the middle of a batch, the handler returning a plain
// error: the batch is retried per Consume.Retry, then bisected; the poison
// record is retried alone and dead-lettered, every other record is handled
// once, and the calls stay within the log2 bound.
func TestBatchOnePoisonIsolatedByBisection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := engBroker(1)
		const n, poison, attempts = 64, 37, 3
		for i := 0; i < n; i++ {
			b.Append(engRecord(0, "k"+strconv.Itoa(i), i))
		}
		var calls batchCalls
		k := memBatchKavari(t, b, "g", func(ctx context.Context, ms []*engMsg) error {
			for _, m := range ms {
				if m.N == poison {
					return calls.add(ms, errors.New("poison"))
				}
			}
			return calls.add(ms, nil)
		}, func(c *kavari.Config) { c.Consume.MaxBatchRecords = n })
		require.NoError(t, k.Start(context.Background()))
		waitCommitted(b, "g", 0, n)
		require.NoError(t, stopNow(t, k))
		h := calls.handled()
		assert.Len(t, h, n-1)
		for i := 0; i < n; i++ {
			if i != poison {
				assert.Equal(t, 1, h[i], "record %d", i)
			}
		}
		assert.Equal(t, map[string]string{strconv.Itoa(poison): "handler/" + strconv.Itoa(attempts)}, deadLettered(b))
		// The attempts of the whole batch, one call per halving (log2 n),
		// the poison's attempts alone, one later batch for the rest.
		bound := attempts + bits.Len(uint(n-1)) + attempts + 1
		assert.LessOrEqual(t, calls.count(), bound, "calls: %v", calls.calls)
		t.Logf("%d calls (bound %d)", calls.count(), bound)
	})
}

// BatchFailed(i): the records before i are handled by that call, record i
// is retried alone and dead-lettered (kavari_attempts counts the batch's
// call), the records after it come in a later batch.
func TestBatchFailedIndexIsolatesTheRecord(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := engBroker(1)
		for i := 0; i < 10; i++ {
			b.Append(engRecord(0, "k"+strconv.Itoa(i), i))
		}
		var calls batchCalls
		k := memBatchKavari(t, b, "g", func(ctx context.Context, ms []*engMsg) error {
			for i, m := range ms {
				if m.N == 5 {
					return calls.add(ms, kavari.BatchFailed(i, errors.New("bad row")))
				}
			}
			return calls.add(ms, nil)
		}, func(c *kavari.Config) { c.Consume.MaxBatchRecords = 10 })
		require.NoError(t, k.Start(context.Background()))
		waitCommitted(b, "g", 0, 10)
		require.NoError(t, stopNow(t, k))
		assert.Equal(t, map[string]string{"5": "handler/3"}, deadLettered(b))
		calls.mu.Lock()
		defer calls.mu.Unlock()
		require.GreaterOrEqual(t, len(calls.calls), 4)
		assert.Equal(t, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, calls.calls[0])
		seen5, rest := 0, 0
		for _, ns := range calls.calls[1:] {
			switch {
			case slices.Equal(ns, []int{5}):
				seen5++
			case slices.Equal(ns, []int{6, 7, 8, 9}):
				rest++
			default:
				t.Errorf("unexpected call %v", ns)
			}
		}
		assert.Equal(t, 2, seen5, "record 5 alone: the retries after the batch's attempt")
		assert.Equal(t, 1, rest, "the records after 5 in one later batch")
		assert.Len(t, calls.calls, 4)
	})
}

// A BatchFailed index outside the batch is a failure of the whole batch:
// retried, bisected, and the record that really fails is found.
func TestBatchFailedIndexOutOfRange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := engBroker(1)
		for i := 0; i < 8; i++ {
			b.Append(engRecord(0, "k"+strconv.Itoa(i), i))
		}
		var calls batchCalls
		k := memBatchKavari(t, b, "g", func(ctx context.Context, ms []*engMsg) error {
			for _, m := range ms {
				if m.N == 2 {
					return calls.add(ms, kavari.BatchFailed(len(ms)+3, errors.New("confused")))
				}
			}
			return calls.add(ms, nil)
		}, func(c *kavari.Config) { c.Consume.MaxBatchRecords = 8 })
		require.NoError(t, k.Start(context.Background()))
		waitCommitted(b, "g", 0, 8)
		require.NoError(t, stopNow(t, k))
		assert.Equal(t, map[string]string{"2": "handler/3"}, deadLettered(b))
		h := calls.handled()
		assert.Len(t, h, 7)
		calls.mu.Lock()
		defer calls.mu.Unlock()
		whole := 0
		for _, ns := range calls.calls {
			if len(ns) == 8 {
				whole++
			}
		}
		assert.Equal(t, 3, whole, "the whole batch retried per Consume.Retry")
	})
}

// Two failing records among 16, and a batch whose every record fails: each
// failing record is dead-lettered, every other handled exactly once.
func TestBatchSeveralFailingRecords(t *testing.T) {
	for _, tc := range []struct {
		name string
		n    int
		bad  func(int) bool
	}{
		{"two", 16, func(n int) bool { return n == 3 || n == 11 }},
		{"all", 8, func(int) bool { return true }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := engBroker(1)
				for i := 0; i < tc.n; i++ {
					b.Append(engRecord(0, "k"+strconv.Itoa(i), i))
				}
				var calls batchCalls
				k := memBatchKavari(t, b, "g", func(ctx context.Context, ms []*engMsg) error {
					for _, m := range ms {
						if tc.bad(m.N) {
							return calls.add(ms, errors.New("bad"))
						}
					}
					return calls.add(ms, nil)
				}, func(c *kavari.Config) { c.Consume.MaxBatchRecords = tc.n })
				require.NoError(t, k.Start(context.Background()))
				waitCommitted(b, "g", 0, int64(tc.n))
				require.NoError(t, stopNow(t, k))
				want := map[string]string{}
				for i := 0; i < tc.n; i++ {
					if tc.bad(i) {
						want[strconv.Itoa(i)] = "handler/3"
					}
				}
				assert.Equal(t, want, deadLettered(b))
				h := calls.handled()
				for i := 0; i < tc.n; i++ {
					if !tc.bad(i) {
						assert.Equal(t, 1, h[i], "record %d", i)
					}
				}
				t.Logf("%d calls", calls.count())
			})
		})
	}
}

// A record that fails only in a batch (with others) is handled alone:
// nothing is dead-lettered, every record handled once. A panic fails the
// batch as an error does.
func TestBatchRecordFailingOnlyInABatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := engBroker(1)
		for i := 0; i < 12; i++ {
			b.Append(engRecord(0, "k"+strconv.Itoa(i), i))
		}
		var calls batchCalls
		k := memBatchKavari(t, b, "g", func(ctx context.Context, ms []*engMsg) error {
			for _, m := range ms {
				if m.N == 6 && len(ms) > 1 {
					calls.add(ms, errors.New("panicked"))
					panic("not with the others")
				}
			}
			return calls.add(ms, nil)
		}, func(c *kavari.Config) { c.Consume.MaxBatchRecords = 12 })
		require.NoError(t, k.Start(context.Background()))
		waitCommitted(b, "g", 0, 12)
		require.NoError(t, stopNow(t, k))
		assert.Empty(t, deadLettered(b))
		h := calls.handled()
		assert.Len(t, h, 12)
		for n, c := range h {
			assert.Equal(t, 1, c, "record %d", n)
		}
	})
}

// While a key's record is retried alone, later records of that key arrive:
// none of them is handed over before it completes, and the key's records
// are handled in offset order; other keys go on meanwhile.
func TestBatchKeyOrderKeptWhileARecordRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := engBroker(1)
		b.Append(engRecord(0, "a", 0))
		b.Append(engRecord(0, "b", 100))
		var mu sync.Mutex
		done := map[string]int{} // key -> last N handled
		fails := 0
		var bad []string
		var otherWhileRetrying atomic.Bool
		retrying := atomic.Bool{}
		k := memBatchKavari(t, b, "g", func(ctx context.Context, ms []*engMsg) error {
			mu.Lock()
			defer mu.Unlock()
			inBatch := map[string]int{}
			for _, m := range ms {
				prev, ok := inBatch[m.Key]
				if !ok {
					prev, ok = done[m.Key]
				}
				want := 0
				if m.Key == "b" {
					want = 100
				}
				if ok {
					want = prev + 1
				}
				if m.N != want {
					bad = append(bad, fmt.Sprintf("%s/%d after %d", m.Key, m.N, want-1))
				}
				inBatch[m.Key] = m.N
				if m.Key != "a" && retrying.Load() {
					otherWhileRetrying.Store(true)
				}
			}
			for i, m := range ms {
				if m.Key == "a" && m.N == 0 && fails < 3 { // the batch's attempt and two alone; the last alone succeeds
					fails++
					retrying.Store(true)
					return kavari.BatchFailed(i, errors.New("not yet"))
				}
			}
			if len(ms) == 1 && ms[0].Key == "a" && ms[0].N == 0 {
				retrying.Store(false)
			}
			for _, m := range ms {
				done[m.Key] = m.N
			}
			return nil
		}, func(c *kavari.Config) {
			c.Consume.Retry = kavari.ConstantRetry(time.Second, 4)
			c.Consume.MaxBatchRecords = 8
		})
		require.NoError(t, k.Start(context.Background()))
		synctest.Wait() // a/0 failed in its batch, waits for its retry
		for i := 1; i <= 10; i++ {
			b.Append(engRecord(0, "a", i))
			b.Append(engRecord(0, "b", 100+i))
		}
		time.Sleep(500 * time.Millisecond) // within a/0's first wait
		synctest.Wait()
		mu.Lock()
		assert.Equal(t, 110, done["b"], "key b handled while a/0 retries")
		_, aDone := done["a"]
		assert.False(t, aDone, "no record of a handled before a/0")
		mu.Unlock()
		waitCommitted(b, "g", 0, 22)
		require.NoError(t, stopNow(t, k))
		mu.Lock()
		defer mu.Unlock()
		assert.Empty(t, bad)
		assert.Equal(t, 10, done["a"])
		assert.Equal(t, 3, fails)
		assert.True(t, otherWhileRetrying.Load())
		assert.Empty(t, deadLettered(b))
	})
}

// Under PerPartition a partition has one batch in flight at a time, and a
// batch is a run of consecutive records.
func TestBatchPerPartitionOneInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := engBroker(2)
		for n := 0; n < 30; n++ {
			b.Append(engRecord(int32(n%2), "k"+strconv.Itoa(n%5), n))
		}
		var mu sync.Mutex
		running := map[int]int{}
		most := 0
		var calls batchCalls
		k := memBatchKavari(t, b, "g", func(ctx context.Context, ms []*engMsg) error {
			r, _ := kavari.BatchRecordFromContext(ctx, 0)
			mu.Lock()
			running[r.Partition]++
			most = max(most, running[r.Partition])
			mu.Unlock()
			time.Sleep(5 * time.Millisecond)
			mu.Lock()
			running[r.Partition]--
			mu.Unlock()
			return calls.add(ms, nil)
		}, func(c *kavari.Config) {
			c.Consume.Ordering = kavari.PerPartition
			c.Consume.MaxBatchRecords = 4
		})
		require.NoError(t, k.Start(context.Background()))
		waitCommitted(b, "g", 0, 15)
		waitCommitted(b, "g", 1, 15)
		require.NoError(t, stopNow(t, k))
		assert.Equal(t, 1, most)
		calls.mu.Lock()
		defer calls.mu.Unlock()
		for _, ns := range calls.calls {
			for i := 1; i < len(ns); i++ {
				assert.Equal(t, ns[i-1]+2, ns[i], "consecutive records of the partition: %v", ns)
			}
		}
	})
}

// Poison records (undecodable, invalid) are dead-lettered before the batch
// is handed over: the batch holds only decoded messages.
func TestBatchPoisonNeverInABatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := engBroker(1)
		b.Append(engRecord(0, "a", 0))
		bad := engRecord(0, "bad", 1)
		bad.Value = []byte(`{"key":`)
		b.Append(bad)
		b.Append(transport.Record{Topic: engTopic, Value: []byte(`{}`), Headers: []transport.Header{{Key: kavari.HeaderMsgType, Value: []byte("nope")}}})
		b.Append(engRecord(0, "c", 3))
		var calls batchCalls
		k := memBatchKavari(t, b, "g", func(ctx context.Context, ms []*engMsg) error {
			return calls.add(ms, nil)
		})
		require.NoError(t, k.Start(context.Background()))
		waitCommitted(b, "g", 0, 4)
		require.NoError(t, stopNow(t, k))
		assert.Equal(t, map[string]string{"1": "decode/1", "2": "unknown_type/1"}, deadLettered(b))
		assert.Equal(t, map[int]int{0: 1, 3: 1}, calls.handled())
	})
}

// A type with a single handler and a batch handler: each sees every record once.
func TestBatchAndSingleHandlersOnOneType(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := engBroker(1)
		for i := 0; i < 20; i++ {
			b.Append(engRecord(0, "k"+strconv.Itoa(i%4), i))
		}
		reg := kavari.NewRegistry()
		var mu sync.Mutex
		single, batched := map[int]int{}, map[int]int{}
		require.NoError(t, kavari.RegisterFuncOn(reg, &engMsg{}, func(ctx context.Context, m *engMsg) error {
			r, ok := kavari.RecordFromContext(ctx)
			require.True(t, ok)
			assert.Equal(t, int64(m.N), r.Offset)
			mu.Lock()
			single[m.N]++
			mu.Unlock()
			return nil
		}))
		require.NoError(t, kavari.RegisterBatchFuncOn(reg, &engMsg{}, func(ctx context.Context, ms []*engMsg) error {
			mu.Lock()
			for _, m := range ms {
				batched[m.N]++
			}
			mu.Unlock()
			return nil
		}))
		k, err := kavari.NewOnTransport(kavari.Config{Brokers: []string{"memory"}, Registry: reg, Logger: testLogger(),
			Consume: kavari.ConsumeConfig{GroupID: "g", CommitInterval: 100 * time.Millisecond}}, b.Transport(transport.Capabilities{}))
		require.NoError(t, err)
		require.NoError(t, k.Start(context.Background()))
		waitCommitted(b, "g", 0, 20)
		require.NoError(t, stopNow(t, k))
		mu.Lock()
		defer mu.Unlock()
		assert.Len(t, single, 20)
		assert.Len(t, batched, 20)
		for i := 0; i < 20; i++ {
			assert.Equal(t, 1, single[i])
			assert.Equal(t, 1, batched[i])
		}
	})
}

// Stop while a batch handler ignores its context: Stop cancels it, waits
// its grace, reports ErrHandlersAbandoned, and the batch's records are not
// committed.
func TestBatchStopAbandonsHandlerIgnoringContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := engBroker(1)
		for i := 0; i < 5; i++ {
			b.Append(engRecord(0, "k"+strconv.Itoa(i), i))
		}
		release := make(chan struct{})
		var started atomic.Bool
		k := memBatchKavari(t, b, "g", func(ctx context.Context, ms []*engMsg) error {
			started.Store(true)
			<-release // ignores ctx
			return nil
		}, func(c *kavari.Config) { c.Consume.CommitInterval = time.Hour })
		require.NoError(t, k.Start(context.Background()))
		time.Sleep(time.Second)
		synctest.Wait()
		require.True(t, started.Load())
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := k.Stop(ctx)
		assert.ErrorIs(t, err, kavari.ErrHandlersAbandoned)
		assert.Equal(t, int64(-1), memCommitted(b, "g", 0))
		close(release)
		synctest.Wait()
	})
}

// A rebalance while a batch is in flight: the batch finishes within the
// drain budget and is committed before the partition moves; the new owner
// handles none of its records again.
func TestBatchRevokeDrainsTheBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := engBroker(2)
		for n := 0; n < 20; n++ {
			b.Append(engRecord(int32(n%2), "k"+strconv.Itoa(n), n))
		}
		var mu sync.Mutex
		count := map[int]int{}
		slow := make(chan struct{})
		var once sync.Once
		h := func(ctx context.Context, ms []*engMsg) error {
			if ms[0].N%2 == 0 {
				once.Do(func() { <-slow }) // the first batch of partition 0 is in flight at the rebalance
			}
			mu.Lock()
			for _, m := range ms {
				count[m.N]++
			}
			mu.Unlock()
			return nil
		}
		k1 := memBatchKavari(t, b, "g", h, func(c *kavari.Config) { c.Consume.CommitInterval = time.Hour })
		require.NoError(t, k1.Start(context.Background()))
		time.Sleep(100 * time.Millisecond) // past MaxBatchWait: partition 0's batch is handed over and held
		synctest.Wait()
		assert.Equal(t, int64(-1), memCommitted(b, "g", 0))
		k2 := memBatchKavari(t, b, "g", h, func(c *kavari.Config) { c.Consume.CommitInterval = time.Hour })
		go func() {
			time.Sleep(time.Second) // within DrainTimeout
			close(slow)
		}()
		require.NoError(t, k2.Start(context.Background()))
		time.Sleep(2 * time.Second)
		synctest.Wait()
		assert.Equal(t, int64(10), memCommitted(b, "g", 0), "the drained batch is committed on revoke")
		assert.Equal(t, int64(10), memCommitted(b, "g", 1))
		require.NoError(t, stopNow(t, k2))
		require.NoError(t, stopNow(t, k1))
		mu.Lock()
		defer mu.Unlock()
		assert.Len(t, count, 20)
		for n, c := range count {
			assert.Equal(t, 1, c, "record %d handled %d times", n, c)
		}
	})
}

// A batch takes one run slot: with MaxInFlight 1 batches still hold many
// records, and the buffer bounds them (MaxBuffered).
func TestBatchTakesOneRunSlot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := engBroker(1)
		for i := 0; i < 40; i++ {
			b.Append(engRecord(0, "k"+strconv.Itoa(i), i))
		}
		var calls batchCalls
		var running, most atomic.Int64
		k := memBatchKavari(t, b, "g", func(ctx context.Context, ms []*engMsg) error {
			most.Store(max(most.Load(), running.Add(1)))
			time.Sleep(time.Millisecond)
			running.Add(-1)
			return calls.add(ms, nil)
		}, func(c *kavari.Config) {
			c.Consume.MaxInFlight = 1
			c.Consume.MaxBuffered = 10
			c.Consume.MaxBatchRecords = 20
		})
		require.NoError(t, k.Start(context.Background()))
		waitCommitted(b, "g", 0, 40)
		require.NoError(t, stopNow(t, k))
		assert.Equal(t, int64(1), most.Load())
		assert.Len(t, calls.handled(), 40)
		calls.mu.Lock()
		defer calls.mu.Unlock()
		for _, ns := range calls.calls {
			assert.LessOrEqual(t, len(ns), 10, "a batch holds at most MaxBuffered records")
		}
	})
}

type engBatchWriter struct{ rows *atomic.Int64 }

func (w *engBatchWriter) HandleBatch(ctx context.Context, ms []*engMsg) error {
	w.rows.Add(int64(len(ms)))
	return nil
}

// The factory and provider forms of RegisterBatch, as Register's: the
// handler type names the handler, registering it twice is ErrDuplicate, and
// the provider builds it.
func TestRegisterBatchForms(t *testing.T) {
	reg := kavari.NewRegistry()
	var rows atomic.Int64
	require.NoError(t, kavari.RegisterBatchOn(reg, &engMsg{}, func() *engBatchWriter { return &engBatchWriter{&rows} }))
	err := kavari.RegisterBatchOn(reg, &engMsg{}, func() *engBatchWriter { return &engBatchWriter{&rows} })
	assert.ErrorIs(t, err, kavari.ErrDuplicate)
	types := reg.Types()
	require.Len(t, types, 1)
	assert.Equal(t, []string{"*kavari_test.engBatchWriter"}, types[0].Handlers)

	synctest.Test(t, func(t *testing.T) {
		b := engBroker(1)
		for i := 0; i < 10; i++ {
			b.Append(engRecord(0, "k", i))
		}
		reg := kavari.NewRegistry()
		require.NoError(t, kavari.RegisterBatchProvidedOn(reg, &engMsg{}, (*engBatchWriter)(nil)))
		k, err := kavari.NewOnTransport(kavari.Config{Brokers: []string{"memory"}, Registry: reg, Logger: testLogger(),
			Consume: kavari.ConsumeConfig{GroupID: "g", CommitInterval: 100 * time.Millisecond}}, b.Transport(transport.Capabilities{}))
		require.NoError(t, err)
		var herr *kavari.HandlerResolveError
		require.ErrorAs(t, k.Start(context.Background()), &herr, "no provider set")
		var rows atomic.Int64
		k.SetProvider(kavari.MapProvider(&engBatchWriter{&rows}))
		require.NoError(t, k.Start(context.Background()))
		waitCommitted(b, "g", 0, 10)
		require.NoError(t, stopNow(t, k))
		assert.Equal(t, int64(10), rows.Load())
	})
}

// Permanent skips the retries: a batch failing with Permanent is bisected
// at once, and the record it isolates is dead-lettered without retries;
// BatchFailed(i, Permanent(err)) dead-letters record i at once.
func TestBatchPermanentSkipsRetries(t *testing.T) {
	for _, named := range []bool{false, true} {
		t.Run(fmt.Sprintf("named=%v", named), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := engBroker(1)
				for i := 0; i < 8; i++ {
					b.Append(engRecord(0, "k"+strconv.Itoa(i), i))
				}
				var calls batchCalls
				k := memBatchKavari(t, b, "g", func(ctx context.Context, ms []*engMsg) error {
					for i, m := range ms {
						if m.N == 5 {
							if named {
								return calls.add(ms, kavari.BatchFailed(i, kavari.Permanent(errors.New("never"))))
							}
							return calls.add(ms, kavari.Permanent(errors.New("never")))
						}
					}
					return calls.add(ms, nil)
				}, func(c *kavari.Config) { c.Consume.MaxBatchRecords = 8 })
				require.NoError(t, k.Start(context.Background()))
				waitCommitted(b, "g", 0, 8)
				require.NoError(t, stopNow(t, k))
				assert.Equal(t, map[string]string{"5": "handler/1"}, deadLettered(b))
				if !named { // named: the failed call handled 0-4
					assert.Len(t, calls.handled(), 7)
				}
				calls.mu.Lock()
				defer calls.mu.Unlock()
				whole := 0
				for _, ns := range calls.calls {
					if len(ns) == 8 {
						whole++
					}
				}
				assert.Equal(t, 1, whole, "calls %v", calls.calls)
				if named {
					assert.Len(t, calls.calls, 2, "the batch, then the records after 5: %v", calls.calls)
				}
			})
		})
	}
}

type batchAttempts struct {
	mu  sync.Mutex
	got []kavari.BatchAttempt
}

func (h *batchAttempts) OnBatchAttempt(a kavari.BatchAttempt) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.got = append(h.got, a)
}

// HookBatchAttempt sees every call of a batch handler: the batch's, and
// the isolated record's retries alone, each with its offsets, attempt and
// error.
func TestBatchHookSeesEveryAttempt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := engBroker(1)
		for i := 0; i < 10; i++ {
			b.Append(engRecord(0, "k"+strconv.Itoa(i), i))
		}
		hook := &batchAttempts{}
		k := memBatchKavari(t, b, "g", func(ctx context.Context, ms []*engMsg) error {
			for i, m := range ms {
				if m.N == 5 {
					return kavari.BatchFailed(i, errors.New("bad row"))
				}
			}
			return nil
		}, func(c *kavari.Config) {
			c.Consume.MaxBatchRecords = 10
			c.Hooks = []kavari.Hook{hook}
		})
		require.NoError(t, k.Start(context.Background()))
		waitCommitted(b, "g", 0, 10)
		require.NoError(t, stopNow(t, k))
		hook.mu.Lock()
		defer hook.mu.Unlock()
		var got []string
		for _, a := range hook.got {
			assert.Equal(t, engTopic, a.Topic)
			assert.Contains(t, a.Handler, "TestBatchHookSeesEveryAttempt")
			got = append(got, fmt.Sprintf("%v#%d:%v", a.Offsets, a.Attempt, a.Err != nil))
		}
		slices.Sort(got)
		assert.Equal(t, []string{"[0 1 2 3 4 5 6 7 8 9]#1:true", "[5]#2:true", "[5]#3:true", "[6 7 8 9]#1:false"}, got)
	})
}

// MaxBatchBytes bounds a batch's keys and values; a record larger than it
// is a batch of its own. HandlerTimeout cancels a batch attempt's context.
func TestBatchBytesBoundAndTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := engBroker(1)
		for i := 0; i < 20; i++ {
			b.Append(engRecord(0, "k"+strconv.Itoa(i%10), i)) // 20 to 21 bytes each
		}
		big := engRecord(0, "big", 20)
		big.Value = []byte(`{"key":"big","n":20,"pad":"` + string(make([]byte, 200)) + `"}`)
		for i := range big.Value[27:227] {
			big.Value[27+i] = 'x'
		}
		b.Append(big)
		var calls batchCalls
		var timedOut atomic.Bool
		k := memBatchKavari(t, b, "g", func(ctx context.Context, ms []*engMsg) error {
			if len(ms) == 1 && ms[0].Key == "big" && !timedOut.Load() {
				<-ctx.Done() // the attempt's HandlerTimeout
				timedOut.Store(true)
				return calls.add(ms, ctx.Err())
			}
			return calls.add(ms, nil)
		}, func(c *kavari.Config) {
			c.Consume.MaxBatchBytes = 100
			c.Consume.HandlerTimeout = time.Second
		})
		require.NoError(t, k.Start(context.Background()))
		waitCommitted(b, "g", 0, 21)
		require.NoError(t, stopNow(t, k))
		assert.True(t, timedOut.Load())
		assert.Empty(t, deadLettered(b), "the timed-out attempt was retried")
		assert.Len(t, calls.handled(), 21)
		calls.mu.Lock()
		defer calls.mu.Unlock()
		for _, ns := range calls.calls {
			if slices.Contains(ns, 20) {
				assert.Equal(t, []int{20}, ns, "the large record alone")
				continue
			}
			bytes := 0
			for _, n := range ns {
				r := engRecord(0, "k"+strconv.Itoa(n%10), n)
				bytes += len(r.Key) + len(r.Value)
			}
			assert.LessOrEqual(t, bytes, 100, "a batch within MaxBatchBytes: %v", ns)
		}
	})
}

// On a batch topic, SkipUnknownTypes skips records of unknown type, and a
// type declared without handlers is skipped, as on a lane.
func TestBatchSkipUnknownTypes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := engBroker(1)
		b.Append(engRecord(0, "a", 0))
		b.Append(transport.Record{Topic: engTopic, Value: []byte(`{}`), Headers: []transport.Header{{Key: kavari.HeaderMsgType, Value: []byte("nope")}}})
		b.Append(engRecord(0, "a", 2))
		var calls batchCalls
		k := memBatchKavari(t, b, "g", func(ctx context.Context, ms []*engMsg) error {
			return calls.add(ms, nil)
		}, func(c *kavari.Config) { c.Consume.SkipUnknownTypes = true })
		require.NoError(t, k.Start(context.Background()))
		waitCommitted(b, "g", 0, 3)
		require.NoError(t, stopNow(t, k))
		assert.Empty(t, deadLettered(b))
		assert.Equal(t, map[int]int{0: 1, 2: 1}, calls.handled())
	})
}

// Config.Middleware wraps batch attempts too: msg is the batch, a
// []*engMsg, and BatchRecordFromContext describes its records; a
// middleware returning nil without calling next marks the batch handled.
func TestBatchMiddlewareSeesTheBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := engBroker(1)
		for i := 0; i < 10; i++ {
			b.Append(engRecord(0, "k"+strconv.Itoa(i), i))
		}
		var mu sync.Mutex
		var seen [][]int
		var calls batchCalls
		mw := func(next kavari.AttemptFunc) kavari.AttemptFunc {
			return func(ctx context.Context, msg any) error {
				ms, ok := msg.([]*engMsg)
				require.True(t, ok, "msg is %T", msg)
				_, single := kavari.RecordFromContext(ctx)
				assert.False(t, single)
				var offs []int
				for i := range ms {
					r, ok := kavari.BatchRecordFromContext(ctx, i)
					require.True(t, ok)
					offs = append(offs, int(r.Offset))
				}
				mu.Lock()
				seen = append(seen, offs)
				mu.Unlock()
				if slices.Contains(offs, 0) {
					return nil // skips the handler: the batch is handled
				}
				return next(context.WithValue(ctx, ctxMark{}, "mw"), msg)
			}
		}
		k := memBatchKavari(t, b, "g", func(ctx context.Context, ms []*engMsg) error {
			assert.Equal(t, "mw", ctx.Value(ctxMark{}))
			return calls.add(ms, nil)
		}, func(c *kavari.Config) {
			c.Consume.MaxBatchRecords = 4
			c.Middleware = []kavari.Middleware{mw}
		})
		require.NoError(t, k.Start(context.Background()))
		waitCommitted(b, "g", 0, 10)
		require.NoError(t, stopNow(t, k))
		mu.Lock()
		defer mu.Unlock()
		slices.SortFunc(seen, func(a, b []int) int { return a[0] - b[0] })
		assert.Equal(t, [][]int{{0, 1, 2, 3}, {4, 5, 6, 7}, {8, 9}}, seen)
		assert.Equal(t, map[int]int{4: 1, 5: 1, 6: 1, 7: 1, 8: 1, 9: 1}, calls.handled())
	})
}

type ctxMark struct{}

// A batch is handed over without waiting MaxBatchWait when the partition
// can take no more records (its share of MaxBuffered is open): the batch
// could not grow.
func TestBatchHandedOverWhenThePartitionIsFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := engBroker(1)
		for i := 0; i < 40; i++ {
			b.Append(engRecord(0, "k"+strconv.Itoa(i), i))
		}
		start := time.Now()
		var late atomic.Int64
		var calls batchCalls
		k := memBatchKavari(t, b, "g", func(ctx context.Context, ms []*engMsg) error {
			if time.Since(start) >= time.Hour {
				late.Add(1)
			}
			return calls.add(ms, nil)
		}, func(c *kavari.Config) {
			c.Consume.MaxInFlight = 4
			c.Consume.MaxBuffered = 8
			c.Consume.MaxBatchRecords = 100
			c.Consume.MaxBatchWait = time.Hour
		})
		require.NoError(t, k.Start(context.Background()))
		waitCommitted(b, "g", 0, 40)
		require.NoError(t, stopNow(t, k))
		assert.Len(t, calls.handled(), 40)
		assert.LessOrEqual(t, late.Load(), int64(1), "batches waited MaxBatchWait though the partition could take no more records")
	})
}
