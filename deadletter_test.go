package kavari_test

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
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
)

// TestDeadLetterClipsErrorText: what kavari adds to a dead letter is bounded.
// A validation error listing thousands of fields keeps its first
// MaxErrorText bytes and says how much was left out.
func TestDeadLetterClipsErrorText(t *testing.T) {
	rec := &kafka.Message{Topic: "kt-orders", Partition: 1, Offset: 5, Key: []byte("k"), Value: []byte(`{}`)}
	long := strings.Repeat("Items[1234].N: must be gt 0; ", 40_000) // about 1.2 MB
	dl := kavari.DeadLetterRecord(rec, "kt-orders.dlq", kavari.KindValidation, "", 1, errors.New(long))
	got := ktOne(t, ktHeaderMap(dl), kavari.HeaderOriginalError)
	require.LessOrEqual(t, len(got), kavari.MaxErrorText, "original_error is bounded")
	assert.True(t, strings.HasPrefix(got, long[:1000]), "the start of the error is kept")
	assert.Contains(t, got, "bytes clipped", "the clipping is marked")
	short := kavari.DeadLetterRecord(rec, "kt-orders.dlq", kavari.KindValidation, "", 1, errors.New("id: required"))
	assert.Equal(t, "id: required", ktOne(t, ktHeaderMap(short), kavari.HeaderOriginalError), "short errors are untouched")
}

type bigDLItem struct {
	N int `json:"n" validate:"gt=0"`
}

type bigDLMsg struct {
	kavari.Message `kavari:"topic=kavari-test-bigdl,key=ID"`
	Run            string      `json:"run"`
	ID             string      `json:"id"`
	Items          []bigDLItem `json:"items" validate:"dive"`
}

// createTopic creates topic with partitions and topic configs cfg, unless it
// exists.
func createTopic(t *testing.T, brokers []string, topic string, partitions int, cfg map[string]string) {
	t.Helper()
	tc := kafka.TopicConfig{Topic: topic, NumPartitions: partitions, ReplicationFactor: 1}
	for k, v := range cfg {
		tc.ConfigEntries = append(tc.ConfigEntries, kafka.ConfigEntry{ConfigName: k, ConfigValue: v})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 30 * time.Second}
	resp, err := c.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{tc}})
	require.NoError(t, err)
	if e := resp.Errors[topic]; e != nil && !errors.Is(e, kafka.TopicAlreadyExists) {
		t.Fatalf("create %s: %v", topic, e)
	}
}

// committedOffset returns group's committed offset of partition 0 of topic
// (-1 when none).
func committedOffset(t *testing.T, brokers []string, group, topic string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 30 * time.Second}
	resp, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: {0}}})
	if err != nil || resp.Error != nil || len(resp.Topics[topic]) == 0 {
		return -1
	}
	return resp.Topics[topic][0].CommittedOffset
}

// writeRaw writes recs to topic as they are, in order. A topic just created
// may be unknown to the broker for a moment: that is retried.
func writeRaw(t *testing.T, brokers []string, topic string, recs ...kafka.Message) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond, BatchBytes: 4 << 20}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, r := range recs {
		for {
			err := w.WriteMessages(ctx, r)
			if errors.Is(err, kafka.UnknownTopicOrPartition) && ctx.Err() == nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			require.NoError(t, err)
			break
		}
	}
}

// TestOversizedDeadLettersDegradeAndThePartitionKeepsCommitting: with a
// dead-letter topic that takes at most 256 KiB, a record whose 300 KB header
// makes its dead letter too large is dead-lettered without the value and
// without that header (both named in headers), a record failing validation
// on 20,000 fields is dead-lettered whole with its error text clipped, and
// the partition commits past both.
func TestOversizedDeadLettersDegradeAndThePartitionKeepsCommitting(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("run")
	const topic = "kavari-test-bigdl"
	createTopic(t, brokers, topic, 1, nil)
	createTopic(t, brokers, topic+".dlq", 1, map[string]string{"max.message.bytes": "262144"})
	reg := kavari.NewRegistry()
	var handled atomic.Int64
	require.NoError(t, kavari.RegisterFuncOn(reg, &bigDLMsg{}, func(ctx context.Context, m *bigDLMsg) error {
		if m.Run != run {
			return nil
		}
		if m.ID == "hdr" {
			return kavari.Permanent(errors.New("refused"))
		}
		handled.Add(1)
		return nil
	}))
	group := testenv.ID("g")
	logs := &longestLine{}
	k := newKavari(t, reg, brokers, func(c *kavari.Config) {
		c.Consume.GroupID = group
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	require.NoError(t, k.Start(context.Background()))

	typ := kafka.Header{Key: kavari.HeaderMsgType, Value: []byte("bigDLMsg")}
	val := func(id string, items int, n int) []byte {
		var b strings.Builder
		b.WriteString(`{"run":"` + run + `","id":"` + id + `","items":[`)
		for i := range items {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(`{"n":` + strconv.Itoa(n) + `}`)
		}
		b.WriteString(`]}`)
		return []byte(b.String())
	}
	huge := kafka.Header{Key: "x-huge", Value: []byte(strings.Repeat("h", 300_000))}
	invalid := val("many", 20_000, 0)
	writeRaw(t, brokers, topic,
		kafka.Message{Key: []byte("g0"), Value: val("g0", 1, 1), Headers: []kafka.Header{typ}},
		kafka.Message{Key: []byte(run + "-hdr"), Value: val("hdr", 1, 1), Headers: []kafka.Header{typ, {Key: "x-small", Value: []byte("s")}, huge}},
		kafka.Message{Key: []byte(run + "-many"), Value: invalid, Headers: []kafka.Header{typ}},
		kafka.Message{Key: []byte("g1"), Value: val("g1", 1, 1), Headers: []kafka.Header{typ}},
	)
	dl := readTopic(t, brokers, topic+".dlq", 2, func(m kafka.Message) bool { return strings.HasPrefix(string(m.Key), run+"-") })
	byKey := map[string]kafka.Message{}
	for _, m := range dl {
		byKey[strings.TrimPrefix(string(m.Key), run+"-")] = m
	}
	hdr, many := byKey["hdr"], byKey["many"]
	assert.Empty(t, hdr.Value, "the value is left out")
	assert.Equal(t, strconv.Itoa(len(val("hdr", 1, 1))), header(hdr, kavari.HeaderTruncated))
	assert.Equal(t, "x-huge", header(hdr, kavari.HeaderDroppedHeaders))
	assert.Empty(t, header(hdr, "x-huge"))
	assert.Equal(t, "s", header(hdr, "x-small"), "small original headers are kept")
	assert.Equal(t, "handler", header(hdr, kavari.HeaderErrorKind))
	assert.Equal(t, invalid, many.Value, "a dead letter that fits keeps its value")
	assert.Equal(t, "validation", header(many, kavari.HeaderErrorKind))
	assert.LessOrEqual(t, len(header(many, kavari.HeaderOriginalError)), kavari.MaxErrorText)
	assert.Contains(t, header(many, kavari.HeaderOriginalError), "bytes clipped")
	eventually(t, 60*time.Second, func() bool { return handled.Load() == 2 }, "good records handled: %d", handled.Load())
	eventually(t, 60*time.Second, func() bool { return committedOffset(t, brokers, group, topic) == 4 },
		"the partition did not commit past the dead letters: committed %d", committedOffset(t, brokers, group, topic))
	assert.Less(t, logs.max(), 4096, "log lines stay bounded")
}

// longestLine is an io.Writer for a slog handler that remembers the longest
// line written.
type longestLine struct {
	mu      sync.Mutex
	longest int
}

func (l *longestLine) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.longest = max(l.longest, len(p))
	return len(p), nil
}

func (l *longestLine) max() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.longest
}

type tinyDLMsg struct {
	kavari.Message `kavari:"topic=kavari-test-tinydl,key=ID"`
	Run            string `json:"run"`
	ID             string `json:"id"`
}

// TestUnwritableDeadLetterHoldsThePartitionAndHealthSaysWhy: when even the
// smallest dead letter is too large for the dead-letter topic, kavari stops
// trying (it cannot get smaller), does not commit past the record, and Health
// shows the partition stuck at that record with the reason. Records after it
// are still handled.
func TestUnwritableDeadLetterHoldsThePartitionAndHealthSaysWhy(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("run")
	const topic = "kavari-test-tinydl"
	createTopic(t, brokers, topic, 1, nil)
	createTopic(t, brokers, topic+".dlq", 1, map[string]string{"max.message.bytes": "100"})
	reg := kavari.NewRegistry()
	var handled atomic.Int64
	require.NoError(t, kavari.RegisterFuncOn(reg, &tinyDLMsg{}, func(ctx context.Context, m *tinyDLMsg) error {
		if m.Run == run {
			handled.Add(1)
		}
		return nil
	}))
	group := testenv.ID("g")
	k := newKavari(t, reg, brokers, func(c *kavari.Config) { c.Consume.GroupID = group })
	require.NoError(t, k.Start(context.Background()))
	typ := []kafka.Header{{Key: kavari.HeaderMsgType, Value: []byte("tinyDLMsg")}}
	good := func(id string) []byte { return []byte(`{"run":"` + run + `","id":"` + id + `"}`) }
	writeRaw(t, brokers, topic,
		kafka.Message{Key: []byte("g0"), Value: good("g0"), Headers: typ},
		kafka.Message{Key: []byte("poison"), Value: good("poison"), Headers: []kafka.Header{{Key: kavari.HeaderMsgType, Value: []byte("nope")}}},
		kafka.Message{Key: []byte("g2"), Value: good("g2"), Headers: typ},
	)
	eventually(t, 60*time.Second, func() bool { return handled.Load() == 2 }, "good records handled: %d", handled.Load())
	var stuck kavari.PartitionHealth
	eventually(t, 60*time.Second, func() bool {
		for _, p := range k.Health().Partitions {
			if p.Topic == topic && p.Stuck != "" {
				stuck = p
				return true
			}
		}
		return false
	}, "Health shows no stuck partition: %+v", k.Health().Partitions)
	assert.Contains(t, stuck.Stuck, "too large")
	assert.Equal(t, int64(1), stuck.OldestOffset, "stuck at the record that could not be dead-lettered")
	assert.Equal(t, "poison", stuck.OldestKey)
	assert.Equal(t, 2, stuck.Open, "the stuck record and the one handled after it")
	eventually(t, 60*time.Second, func() bool { return committedOffset(t, brokers, group, topic) == 1 },
		"committed %d, want 1: up to the stuck record", committedOffset(t, brokers, group, topic))
	h := k.Health()
	assert.True(t, h.Connected)
}

// TestDeadLetterDegradesInSteps: each smaller form leaves out more of the
// original record and says what, and is smaller than the one before.
func TestDeadLetterDegradesInSteps(t *testing.T) {
	rec := &kafka.Message{
		Topic: "kt-orders", Partition: 2, Offset: 9, Key: []byte("k-1"), Value: []byte(strings.Repeat("v", 5000)),
		Headers: []kafka.Header{
			{Key: kavari.HeaderMsgType, Value: []byte("order.placed")},
			{Key: "x-big", Value: []byte(strings.Repeat("b", 2000))},
			{Key: "x-small", Value: []byte("s")},
			{Key: "x-bigger", Value: []byte(strings.Repeat("B", 9000))},
			{Key: kavari.HeaderDroppedHeaders, Value: []byte("from an earlier dead letter")},
		},
	}
	cause := errors.New(strings.Repeat("e", 10_000))
	size := func(m kafka.Message) int {
		n := len(m.Key) + len(m.Value)
		for _, h := range m.Headers {
			n += len(h.Key) + len(h.Value)
		}
		return n
	}
	var forms [4]kafka.Message
	for f := range forms {
		forms[f] = kavari.DeadLetterForm(rec, "kt-orders.dlq", kavari.KindHandler, "*h", 3, cause, f)
		hs := ktHeaderMap(forms[f])
		assert.Equal(t, rec.Key, forms[f].Key, "form %d keeps the key", f)
		assert.Equal(t, "9", ktOne(t, hs, kavari.HeaderOriginalOffset), "form %d", f)
		assert.Equal(t, "handler", ktOne(t, hs, kavari.HeaderErrorKind), "form %d", f)
		assert.LessOrEqual(t, len(ktOne(t, hs, kavari.HeaderOriginalError)), kavari.MaxErrorText, "form %d", f)
		if f > 0 {
			assert.Less(t, size(forms[f]), size(forms[f-1]), "form %d is smaller than form %d", f, f-1)
		}
	}
	full, noValue, noBig, smallest := ktHeaderMap(forms[0]), ktHeaderMap(forms[1]), ktHeaderMap(forms[2]), ktHeaderMap(forms[3])
	assert.Equal(t, rec.Value, forms[0].Value)
	assert.NotContains(t, full, kavari.HeaderTruncated)
	assert.NotContains(t, full, kavari.HeaderDroppedHeaders, "an earlier dead letter's list is not carried over")
	assert.Len(t, full["x-bigger"], 1)

	assert.Empty(t, forms[1].Value)
	assert.Equal(t, "5000", ktOne(t, noValue, kavari.HeaderTruncated))
	assert.Len(t, noValue["x-bigger"], 1, "form 1 keeps the headers")

	assert.Equal(t, "x-big,x-bigger", ktOne(t, noBig, kavari.HeaderDroppedHeaders))
	assert.NotContains(t, noBig, "x-big")
	assert.Equal(t, "s", ktOne(t, noBig, "x-small"))
	assert.Equal(t, "order.placed", ktOne(t, noBig, kavari.HeaderMsgType))
	assert.Equal(t, "5000", ktOne(t, noBig, kavari.HeaderTruncated))

	assert.Equal(t, "*", ktOne(t, smallest, kavari.HeaderDroppedHeaders))
	assert.NotContains(t, smallest, "x-small")
	assert.NotContains(t, smallest, kavari.HeaderMsgType)
	assert.LessOrEqual(t, len(ktOne(t, smallest, kavari.HeaderOriginalError)), 256)
	assert.Contains(t, ktOne(t, smallest, kavari.HeaderOriginalError), "bytes clipped")
	assert.Equal(t, "*h", ktOne(t, smallest, kavari.HeaderHandler))
}
