package kavari_test

// Engine tests on the in-memory transport: ordering, commits, retries, dead
// letters, revokes and Stop, deterministic and without a broker. Each runs in
// a synctest bubble, so time (retry waits, commit intervals, drain budgets)
// is the bubble's fake clock and synctest.Wait replaces sleeping.

import (
	"context"
	"errors"
	"fmt"
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

type engMsg struct {
	kavari.Message `kavari:"topic=eng,key=Key"`
	Key            string `json:"key"`
	N              int    `json:"n"`
}

const engTopic = "eng"

// engRecord is the record kavari would publish for m, on partition p.
func engRecord(p int32, key string, n int) transport.Record {
	return transport.Record{Topic: engTopic, Partition: p, Key: []byte(key),
		Value:   []byte(`{"key":"` + key + `","n":` + strconv.Itoa(n) + `}`),
		Headers: []transport.Header{{Key: kavari.HeaderMsgType, Value: []byte("engMsg")}}}
}

// memKavari returns a Client on broker b's in-memory transport, consuming
// with handler h; Stop is left to the test.
func memKavari(t *testing.T, b *memory.Broker, caps transport.Capabilities, group string, h func(context.Context, *engMsg) error, mutate ...func(*kavari.Config)) *kavari.Client {
	t.Helper()
	reg := kavari.NewRegistry()
	require.NoError(t, kavari.RegisterFuncOn(reg, &engMsg{}, h))
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
	k, err := kavari.NewOnTransport(cfg, b.Transport(caps))
	require.NoError(t, err)
	return k
}

func engBroker(partitions int) *memory.Broker {
	b := memory.NewBroker()
	b.CreateTopic(engTopic, partitions)
	b.CreateTopic(engTopic+".dlq", 1)
	return b
}

func stopNow(t *testing.T, k *kavari.Client) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return k.Stop(ctx)
}

func memCommitted(b *memory.Broker, group string, p int32) int64 {
	o, ok := b.Committed(group, transport.TopicPartition{Topic: engTopic, Partition: p})
	if !ok {
		return -1
	}
	return o.Offset
}

// Per key, records are handled one at a time in offset order; different keys
// run in parallel; PerPartition keeps the partition's order; Unordered
// handles everything. Every record is committed.
func TestEngineOrdering(t *testing.T) {
	for _, ord := range []kavari.Ordering{kavari.PerKey, kavari.PerPartition, kavari.Unordered} {
		t.Run(ord.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := engBroker(2)
				const keys, per = 4, 25
				for n := 0; n < per; n++ {
					for k := 0; k < keys; k++ {
						b.Append(engRecord(int32(k%2), "k"+strconv.Itoa(k), n))
					}
				}
				var mu sync.Mutex
				seen := map[string][]int{}   // key -> n in handling order
				byPart := map[string][]int{} // "p0"/"p1" -> n*keys+key in handling order
				var running, most atomic.Int64
				active := map[string]bool{}
				overlapSameKey := false
				k := memKavari(t, b, transport.Capabilities{}, "g-"+ord.String(), func(ctx context.Context, m *engMsg) error {
					mu.Lock()
					if active[m.Key] {
						overlapSameKey = true
					}
					active[m.Key] = true
					mu.Unlock()
					if r := running.Add(1); r > most.Load() {
						most.Store(r)
					}
					time.Sleep(time.Millisecond) // fake time: lets the others run
					running.Add(-1)
					mu.Lock()
					active[m.Key] = false
					seen[m.Key] = append(seen[m.Key], m.N)
					kn, _ := strconv.Atoi(m.Key[1:])
					byPart["p"+strconv.Itoa(kn%2)] = append(byPart["p"+strconv.Itoa(kn%2)], m.N*keys+kn)
					mu.Unlock()
					return nil
				}, func(c *kavari.Config) { c.Consume.Ordering = ord; c.Consume.MaxInFlight = 8 })
				require.NoError(t, k.Start(context.Background()))
				for memCommitted(b, "g-"+ord.String(), 0) < 2*per || memCommitted(b, "g-"+ord.String(), 1) < 2*per {
					time.Sleep(100 * time.Millisecond)
				}
				require.NoError(t, stopNow(t, k))
				mu.Lock()
				defer mu.Unlock()
				total := 0
				for key, ns := range seen {
					total += len(ns)
					if ord != kavari.Unordered {
						for i, n := range ns {
							require.Equal(t, i, n, "key %s out of order: %v", key, ns)
						}
					}
				}
				assert.Equal(t, keys*per, total)
				switch ord {
				case kavari.PerKey:
					assert.False(t, overlapSameKey, "one key ran twice at once")
					assert.Greater(t, most.Load(), int64(2), "different keys run in parallel")
				case kavari.PerPartition:
					assert.Equal(t, int64(2), most.Load(), "one record per partition at a time")
					for p, seq := range byPart {
						for i := 1; i < len(seq); i++ {
							require.Less(t, seq[i-1], seq[i], "partition %s out of order", p)
						}
					}
				case kavari.Unordered:
					assert.Greater(t, most.Load(), int64(2))
				}
			})
		})
	}
}

// Only the contiguous completed prefix is committed: while offset 2 is held,
// the commit stays at 2 however many later records completed.
func TestEngineCommitsContiguousPrefix(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := engBroker(1)
		for n := 0; n < 10; n++ {
			b.Append(engRecord(0, "k"+strconv.Itoa(n), n))
		}
		release := make(chan struct{})
		var handled atomic.Int64
		k := memKavari(t, b, transport.Capabilities{}, "g", func(ctx context.Context, m *engMsg) error {
			if m.N == 2 {
				<-release
			}
			handled.Add(1)
			return nil
		})
		require.NoError(t, k.Start(context.Background()))
		time.Sleep(time.Second) // ten commit intervals
		synctest.Wait()
		assert.Equal(t, int64(9), handled.Load())
		assert.Equal(t, int64(2), memCommitted(b, "g", 0), "commit stops at the open record")
		h := k.Health()
		require.Len(t, h.Partitions, 1)
		assert.Equal(t, int64(2), h.Partitions[0].OldestOffset)
		close(release)
		time.Sleep(time.Second)
		assert.Equal(t, int64(10), memCommitted(b, "g", 0))
		require.NoError(t, stopNow(t, k))
	})
}

// A failing handler is retried Consume.Retry.MaxAttempts times, then the
// record is dead-lettered and committed; a poison record (no headers, an
// unknown type, bad JSON) is dead-lettered at once.
func TestEngineRetryThenDeadLetterAndPoison(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := engBroker(1)
		b.Append(engRecord(0, "fail", 0))
		b.Append(transport.Record{Topic: engTopic, Value: []byte("no headers")})
		b.Append(transport.Record{Topic: engTopic, Value: []byte(`{}`), Headers: []transport.Header{{Key: kavari.HeaderMsgType, Value: []byte("nope")}}})
		bad := engRecord(0, "bad", 0)
		bad.Value = []byte(`{"key":`)
		b.Append(bad)
		b.Append(engRecord(0, "ok", 1))
		var attempts atomic.Int64
		k := memKavari(t, b, transport.Capabilities{}, "g", func(ctx context.Context, m *engMsg) error {
			if m.Key == "fail" {
				attempts.Add(1)
				return errors.New("boom")
			}
			return nil
		})
		require.NoError(t, k.Start(context.Background()))
		for memCommitted(b, "g", 0) < 5 {
			time.Sleep(100 * time.Millisecond)
		}
		require.NoError(t, stopNow(t, k))
		assert.Equal(t, int64(3), attempts.Load())
		dl := b.Records(engTopic+".dlq", 0)
		require.Len(t, dl, 4)
		kinds := map[string]string{}
		for _, r := range dl {
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
			kinds[off] = kind + "/" + att
		}
		assert.Equal(t, map[string]string{"0": "handler/3", "1": "unknown_type/1", "2": "unknown_type/1", "3": "decode/1"}, kinds)
	})
}

// A rebalance revokes the first member's partitions: its in-flight handler
// finishes within the drain budget, its completed records are committed
// before the partitions move, and the new owner resumes from there without
// handling any of them again.
func TestEngineRevokeDrainsAndCommits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := engBroker(2)
		for n := 0; n < 20; n++ {
			b.Append(engRecord(int32(n%2), "k"+strconv.Itoa(n%2), n/2))
		}
		var mu sync.Mutex
		count := map[string]int{} // "key/n" -> times handled
		slow := make(chan struct{})
		h := func(ctx context.Context, m *engMsg) error {
			if m.Key == "k0" && m.N == 9 {
				<-slow // in flight when the second member joins
			}
			mu.Lock()
			count[fmt.Sprintf("%s/%d", m.Key, m.N)]++
			mu.Unlock()
			return nil
		}
		k1 := memKavari(t, b, transport.Capabilities{}, "g", h, func(c *kavari.Config) { c.Consume.CommitInterval = time.Hour })
		require.NoError(t, k1.Start(context.Background()))
		synctest.Wait() // k1 handled all but k0/9, committed nothing yet (CommitInterval)
		assert.Equal(t, int64(-1), memCommitted(b, "g", 0))
		k2 := memKavari(t, b, transport.Capabilities{}, "g", h, func(c *kavari.Config) { c.Consume.CommitInterval = time.Hour })
		go func() {
			time.Sleep(time.Second) // within DrainTimeout
			close(slow)
		}()
		require.NoError(t, k2.Start(context.Background())) // the join revokes k1's partitions
		time.Sleep(2 * time.Second)                        // past the slow handler; fake time
		synctest.Wait()
		assert.Equal(t, int64(10), memCommitted(b, "g", 0), "the drained handler's record is committed on revoke")
		assert.Equal(t, int64(10), memCommitted(b, "g", 1))
		require.NoError(t, stopNow(t, k2))
		require.NoError(t, stopNow(t, k1))
		mu.Lock()
		defer mu.Unlock()
		assert.Len(t, count, 20)
		for rec, n := range count {
			assert.Equal(t, 1, n, "%s handled %d times", rec, n)
		}
	})
}

// When the final commit at Stop is refused (the generation is fenced), Stop
// says so with ErrCommitFailed; a handler that outlives the drain budget is
// cancelled and its record left uncommitted.
func TestEngineStopReportsFencedCommit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := engBroker(1)
		for n := 0; n < 3; n++ {
			b.Append(engRecord(0, "k", n))
		}
		var fenced atomic.Bool
		b.FailCommit = func(transport.Generation, []transport.Offset) error {
			if fenced.Load() {
				return memory.ErrFenced
			}
			return nil
		}
		var cancelled atomic.Bool
		k := memKavari(t, b, transport.Capabilities{}, "g", func(ctx context.Context, m *engMsg) error {
			if m.N == 2 {
				<-ctx.Done()
				cancelled.Store(true)
				return ctx.Err()
			}
			return nil
		}, func(c *kavari.Config) { c.Consume.CommitInterval = time.Hour })
		require.NoError(t, k.Start(context.Background()))
		synctest.Wait()
		fenced.Store(true)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := k.Stop(ctx)
		require.Error(t, err)
		assert.ErrorIs(t, err, kavari.ErrCommitFailed)
		assert.True(t, cancelled.Load(), "the hanging handler's context was cancelled")
		assert.Equal(t, int64(-1), memCommitted(b, "g", 0))

		// The same Stop with the commit accepted returns nil and commits
		// the prefix before the hanging record.
		b2 := engBroker(1)
		for n := 0; n < 3; n++ {
			b2.Append(engRecord(0, "k", n))
		}
		k2 := memKavari(t, b2, transport.Capabilities{}, "g", func(ctx context.Context, m *engMsg) error {
			if m.N == 2 {
				<-ctx.Done()
				return ctx.Err()
			}
			return nil
		}, func(c *kavari.Config) { c.Consume.CommitInterval = time.Hour })
		require.NoError(t, k2.Start(context.Background()))
		synctest.Wait()
		ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel2()
		require.NoError(t, k2.Stop(ctx2))
		assert.Equal(t, int64(2), memCommitted(b2, "g", 0))
	})
}

// One key's handler hangs with many records queued behind it on partition 0;
// partition 0 may hold only its share of MaxBuffered, so partition 1's
// records are all handled and committed meanwhile, and partition 0 is paused
// rather than buffering without bound.
func TestEngineStuckKeyDoesNotStallOtherPartitions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := engBroker(2)
		b.Batch = 4
		for n := 0; n < 40; n++ {
			b.Append(engRecord(0, "stuck", n))
		}
		for n := 0; n < 40; n++ {
			b.Append(engRecord(1, "k"+strconv.Itoa(n), n))
		}
		var others atomic.Int64
		k := memKavari(t, b, transport.Capabilities{}, "g", func(ctx context.Context, m *engMsg) error {
			if m.Key == "stuck" {
				<-ctx.Done()
				return ctx.Err()
			}
			others.Add(1)
			return nil
		}, func(c *kavari.Config) { c.Consume.MaxInFlight, c.Consume.MaxBuffered = 4, 16 })
		require.NoError(t, k.Start(context.Background()))
		time.Sleep(time.Second)
		synctest.Wait()
		assert.Equal(t, int64(40), others.Load())
		assert.Equal(t, int64(40), memCommitted(b, "g", 1))
		h := k.Health()
		assert.LessOrEqual(t, h.InFlight, 16)
		require.Len(t, h.Partitions, 1)
		assert.Equal(t, 8, h.Partitions[0].Open, "partition 0 holds its share (16/2) of the buffer")
		assert.True(t, h.Partitions[0].Paused)
		// Its share open, one in hand, at most a share pending and a batch
		// in flight: the transport was paused, not left to fill memory.
		assert.LessOrEqual(t, b.Delivered(transport.TopicPartition{Topic: engTopic, Partition: 0}), int64(8+1+8+4))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = k.Stop(ctx)
	})
}

// On a cooperative transport a joining member takes only the partitions that
// move: the first member's handler on the partition it keeps is neither
// cancelled nor drained, and nothing is handled twice.
func TestEngineCooperativeRevokesOnlyMovedPartitions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := engBroker(2)
		b.Append(engRecord(0, "k0", 0))
		b.Append(engRecord(1, "k1", 0))
		release := make(chan struct{})
		var mu sync.Mutex
		count := map[string]int{}
		var cancelled atomic.Bool
		h := func(ctx context.Context, m *engMsg) error {
			if m.Key == "k0" && m.N == 0 {
				select {
				case <-release:
				case <-ctx.Done():
					cancelled.Store(true)
					return ctx.Err()
				}
			}
			mu.Lock()
			count[fmt.Sprintf("%s/%d", m.Key, m.N)]++
			mu.Unlock()
			return nil
		}
		coop := transport.Capabilities{Cooperative: true, HeartbeatsDuringDrain: true}
		k1 := memKavari(t, b, coop, "g", h)
		require.NoError(t, k1.Start(context.Background()))
		synctest.Wait()
		k2 := memKavari(t, b, coop, "g", h)
		require.NoError(t, k2.Start(context.Background()))
		synctest.Wait() // partition 1 moved to k2; k1 keeps partition 0, its handler still waiting
		assert.False(t, cancelled.Load(), "the kept partition's handler was not cancelled")
		assert.Equal(t, map[string][]int{"eng": {0}}, k1.Health().Assigned)
		assert.Equal(t, map[string][]int{"eng": {1}}, k2.Health().Assigned)
		b.Append(engRecord(1, "k1", 1))
		close(release)
		time.Sleep(time.Second)
		assert.Equal(t, int64(1), memCommitted(b, "g", 0), "k1 commits its kept partition in the new generation")
		assert.Equal(t, int64(2), memCommitted(b, "g", 1))
		require.NoError(t, stopNow(t, k2))
		require.NoError(t, stopNow(t, k1))
		mu.Lock()
		defer mu.Unlock()
		assert.Equal(t, map[string]int{"k0/0": 1, "k1/0": 1, "k1/1": 1}, count)
	})
}

// The revoke drain budget follows the transport: without heartbeats during
// the drain it is cut where the session timeout requires (here 10 s − 3 s
// − 2 s = 5 s), with them it runs to DrainTimeout (9 s). A 7 s handler is
// cancelled in the first case and completes and is committed in the second.
func TestEngineRevokeDrainBudgetFollowsTransport(t *testing.T) {
	for _, hb := range []bool{false, true} {
		t.Run(fmt.Sprintf("heartbeats=%v", hb), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := engBroker(1)
				b.Append(engRecord(0, "k", 0))
				var finished, cancelled atomic.Bool
				started := make(chan struct{})
				h := func(ctx context.Context, m *engMsg) error {
					close(started)
					select {
					case <-time.After(7 * time.Second):
						finished.Store(true)
						return nil
					case <-ctx.Done():
						cancelled.Store(true)
						return ctx.Err()
					}
				}
				caps := transport.Capabilities{HeartbeatsDuringDrain: hb}
				long := func(c *kavari.Config) {
					c.Consume.SessionTimeout, c.Consume.HeartbeatInterval, c.Consume.DrainTimeout, c.Consume.CommitInterval = 10*time.Second, 3*time.Second, 9*time.Second, time.Hour
				}
				k1 := memKavari(t, b, caps, "g", h, long)
				require.NoError(t, k1.Start(context.Background()))
				<-started
				k2 := memKavari(t, b, caps, "g", func(context.Context, *engMsg) error { return nil }, long)
				require.NoError(t, k2.Start(context.Background())) // eager: k1 revokes partition 0
				time.Sleep(20 * time.Second)
				synctest.Wait()
				assert.Equal(t, hb, finished.Load(), "handler finished")
				assert.Equal(t, !hb, cancelled.Load(), "handler cancelled")
				require.NoError(t, stopNow(t, k2))
				require.NoError(t, stopNow(t, k1))
				// Committed by k1's revoke when it finished, else by k2 which
				// handled it again after the cut.
				assert.Equal(t, int64(1), memCommitted(b, "g", 0))
			})
		})
	}
}

// When the partitions are lost (the session expired), the engine cancels
// their handlers and commits nothing; the records are handled again once
// the partition is assigned anew.
func TestEngineLostAbandonsWithoutCommit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := engBroker(1)
		b.Append(engRecord(0, "a", 0))
		b.Append(engRecord(0, "b", 1))
		var mu sync.Mutex
		count := map[string]int{}
		var cancelled atomic.Bool
		k := memKavari(t, b, transport.Capabilities{}, "g", func(ctx context.Context, m *engMsg) error {
			mu.Lock()
			count[m.Key]++
			first := count[m.Key] == 1
			mu.Unlock()
			if m.Key == "b" && first {
				<-ctx.Done() // hangs until the partition is lost
				cancelled.Store(true)
				return ctx.Err()
			}
			return nil
		}, func(c *kavari.Config) { c.Consume.CommitInterval = time.Hour })
		var oldGenCommits atomic.Int64
		b.FailCommit = func(gen transport.Generation, _ []transport.Offset) error {
			if gen.ID == 1 {
				oldGenCommits.Add(1)
			}
			return nil
		}
		require.NoError(t, k.Start(context.Background()))
		synctest.Wait()
		require.Equal(t, int32(1), b.Generation("g"))
		b.Expire("g")
		synctest.Wait()
		assert.True(t, cancelled.Load(), "the lost partition's handler was cancelled")
		assert.Zero(t, oldGenCommits.Load(), "no commit was tried for the lost generation")
		require.NoError(t, stopNow(t, k)) // commits what the new generation handled
		assert.Equal(t, int64(2), memCommitted(b, "g", 0))
		mu.Lock()
		defer mu.Unlock()
		assert.Equal(t, map[string]int{"a": 2, "b": 2}, count, "nothing was committed before the loss: both redelivered")
	})
}

// The generation ends before Stop (the coordinator went away) and its final
// commit is refused: Stop, called afterwards, reports ErrCommitFailed with a
// *CommitError naming the partition. When the member is assigned the
// partition again first, the records are redelivered and Stop returns nil.
// A commit whose request may have reached the broker (the transport says
// transport.ErrCommitUnconfirmed) is reported as such: the broker may still
// apply it, so Stop's error must not promise that its records come back.
func TestEngineStopReportsUnconfirmedCommit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := engBroker(1)
		for n := 0; n < 3; n++ {
			b.Append(engRecord(0, "k", n))
		}
		var down atomic.Bool
		b.FailCommit = func(transport.Generation, []transport.Offset) error {
			if down.Load() {
				return fmt.Errorf("%w: memory: connection cut mid-request", transport.ErrCommitUnconfirmed)
			}
			return nil
		}
		k := memKavari(t, b, transport.Capabilities{}, "g", func(context.Context, *engMsg) error { return nil },
			func(c *kavari.Config) { c.Consume.CommitInterval = time.Hour })
		require.NoError(t, k.Start(context.Background()))
		synctest.Wait()
		down.Store(true)
		err := stopNow(t, k)
		var ce *kavari.CommitError
		require.ErrorAs(t, err, &ce)
		assert.True(t, ce.MayHaveBeenApplied)
		assert.Contains(t, err.Error(), "may still apply it")
		assert.NotContains(t, err.Error(), "the records are redelivered")
	})
}

func TestEngineStopReportsCommitLostBeforeStop(t *testing.T) {
	for _, reassign := range []bool{false, true} {
		t.Run(fmt.Sprintf("reassign=%v", reassign), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := engBroker(1)
				for n := 0; n < 3; n++ {
					b.Append(engRecord(0, "k", n))
				}
				var down atomic.Bool
				b.FailCommit = func(transport.Generation, []transport.Offset) error {
					if down.Load() {
						return errors.New("memory: coordinator gone")
					}
					return nil
				}
				var handled atomic.Int64
				k := memKavari(t, b, transport.Capabilities{}, "g", func(context.Context, *engMsg) error {
					handled.Add(1)
					return nil
				}, func(c *kavari.Config) { c.Consume.CommitInterval = time.Hour })
				require.NoError(t, k.Start(context.Background()))
				synctest.Wait()
				require.Equal(t, int64(3), handled.Load())
				down.Store(true)
				b.Disconnect("g")
				synctest.Wait()
				if !reassign {
					err := stopNow(t, k)
					require.ErrorIs(t, err, kavari.ErrCommitFailed)
					var ce *kavari.CommitError
					require.ErrorAs(t, err, &ce)
					assert.Equal(t, map[string]map[int]int64{engTopic: {0: 3}}, ce.Offsets)
					assert.False(t, ce.MayHaveBeenApplied, "the coordinator refused it")
					return
				}
				// A member joins: k, the first member, gets the partition
				// again, handles the records again and commits at Stop.
				down.Store(false)
				k2 := memKavari(t, b, transport.Capabilities{}, "g", func(context.Context, *engMsg) error { return nil })
				require.NoError(t, k2.Start(context.Background()))
				synctest.Wait()
				assert.Equal(t, int64(6), handled.Load(), "the uncommitted records were redelivered")
				require.NoError(t, stopNow(t, k2))
				require.NoError(t, stopNow(t, k))
				assert.Equal(t, int64(3), memCommitted(b, "g", 0))
			})
		})
	}
}

// Stop's deadline passes while its final commit is not answered (a frozen
// broker): Stop reports ErrCommitFailed with a *CommitError naming what
// completed and is not known to be committed.
func TestEngineStopReportsUnansweredCommit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := engBroker(2)
		for n := 0; n < 4; n++ {
			b.Append(engRecord(int32(n%2), "k"+strconv.Itoa(n%2), n))
		}
		frozen := make(chan struct{})
		var freeze atomic.Bool
		b.FailCommit = func(transport.Generation, []transport.Offset) error {
			if freeze.Load() {
				<-frozen
				return errors.New("memory: connection cut")
			}
			return nil
		}
		k := memKavari(t, b, transport.Capabilities{}, "g", func(context.Context, *engMsg) error { return nil },
			func(c *kavari.Config) { c.Consume.CommitInterval = time.Hour })
		require.NoError(t, k.Start(context.Background()))
		synctest.Wait()
		freeze.Store(true)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		err := k.Stop(ctx)
		close(frozen)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.ErrorIs(t, err, kavari.ErrCommitFailed)
		var ce *kavari.CommitError
		require.ErrorAs(t, err, &ce)
		assert.Equal(t, map[string]map[int]int64{engTopic: {0: 2, 1: 2}}, ce.Offsets)
		synctest.Wait()
	})
}
