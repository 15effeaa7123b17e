package kavari_test

// Retry topics (Consume.RetryTopics) on the in-memory transport, in a
// synctest bubble: the tiers' delays are the bubble's fake clock, so a
// one-minute tier costs nothing.

import (
	"context"
	"errors"
	"fmt"
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

var rtDelays = []time.Duration{time.Second, 10 * time.Second, time.Minute}

// rtBroker is engBroker with the tiers' topics of rtDelays.
func rtBroker(partitions int) *memory.Broker {
	b := engBroker(partitions)
	for _, t := range []string{"eng.retry.1", "eng.retry.2", "eng.retry.3"} {
		b.CreateTopic(t, 1)
	}
	return b
}

// rtConfig turns on the three tiers, with two in-place attempts.
func rtConfig(c *kavari.Config) {
	c.Consume.RetryTopics = rtDelays
	c.Consume.Retry = kavari.ConstantRetry(10*time.Millisecond, 2)
}

func rtHeaders(rec transport.Record) map[string]string {
	m := map[string]string{}
	for _, h := range rec.Headers {
		m[h.Key] = string(h.Value)
	}
	return m
}

func rtDue(t *testing.T, rec transport.Record) time.Time {
	t.Helper()
	due, err := time.Parse(time.RFC3339Nano, rtHeaders(rec)[kavari.HeaderRetryDue])
	require.NoError(t, err, "%s header", kavari.HeaderRetryDue)
	return due
}

// attemptLog records when each record (by N) was attempted.
type attemptLog struct {
	mu    sync.Mutex
	times map[int][]time.Time
}

func (l *attemptLog) add(n int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.times == nil {
		l.times = map[int][]time.Time{}
	}
	l.times[n] = append(l.times[n], time.Now())
	return len(l.times[n])
}

func (l *attemptLog) of(n int) []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]time.Time(nil), l.times[n]...)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Hour); !cond(); {
		require.True(t, time.Now().Before(deadline), "timed out waiting for %s", what)
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRetryTopicsHandleOnceAfterTheRightTiers: a handler failing its two
// in-place attempts and the attempts of tiers 1 and 2 succeeds in tier 3:
// the record went through each tier once, was never attempted before it was
// due, and was not dead-lettered; meanwhile the next record of the same key
// was handled at once (the failing one left its key's order), and every
// partition is committed to its end.
func TestRetryTopicsHandleOnceAfterTheRightTiers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := rtBroker(1)
		var log attemptLog
		var succeeded atomic.Int64
		k := memKavari(t, b, transport.Capabilities{}, "g-rt", func(ctx context.Context, m *engMsg) error {
			if log.add(m.N) <= 4 && m.N == 1 {
				return errors.New("not yet")
			}
			succeeded.Add(1)
			return nil
		}, rtConfig)
		b.Append(engRecord(0, "a", 1))
		b.Append(engRecord(0, "a", 2))
		require.NoError(t, k.Start(context.Background()))
		waitFor(t, "both records handled", func() bool { return succeeded.Load() == 2 })
		waitFor(t, "every partition committed", func() bool {
			return memCommitted(b, "g-rt", 0) == 2 && rtCommitted(b, "g-rt", "eng.retry.3") == 1
		})
		h := k.Health()
		assert.EqualValues(t, 2, h.Handled, "a record counts as handled once, when it is finished")
		assert.EqualValues(t, 1+3, h.Retried, "one in-place retry and three moves")
		require.NoError(t, stopNow(t, k))

		att := log.of(1)
		require.Len(t, att, 5, "2 in place, then one per tier")
		assert.Len(t, log.of(2), 1)
		assert.True(t, log.of(2)[0].Before(att[2]), "the next record of the key did not wait for the retried one")
		for n, topic := range []string{"eng.retry.1", "eng.retry.2", "eng.retry.3"} {
			recs := b.Records(topic, 0)
			require.Len(t, recs, 1, topic)
			h := rtHeaders(recs[0])
			assert.Equal(t, "eng", h[kavari.HeaderOriginalTopic])
			assert.Equal(t, "0", h[kavari.HeaderOriginalOffset])
			assert.Equal(t, []string{"2", "3", "4"}[n], h[kavari.HeaderAttempts], topic)
			assert.Contains(t, h[kavari.HeaderOriginalError], "not yet")
			due := rtDue(t, recs[0])
			attempt := att[2+n]
			assert.False(t, attempt.Before(due), "%s: attempted at %v, due %v", topic, attempt, due)
			t.Logf("%s: delay %v, attempted %v after due (fake clock)", topic, rtDelays[n], attempt.Sub(due))
			assert.Len(t, strings.Split(h[kavari.HeaderRetryHistory], ","), n+1, "history %q", h[kavari.HeaderRetryHistory])
			assert.EqualValues(t, 1, b.Unlingered(topic), "%s: the move, which the partition's commits wait for, is written without waiting for a batch to fill", topic)
		}
		assert.Empty(t, b.Records("eng.dlq", 0))
		assert.Positive(t, b.Pauses(transport.TopicPartition{Topic: "eng.retry.3"}), "a tier partition waits paused")
	})
}

func rtCommitted(b *memory.Broker, group, topic string) int64 {
	o, ok := b.Committed(group, transport.TopicPartition{Topic: topic})
	if !ok {
		return -1
	}
	return o.Offset
}

// TestRetryTopicsDeadLetterAfterTheLastTier: a record that always fails is
// dead-lettered after the last tier, once, to the main topic's dead-letter
// topic, naming the main topic's record and carrying its tier history.
func TestRetryTopicsDeadLetterAfterTheLastTier(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := rtBroker(1)
		var log attemptLog
		var mu sync.Mutex
		var seen []string // Record.RetryTier/Attempt of each attempt
		k := memKavari(t, b, transport.Capabilities{}, "g-rtdl", func(ctx context.Context, m *engMsg) error {
			log.add(m.N)
			r, _ := kavari.RecordFromContext(ctx)
			mu.Lock()
			seen = append(seen, fmt.Sprintf("%d/%d", r.RetryTier, r.Attempt))
			mu.Unlock()
			return errors.New("always")
		}, rtConfig)
		b.Append(engRecord(0, "a", 1))
		require.NoError(t, k.Start(context.Background()))
		waitFor(t, "the dead letter", func() bool { return len(b.Records("eng.dlq", 0)) == 1 })
		waitFor(t, "tier 3 committed", func() bool { return rtCommitted(b, "g-rtdl", "eng.retry.3") == 1 })
		h := k.Health()
		require.NoError(t, stopNow(t, k))
		assert.Len(t, log.of(1), 5)
		assert.Equal(t, []string{"0/1", "0/2", "1/3", "2/4", "3/5"}, seen, "RetryTier/Attempt")
		dl := rtHeaders(b.Records("eng.dlq", 0)[0])
		assert.Equal(t, "eng", dl[kavari.HeaderOriginalTopic])
		assert.Equal(t, "0", dl[kavari.HeaderOriginalPartition])
		assert.Equal(t, "0", dl[kavari.HeaderOriginalOffset])
		assert.Equal(t, "5", dl[kavari.HeaderAttempts])
		assert.Equal(t, "3", dl[kavari.HeaderRetryTier])
		assert.Equal(t, "handler", dl[kavari.HeaderErrorKind])
		hist := strings.Split(dl[kavari.HeaderRetryHistory], ",")
		require.Len(t, hist, 3, "the main topic and tiers 1 and 2 (tier 3's failure is the dead letter's)")
		for i, prefix := range []string{"eng/0/0@", "eng.retry.1/0/0@", "eng.retry.2/0/0@"} {
			assert.True(t, strings.HasPrefix(hist[i], prefix), "history %d: %q", i, hist[i])
		}
		assert.EqualValues(t, 1, h.DeadLettered)
		assert.EqualValues(t, 4, h.Retried, "one in-place retry and three tier moves")
	})
}

// TestRetryTopicsPermanentAndPoisonGoStraightToTheDeadLetterTopic: a
// Permanent error and a record without headers skip the tiers.
func TestRetryTopicsPermanentAndPoisonGoStraightToTheDeadLetterTopic(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := rtBroker(1)
		k := memKavari(t, b, transport.Capabilities{}, "g-rtperm", func(ctx context.Context, m *engMsg) error {
			return kavari.Permanent(errors.New("never"))
		}, rtConfig)
		b.Append(engRecord(0, "a", 1))
		b.Append(transport.Record{Topic: engTopic, Key: []byte("b"), Value: []byte("junk")})
		require.NoError(t, k.Start(context.Background()))
		waitFor(t, "committed", func() bool { return memCommitted(b, "g-rtperm", 0) == 2 })
		require.NoError(t, stopNow(t, k))
		assert.Len(t, b.Records("eng.dlq", 0), 2)
		for _, tier := range []string{"eng.retry.1", "eng.retry.2", "eng.retry.3"} {
			assert.Empty(t, b.Records(tier, 0), tier)
		}
	})
}

// TestRetryTopicWriteFailureHoldsThePartition: while the retry topic
// refuses writes (deleted), the failing record stays open, the main
// partition commits nothing past it although a later record was handled,
// and Health says why; once the topic is back the record moves on and
// the partition commits.
func TestRetryTopicWriteFailureHoldsThePartition(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := rtBroker(1)
		var refusing atomic.Bool
		refusing.Store(true)
		b.FailProduce = func(rec *transport.Record) error {
			if rec.Topic == "eng.retry.1" && refusing.Load() {
				return &transport.ProduceError{Kind: transport.UnknownTopic, Err: errors.New("unknown topic eng.retry.1")}
			}
			return nil
		}
		var second atomic.Bool
		var log attemptLog
		k := memKavari(t, b, transport.Capabilities{}, "g-rtfail", func(ctx context.Context, m *engMsg) error {
			if log.add(m.N) <= 2 && m.N == 1 {
				return errors.New("once")
			}
			if m.N == 2 {
				second.Store(true)
			}
			return nil
		}, rtConfig)
		b.Append(engRecord(0, "a", 1))
		b.Append(engRecord(0, "b", 2))
		require.NoError(t, k.Start(context.Background()))
		var stuck string
		waitFor(t, "Health to say why", func() bool {
			for _, p := range k.Health().Partitions {
				if p.Topic == engTopic && p.Stuck != "" {
					stuck = p.Stuck
					return true
				}
			}
			return false
		})
		waitFor(t, "the later record", second.Load)
		time.Sleep(30 * time.Second) // the write is retried meanwhile
		assert.Contains(t, stuck, "eng.retry.1")
		assert.Contains(t, stuck, "unknown topic")
		assert.LessOrEqual(t, memCommitted(b, "g-rtfail", 0), int64(0), "nothing committed past the record")
		assert.Empty(t, b.Records("eng.retry.1", 0))

		refusing.Store(false)
		waitFor(t, "the partition to commit", func() bool { return memCommitted(b, "g-rtfail", 0) == 2 })
		waitFor(t, "the retried record", func() bool { return len(log.of(1)) == 3 })
		for _, p := range k.Health().Partitions {
			assert.Empty(t, p.Stuck, "%s/%d", p.Topic, p.Partition)
		}
		require.NoError(t, stopNow(t, k))
		assert.Len(t, b.Records("eng.retry.1", 0), 1, "written once")
	})
}

type rtNamed struct {
	kavari.Message `kavari:"topic=rtn,key=Key"`
	Key            string `json:"key"`
}

// TestRetryTopicsFollowTopicsName: the tiers are named from the real topic
// (Config.Topics.Name), created by Topics.Create with the dead-letter
// topic, and consumed under that name.
func TestRetryTopicsFollowTopicsName(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := memory.NewBroker()
		reg := kavari.NewRegistry()
		var calls atomic.Int64
		require.NoError(t, kavari.RegisterFuncOn(reg, &rtNamed{}, func(ctx context.Context, m *rtNamed) error {
			if calls.Add(1) == 1 {
				return errors.New("once")
			}
			return nil
		}))
		cfg := kavari.Config{Brokers: []string{"memory"}, Registry: reg, Logger: testLogger(),
			Consume: kavari.ConsumeConfig{GroupID: "g-rtn", CommitInterval: 100 * time.Millisecond,
				Retry: kavari.ConstantRetry(time.Millisecond, 1), RetryTopics: []time.Duration{time.Second, time.Minute}},
			Topics: kavari.TopicConfig{Create: true, Partitions: 2, Name: func(t string) string { return "dev-" + t }}}
		k, err := kavari.NewOnTransport(cfg, b.Transport(transport.Capabilities{}))
		require.NoError(t, err)
		require.NoError(t, k.Start(context.Background()))
		assert.ElementsMatch(t, []string{"dev-rtn", "dev-rtn.retry.1", "dev-rtn.retry.2"}, k.Health().Topics)
		_, err = k.Publish(context.Background(), &rtNamed{Key: "a"})
		require.NoError(t, err)
		waitFor(t, "the retry", func() bool { return calls.Load() == 2 })
		require.NoError(t, stopNow(t, k))
		n := 0
		for p := int32(0); p < 2; p++ {
			n += len(b.Records("dev-rtn.retry.1", p))
			assert.Empty(t, b.Records("rtn.retry.1", p))
		}
		assert.Equal(t, 1, n)
		for _, topic := range []string{"dev-rtn.dlq", "dev-rtn.retry.2"} {
			assert.Len(t, b.Records(topic, 1), 0, topic) // created, with the dead-letter topic's partitions
			assert.Len(t, b.Records(topic, 0), 0, topic)
		}
	})
}

// TestRetryTopicsStartChecksThem: Start fails, naming it, when a tier's
// topic is missing, as for a dead-letter topic.
func TestRetryTopicsStartChecksThem(t *testing.T) {
	b := engBroker(1)
	b.CreateTopic("eng.retry.1", 1)
	k := memKavari(t, b, transport.Capabilities{}, "g-rtmiss", func(ctx context.Context, m *engMsg) error { return nil }, rtConfig)
	err := k.Start(context.Background())
	var missing *kavari.MissingTopicsError
	require.ErrorAs(t, err, &missing)
	assert.Equal(t, []string{"eng.retry.2", "eng.retry.3"}, missing.Topics)
}

// TestRetryTopicsConfigValidation: New rejects bad tiers.
func TestRetryTopicsConfigValidation(t *testing.T) {
	for name, c := range map[string]struct {
		delays []time.Duration
		suffix string
		want   string
	}{
		"zero delay":     {[]time.Duration{time.Second, 0}, "", "Consume.RetryTopics[1]"},
		"negative delay": {[]time.Duration{-time.Second}, "", "Consume.RetryTopics[0]"},
		"too many tiers": {make([]time.Duration, 17), "", "at most 16"},
		"bad suffix":     {[]time.Duration{time.Second}, "/r", "Topics.RetrySuffix"},
		"dlq suffix":     {[]time.Duration{time.Second}, ".dlq", "is Topics.DeadLetterSuffix"},
	} {
		t.Run(name, func(t *testing.T) {
			for i := range c.delays {
				if name == "too many tiers" {
					c.delays[i] = time.Second
				}
			}
			_, err := kavari.New(kavari.Config{Brokers: []string{"localhost:9092"},
				Consume: kavari.ConsumeConfig{RetryTopics: c.delays}, Topics: kavari.TopicConfig{RetrySuffix: c.suffix}})
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.want)
		})
	}
}

// TestRetryTopicsRebalanceWhileATierWaits: a member holds a tier partition
// paused until its record is due; another member joins (the partitions
// are revoked and dealt again) before then. The record is handled once,
// not before it is due, and every partition is committed.
func TestRetryTopicsRebalanceWhileATierWaits(t *testing.T) {
	for name, caps := range map[string]transport.Capabilities{
		"eager":       {},
		"cooperative": {Cooperative: true, CommitMetadata: true},
	} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := engBroker(2)
				b.CreateTopic("eng.retry.1", 2)
				var log attemptLog
				h := func(ctx context.Context, m *engMsg) error {
					if log.add(m.N) == 1 && m.N == 1 {
						return errors.New("once")
					}
					return nil
				}
				one := func(c *kavari.Config) {
					c.Consume.RetryTopics = []time.Duration{time.Minute}
					c.Consume.Retry = kavari.ConstantRetry(time.Millisecond, 1)
				}
				k1 := memKavari(t, b, caps, "g-rtreb", h, one)
				b.Append(engRecord(0, "a", 1))
				require.NoError(t, k1.Start(context.Background()))
				waitFor(t, "the tier record", func() bool {
					return len(b.Records("eng.retry.1", 0))+len(b.Records("eng.retry.1", 1)) == 1
				})
				time.Sleep(10 * time.Second) // k1's feeder holds it, paused
				gen := b.Generation("g-rtreb")
				k2 := memKavari(t, b, caps, "g-rtreb", h, one)
				require.NoError(t, k2.Start(context.Background()))
				waitFor(t, "the rebalance", func() bool { return b.Generation("g-rtreb") > gen })
				waitFor(t, "the retried record", func() bool { return len(log.of(1)) == 2 })
				time.Sleep(5 * time.Second) // a duplicate would show now
				assert.Len(t, log.of(1), 2, "handled once in the tier")
				var due time.Time
				for p := int32(0); p < 2; p++ {
					for _, r := range b.Records("eng.retry.1", p) {
						due = rtDue(t, r)
						waitFor(t, "the tier committed", func() bool {
							o, _ := b.Committed("g-rtreb", transport.TopicPartition{Topic: "eng.retry.1", Partition: p})
							return o.Offset == 1
						})
					}
				}
				assert.False(t, log.of(1)[1].Before(due), "not before due")
				require.NoError(t, stopNow(t, k2))
				require.NoError(t, stopNow(t, k1))
			})
		})
	}
}

// TestRetryTopicsHealthShowsTheTiers: Health.RetryTiers shows, per tier,
// the records waiting in it and the due time the consumer holds its
// partition for; both clear once they were handled.
func TestRetryTopicsHealthShowsTheTiers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := rtBroker(1)
		var log attemptLog
		k := memKavari(t, b, transport.Capabilities{}, "g-rthealth", func(ctx context.Context, m *engMsg) error {
			if log.add(m.N) <= 2 {
				return errors.New("twice")
			}
			return nil
		}, rtConfig)
		for n := 0; n < 3; n++ {
			b.Append(engRecord(0, "k", n))
		}
		require.NoError(t, k.Start(context.Background()))
		waitFor(t, "the tier records", func() bool { return len(b.Records("eng.retry.1", 0)) == 3 })
		var tier kavari.RetryTierHealth
		waitFor(t, "Health to show tier 1", func() bool {
			for _, x := range k.Health().RetryTiers {
				if x.Tier == 1 {
					tier = x
				}
			}
			return tier.Waiting >= 1 && !tier.OldestDue.IsZero() // the lag as of the last fetch
		})
		assert.Equal(t, "eng.retry.1", tier.Topic)
		assert.Equal(t, "eng", tier.Main)
		assert.Equal(t, time.Second, tier.Delay)
		assert.Equal(t, rtDue(t, b.Records("eng.retry.1", 0)[0]), tier.OldestDue)
		assert.Len(t, k.Health().RetryTiers, 3, "every tier, with nothing waiting in 2 and 3")
		waitFor(t, "the tier handled", func() bool {
			for _, x := range k.Health().RetryTiers {
				if x.Tier == 1 && x.Waiting == 0 && x.OldestDue.IsZero() {
					return true
				}
			}
			return false
		})
		require.NoError(t, stopNow(t, k))
		for n := 0; n < 3; n++ {
			assert.Len(t, log.of(n), 3, "record %d", n)
		}
	})
}

// TestRetryTopicsTooLargeForTheTierIsDeadLettered: a record the retry
// topic refuses as too large is dead-lettered (in the smaller form a dead
// letter takes), not retried unchanged and not left holding the partition.
func TestRetryTopicsTooLargeForTheTierIsDeadLettered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := rtBroker(1)
		var tries atomic.Int64
		b.FailProduce = func(rec *transport.Record) error {
			if rec.Topic == "eng.retry.1" {
				tries.Add(1)
				return &transport.ProduceError{Kind: transport.TooLarge, Err: errors.New("MESSAGE_TOO_LARGE")}
			}
			if rec.Topic == "eng.dlq" && len(rec.Value) > 0 {
				return &transport.ProduceError{Kind: transport.TooLarge, Err: errors.New("MESSAGE_TOO_LARGE")}
			}
			return nil
		}
		k := memKavari(t, b, transport.Capabilities{}, "g-rtbig", func(ctx context.Context, m *engMsg) error {
			return errors.New("fails")
		}, rtConfig)
		b.Append(engRecord(0, "a", 1))
		require.NoError(t, k.Start(context.Background()))
		waitFor(t, "the partition committed", func() bool { return memCommitted(b, "g-rtbig", 0) == 1 })
		require.NoError(t, stopNow(t, k))
		assert.EqualValues(t, 1, tries.Load(), "not resent unchanged")
		assert.Empty(t, b.Records("eng.retry.1", 0))
		dls := b.Records("eng.dlq", 0)
		require.Len(t, dls, 1)
		h := rtHeaders(dls[0])
		assert.NotEmpty(t, h[kavari.HeaderTruncated], "the dead letter left the value out to fit")
		assert.Equal(t, "eng", h[kavari.HeaderOriginalTopic])
	})
}

// TestRetryTopicsHeldTierDoesNotHoldBackTheMainTopic: while a tier
// partition's head waits for its due time, its partition fetches again
// shortly before (dueLead) and its records pile up; on a transport that
// waits for backlogs that must not hold back the main topic: records
// published to it then are handled before the tier's head is due.
func TestRetryTopicsHeldTierDoesNotHoldBackTheMainTopic(t *testing.T) {
	for _, c := range []struct {
		name  string
		caps  transport.Capabilities
		due   time.Duration // the tier's records are due then
		batch int           // records per delivery
		main  time.Duration // main records are published then
	}{
		// Held paused, fetching again dueLead before, a record per delivery.
		{"backlog/long", transport.Capabilities{WaitsForBacklog: true}, 3 * time.Second, 1, 2500 * time.Millisecond},
		{"pause/long", transport.Capabilities{}, 3 * time.Second, 1, 2500 * time.Millisecond},
		// Due within dueLead: never paused; one delivery, to an idle
		// partition, fills the share.
		{"backlog/short", transport.Capabilities{WaitsForBacklog: true}, 800 * time.Millisecond, 64, 300 * time.Millisecond},
		{"pause/short", transport.Capabilities{}, 800 * time.Millisecond, 64, 300 * time.Millisecond},
	} {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := rtBroker(1)
				b.Batch = c.batch
				var due time.Time
				tier := func() {
					due = time.Now().Add(c.due)
					for n := 0; n < 40; n++ {
						rec := engRecord(0, "t"+strconv.Itoa(n), 1000+n)
						rec.Topic = "eng.retry.1"
						rec.Headers = append(rec.Headers,
							transport.Header{Key: kavari.HeaderRetryTier, Value: []byte("1")},
							transport.Header{Key: kavari.HeaderRetryDue, Value: []byte(due.UTC().Format(time.RFC3339Nano))})
						b.Append(rec)
					}
				}
				if c.batch == 1 {
					tier()
				}
				var mu sync.Mutex
				handled := map[int]time.Time{}
				k := memKavari(t, b, c.caps, "g-rtlead", func(ctx context.Context, m *engMsg) error {
					mu.Lock()
					handled[m.N] = time.Now()
					mu.Unlock()
					return nil
				}, rtConfig, func(c *kavari.Config) { c.Consume.MaxInFlight = 2; c.Consume.MaxBuffered = 8 })
				require.NoError(t, k.Start(context.Background()))
				if c.batch > 1 {
					// Delivered at once to an idle feeder (waiting in next).
					time.Sleep(100 * time.Millisecond)
					synctest.Wait()
					tier()
				}
				time.Sleep(c.main)
				for n := 0; n < 20; n++ {
					b.Append(engRecord(0, "m"+strconv.Itoa(n), n))
				}
				waitFor(t, "everything handled", func() bool {
					mu.Lock()
					defer mu.Unlock()
					return len(handled) == 60
				})
				require.NoError(t, stopNow(t, k))
				for n := 0; n < 20; n++ {
					assert.True(t, handled[n].Before(due), "main record %d handled at %v, the tier's head due %v", n, handled[n], due)
				}
				for n := 1000; n < 1040; n++ {
					assert.False(t, handled[n].Before(due), "tier record %d handled before due", n)
				}
			})
		})
	}
}

// TestRetryTopicsNamesAreChecked: New refuses a Topics.Name mapping whose
// retry topic names would be invalid (too long here), as it does for
// dead-letter topics.
func TestRetryTopicsNamesAreChecked(t *testing.T) {
	reg := kavari.NewRegistry()
	require.NoError(t, kavari.RegisterFuncOn(reg, &engMsg{}, func(context.Context, *engMsg) error { return nil }))
	long := strings.Repeat("x", 240)
	cfg := kavari.Config{Brokers: []string{"memory"}, Registry: reg,
		Consume: kavari.ConsumeConfig{RetryTopics: []time.Duration{time.Second}},
		Topics:  kavari.TopicConfig{Name: func(t string) string { return long + t }}} // 243 + ".dlq" fits, + ".retry.1" does not
	_, err := kavari.NewOnTransport(cfg, memory.NewBroker().Transport(transport.Capabilities{}))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "retry topic")
	cfg.Consume.RetryTopics = nil
	_, err = kavari.NewOnTransport(cfg, memory.NewBroker().Transport(transport.Capabilities{}))
	require.NoError(t, err, "without retry topics the name fits")
}

// TestRetryTopicsUnknownFailedHandlerRunsEveryHandler: a tier's record
// names handlers that failed it; when none of them is registered any more,
// every handler of the type runs (a duplicate rather than a record nobody
// handles).
func TestRetryTopicsUnknownFailedHandlerRunsEveryHandler(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := rtBroker(1)
		rec := engRecord(0, "a", 7)
		rec.Topic = "eng.retry.1"
		rec.Headers = append(rec.Headers,
			transport.Header{Key: kavari.HeaderRetryTier, Value: []byte("1")},
			transport.Header{Key: kavari.HeaderRetryHandlers, Value: []byte("*main.Renamed")})
		b.Append(rec)
		var got atomic.Int64
		k := memKavari(t, b, transport.Capabilities{}, "g-rtgone", func(ctx context.Context, m *engMsg) error {
			got.Add(int64(m.N))
			return nil
		}, rtConfig)
		require.NoError(t, k.Start(context.Background()))
		waitFor(t, "the tier committed", func() bool { return rtCommitted(b, "g-rtgone", "eng.retry.1") == 1 })
		require.NoError(t, stopNow(t, k))
		assert.EqualValues(t, 7, got.Load())
	})
}

// TestRetryTopicsBatchHandlerFailureMovesToTheTier: with retry topics, a
// record a batch handler names as failed (BatchFailed), after its in-place
// attempts alone, moves to the first tier as a single record's failure
// does, and is committed only then; in the tier the batch handler gets it
// in a batch of one, and it is handled there once, never dead-lettered.
// The batch's other records are handled at once.
func TestRetryTopicsBatchHandlerFailureMovesToTheTier(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := rtBroker(1)
		for i := 0; i < 10; i++ {
			b.Append(engRecord(0, "k"+strconv.Itoa(i), i))
		}
		var calls batchCalls
		var tiers sync.Map // N → Record.RetryTier of its successful call
		k := memBatchKavari(t, b, "g-rtb", func(ctx context.Context, ms []*engMsg) error {
			for i, m := range ms {
				if m.N != 5 {
					continue
				}
				r, ok := kavari.BatchRecordFromContext(ctx, i)
				require.True(t, ok)
				if r.Topic == "eng" {
					return calls.add(ms, kavari.BatchFailed(i, errors.New("bad row")))
				}
				tiers.Store(m.N, r.Topic)
			}
			return calls.add(ms, nil)
		}, rtConfig, func(c *kavari.Config) { c.Consume.MaxBatchRecords = 10 })
		require.NoError(t, k.Start(context.Background()))
		waitFor(t, "every partition committed", func() bool {
			return memCommitted(b, "g-rtb", 0) == 10 && rtCommitted(b, "g-rtb", "eng.retry.1") == 1
		})
		require.NoError(t, stopNow(t, k))
		assert.Empty(t, deadLettered(b), "a retriable failure goes to the tier, not the dead-letter topic")
		recs := b.Records("eng.retry.1", 0)
		require.Len(t, recs, 1)
		h := rtHeaders(recs[0])
		assert.Equal(t, "eng", h[kavari.HeaderOriginalTopic])
		assert.Equal(t, "5", h[kavari.HeaderOriginalOffset])
		assert.Equal(t, "2", h[kavari.HeaderAttempts], "the batch's attempt, then one alone (rtConfig: two in place)")
		assert.Contains(t, h[kavari.HeaderOriginalError], "bad row")
		handled := calls.handled()
		calls.mu.Lock()
		require.NotEmpty(t, calls.calls)
		assert.Equal(t, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, calls.calls[0], "BatchFailed(5): records 0-4 handled by the first call")
		for _, ns := range calls.calls[1:] {
			assert.False(t, slices.ContainsFunc(ns, func(n int) bool { return n < 5 }), "records 0-4 handed over again: %v", ns)
		}
		calls.mu.Unlock()
		for n := 5; n < 10; n++ {
			assert.Equal(t, 1, handled[n], "record %d handled once", n)
		}
		topic, _ := tiers.Load(5)
		assert.Equal(t, "eng.retry.1", topic, "record 5 handled in the tier")
		assert.Empty(t, b.Records("eng.retry.2", 0))
	})
}

// TestRetryTopicsBatchHandlerAlwaysFailingIsDeadLetteredAfterTheLastTier:
// a record a batch handler always fails goes through every tier (one
// attempt each, in a batch of one), then to the dead-letter topic with its
// history.
func TestRetryTopicsBatchHandlerAlwaysFailingIsDeadLetteredAfterTheLastTier(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := rtBroker(1)
		b.Append(engRecord(0, "a", 1))
		b.Append(engRecord(0, "b", 2))
		var calls batchCalls
		k := memBatchKavari(t, b, "g-rtbd", func(ctx context.Context, ms []*engMsg) error {
			for i, m := range ms {
				if m.N == 1 {
					return calls.add(ms, kavari.BatchFailed(i, errors.New("never")))
				}
			}
			return calls.add(ms, nil)
		}, rtConfig)
		require.NoError(t, k.Start(context.Background()))
		waitFor(t, "the dead letter", func() bool { return len(b.Records("eng.dlq", 0)) == 1 })
		waitFor(t, "every partition committed", func() bool {
			return memCommitted(b, "g-rtbd", 0) == 2 && rtCommitted(b, "g-rtbd", "eng.retry.3") == 1
		})
		require.NoError(t, stopNow(t, k))
		for _, topic := range []string{"eng.retry.1", "eng.retry.2", "eng.retry.3"} {
			assert.Len(t, b.Records(topic, 0), 1, topic)
		}
		dl := rtHeaders(b.Records("eng.dlq", 0)[0])
		assert.Equal(t, "eng", dl[kavari.HeaderOriginalTopic])
		assert.Equal(t, "0", dl[kavari.HeaderOriginalOffset])
		assert.Equal(t, "5", dl[kavari.HeaderAttempts], "two in place, then one per tier")
		assert.Len(t, strings.Split(dl[kavari.HeaderRetryHistory], ","), 3, "history %q", dl[kavari.HeaderRetryHistory])
		assert.Equal(t, 1, calls.handled()[2])
	})
}

// rtOrdered is a second type on the engine's topic, kept out of the retry
// topics (RetryInPlace).
type rtOrdered struct {
	kavari.Message `kavari:"topic=eng,key=Key,name=rtOrdered"`
	Key            string `json:"key"`
	N              int    `json:"n"`
}

// TestRetryTopicsRetryInPlaceKeepsATypeOut: with retry topics, a type
// registered with RetryInPlace is retried in place and then dead-lettered,
// never moved to a tier, while another type on the same topic moves.
func TestRetryTopicsRetryInPlaceKeepsATypeOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := rtBroker(1)
		reg := kavari.NewRegistry()
		var ordered, moved atomic.Int64
		require.NoError(t, kavari.RegisterFuncOn(reg, &rtOrdered{}, func(ctx context.Context, m *rtOrdered) error {
			ordered.Add(1)
			return errors.New("ordered fails")
		}))
		require.NoError(t, reg.RetryInPlace(&rtOrdered{}))
		require.NoError(t, kavari.RegisterFuncOn(reg, &engMsg{}, func(ctx context.Context, m *engMsg) error {
			if r, _ := kavari.RecordFromContext(ctx); r.Topic == "eng" {
				return errors.New("fails in the main topic")
			}
			moved.Add(1)
			return nil
		}))
		cfg := kavari.Config{Brokers: []string{"memory"}, Registry: reg, Logger: testLogger(),
			Consume: kavari.ConsumeConfig{GroupID: "g-rtip", CommitInterval: 100 * time.Millisecond}}
		rtConfig(&cfg)
		k, err := kavari.NewOnTransport(cfg, b.Transport(transport.Capabilities{}))
		require.NoError(t, err)
		b.Append(transport.Record{Topic: "eng", Key: []byte("a"), Value: []byte(`{"key":"a","n":1}`),
			Headers: []transport.Header{{Key: kavari.HeaderMsgType, Value: []byte("rtOrdered")}}})
		b.Append(engRecord(0, "b", 2))
		require.NoError(t, k.Start(context.Background()))
		waitFor(t, "both records finished", func() bool {
			return memCommitted(b, "g-rtip", 0) == 2 && rtCommitted(b, "g-rtip", "eng.retry.1") == 1
		})
		require.NoError(t, stopNow(t, k))
		assert.EqualValues(t, 2, ordered.Load(), "rtOrdered: its two in-place attempts (rtConfig), no tier")
		assert.EqualValues(t, 1, moved.Load(), "engMsg: handled in its tier")
		recs := b.Records("eng.retry.1", 0)
		require.Len(t, recs, 1, "only engMsg moved")
		assert.Equal(t, "engMsg", rtHeaders(recs[0])[kavari.HeaderMsgType])
		assert.Equal(t, map[string]string{"0": "handler/2"}, deadLettered(b), "rtOrdered dead-lettered after its in-place attempts")

		// Once a consumer on it started, the registry is frozen.
		assert.ErrorIs(t, reg.RetryInPlace(&rtOrdered{}), kavari.ErrFrozen)
	})
}

// TestRetryTopicsRetryInPlaceBatchHandler: a batch handler's type kept out
// of the retry topics dead-letters the record it names failed after its
// in-place attempts, as without retry topics.
func TestRetryTopicsRetryInPlaceBatchHandler(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := rtBroker(1)
		for i := 0; i < 4; i++ {
			b.Append(engRecord(0, "k"+strconv.Itoa(i), i))
		}
		k := memBatchKavari(t, b, "g-rtipb", func(ctx context.Context, ms []*engMsg) error {
			for i, m := range ms {
				if m.N == 2 {
					return kavari.BatchFailed(i, errors.New("bad row"))
				}
			}
			return nil
		}, rtConfig, func(c *kavari.Config) {
			c.Consume.MaxBatchRecords = 4
			require.NoError(t, c.Registry.RetryInPlace(&engMsg{}))
		})
		require.NoError(t, k.Start(context.Background()))
		waitCommitted(b, "g-rtipb", 0, 4)
		require.NoError(t, stopNow(t, k))
		assert.Equal(t, map[string]string{"2": "handler/2"}, deadLettered(b))
		assert.Empty(t, b.Records("eng.retry.1", 0))
	})
}

// TestRetryTopicsMovesPendingTogetherGoOutAsOneWrite: while a move's write
// is under way, the moves that come meanwhile wait and go out together in
// the next write (a write per move would queue behind the one under way).
func TestRetryTopicsMovesPendingTogetherGoOutAsOneWrite(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := rtBroker(1)
		const n = 20
		for i := 0; i < n; i++ {
			b.Append(engRecord(0, "k"+strconv.Itoa(i), i))
		}
		release := make(chan struct{})
		var first atomic.Bool
		b.FailProduce = func(rec *transport.Record) error {
			if rec.Topic == "eng.retry.1" && first.CompareAndSwap(false, true) {
				<-release // the first move's write is under way until then
			}
			return nil
		}
		var failed atomic.Int64
		k := memKavari(t, b, transport.Capabilities{}, "g-rtmv", func(ctx context.Context, m *engMsg) error {
			if r, _ := kavari.RecordFromContext(ctx); r.Topic == "eng" {
				if r.Attempt == 2 {
					failed.Add(1)
				}
				return errors.New("fails in the main topic")
			}
			return nil
		}, rtConfig)
		require.NoError(t, k.Start(context.Background()))
		waitFor(t, "every record failed in place", func() bool { return failed.Load() == n })
		synctest.Wait() // the moves are pending
		close(release)
		waitFor(t, "every partition committed", func() bool {
			return memCommitted(b, "g-rtmv", 0) == n && rtCommitted(b, "g-rtmv", "eng.retry.1") == n
		})
		require.NoError(t, stopNow(t, k))
		assert.Len(t, b.Records("eng.retry.1", 0), n)
		assert.EqualValues(t, 2, b.Writes("eng.retry.1"), "the first move alone, the %d that came meanwhile in one write", n-1)
	})
}

// appendBadThen appends to b's partition 0 a record of key "bad" (n 0),
// then n records of keys k1..kn, of key "bad" instead where ofBad(i).
func appendBadThen(b *memory.Broker, n int, ofBad func(i int) bool) {
	b.Append(engRecord(0, "bad", 0))
	for i := 1; i <= n; i++ {
		key := "k" + strconv.Itoa(i)
		if ofBad(i) {
			key = "bad"
		}
		b.Append(engRecord(0, key, i))
	}
}

// holdTierWrites makes every write to the first tier's topic wait until
// release is called (once or more; the test defers it too, so that a
// failing test does not leave the write blocked).
func holdTierWrites(b *memory.Broker) (release func()) {
	ch := make(chan struct{})
	var once sync.Once
	b.FailProduce = func(rec *transport.Record) error {
		if rec.Topic == "eng.retry.1" {
			<-ch // the move's write is under way until then
		}
		return nil
	}
	return func() { once.Do(func() { close(ch) }) }
}

// commitsOnceReleased checks, for a client k on group whose record 0 moves
// to the first tier while its write is held: nothing is committed past it;
// once release lets the write through, the partition commits its n+1
// records, and the tier holds the one record.
func commitsOnceReleased(t *testing.T, b *memory.Broker, k *kavari.Client, group string, n int, release func()) {
	t.Helper()
	assert.Less(t, memCommitted(b, group, 0), int64(1), "committed past a record whose move is not acknowledged")
	release()
	waitFor(t, "the partition committed", func() bool { return memCommitted(b, group, 0) == int64(n+1) })
	require.NoError(t, stopNow(t, k))
	assert.Len(t, b.Records("eng.retry.1", 0), 1)
}

// pendingMove starts a client on b (one partition, its tiers) with
// MaxInFlight and MaxBuffered, no in-place retry, over a record of key
// "bad", which fails in the main topic, then n records of other keys (of
// key "bad" too when sameKey); the write of its move to the first tier
// waits until release is called. healthy counts the other records handled.
func pendingMove(t *testing.T, b *memory.Broker, group string, n, maxInFlight, maxBuffered int, sameKey bool) (k *kavari.Client, healthy *atomic.Int64, release func()) {
	appendBadThen(b, n, func(int) bool { return sameKey })
	release = holdTierWrites(b)
	t.Cleanup(release)
	healthy = new(atomic.Int64)
	k = memKavari(t, b, transport.Capabilities{}, group, func(ctx context.Context, m *engMsg) error {
		if r, _ := kavari.RecordFromContext(ctx); r.Topic == "eng" && m.Key == "bad" && m.N == 0 {
			return errors.New("fails in the main topic")
		}
		healthy.Add(1)
		return nil
	}, rtConfig, func(c *kavari.Config) {
		c.Consume.MaxInFlight, c.Consume.MaxBuffered = maxInFlight, maxBuffered
		c.Consume.Retry = kavari.NoRetry()
	})
	require.NoError(t, k.Start(context.Background()))
	return k, healthy, release
}

// TestRetryTopicsPendingMoveHoldsNoRunSlot: a record whose move to a tier is
// waiting for its write gives its run slot (MaxInFlight) back, as a record
// waiting between in-place retries does: with MaxInFlight 1 and the move's
// write held, the records of other keys are handled meanwhile, and the
// partition commits past them only once the move was acknowledged.
func TestRetryTopicsPendingMoveHoldsNoRunSlot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := rtBroker(1)
		const n = 10
		k, healthy, release := pendingMove(t, b, "g-rtslot", n, 1, 64, false)
		waitFor(t, "the other keys' records handled while the move is pending", func() bool { return healthy.Load() == n })
		synctest.Wait()
		commitsOnceReleased(t, b, k, "g-rtslot", n, release)
	})
}

// TestRetryTopicsPendingMoveFreesItsKey: a record that fails for a retry
// tier leaves its key's order, so its key's later records do not wait for
// its move's write: with the write held, they are all handled, and the
// partition commits past them only once the move was acknowledged.
func TestRetryTopicsPendingMoveFreesItsKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := rtBroker(1)
		const n = 10
		k, healthy, release := pendingMove(t, b, "g-rtkey", n, 4, 64, true)
		synctest.Wait()
		assert.EqualValues(t, n, healthy.Load(), "the key's later records handled while its failed record's move is pending")
		commitsOnceReleased(t, b, k, "g-rtkey", n, release)
		assert.EqualValues(t, n, healthy.Load())
	})
}

// TestRetryTopicsBatchPendingMoveHoldsNothing: a record a batch handler
// gave up on moves to a tier without holding its run slot or its key:
// with MaxInFlight 1 and the move's write held, the records after it, of
// its key too, are handled meanwhile, and the partition commits past the
// moving record only once its write was acknowledged.
func TestRetryTopicsBatchPendingMoveHoldsNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := rtBroker(1)
		const n = 12
		appendBadThen(b, n, func(i int) bool { return i%3 == 0 })
		release := holdTierWrites(b)
		defer release() // also when the test fails before it released the write
		var healthy atomic.Int64
		k := memBatchKavari(t, b, "g-rtbmv", func(ctx context.Context, ms []*engMsg) error {
			for i, m := range ms {
				if m.N == 0 {
					healthy.Add(int64(i))
					return kavari.BatchFailed(i, errors.New("bad row"))
				}
			}
			healthy.Add(int64(len(ms)))
			return nil
		}, rtConfig, func(c *kavari.Config) {
			c.Consume.MaxInFlight, c.Consume.MaxBuffered, c.Consume.MaxBatchRecords = 1, 64, 4
			c.Consume.Retry = kavari.NoRetry()
		})
		require.NoError(t, k.Start(context.Background()))
		waitFor(t, "the records after the moving one handled while its write is held", func() bool { return healthy.Load() == n })
		synctest.Wait()
		commitsOnceReleased(t, b, k, "g-rtbmv", n, release)
	})
}

// TestRetryTopicsPendingMoveLeavesTheWindow: while a record's move to a tier
// waits for its write, the records after it keep coming beyond the
// partition's share of open records (the window starts after the moving
// record), up to four shares open; the partition commits past the moving
// record only once its write was acknowledged.
func TestRetryTopicsPendingMoveLeavesTheWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := rtBroker(1)
		const n = 40
		// One main partition: its share is all of MaxBuffered, 8 open
		// records (the tiers' 3 partitions do not divide it: counted, they
		// would make it 4), 32 while a record moves.
		k, healthy, release := pendingMove(t, b, "g-rtwin", n, 4, 8, false)
		waitFor(t, "31 records after the moving one handled", func() bool { return healthy.Load() >= 31 })
		synctest.Wait()
		assert.EqualValues(t, 31, healthy.Load(), "the partition runs four shares (32 open records) ahead of its commits, no further")
		h := k.Health()
		for _, ph := range h.Partitions {
			if ph.Topic == "eng" {
				assert.Equal(t, 32, ph.Open, "open records: the moving one and the 31 after it")
			}
		}
		commitsOnceReleased(t, b, k, "g-rtwin", n, release)
		assert.EqualValues(t, n, healthy.Load())
	})
}
