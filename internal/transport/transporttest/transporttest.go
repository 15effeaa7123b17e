// Package transporttest is the conformance suite every transport adapter
// passes: the behaviour kavari's engine relies on, checked against a broker.
// An adapter's test calls [Run] with the adapter and the brokers
// internal/testenv chose.
package transporttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/internal/transport"
)

// Timeouts of the suite: generous bounds for conditions to become true, not
// measurements.
const (
	waitTimeout = 60 * time.Second
	opTimeout   = 30 * time.Second
)

// Run runs the suite against tr on brokers. Group behaviour that only some
// clients have (cooperative rebalancing, static membership, commit
// metadata) is checked when tr's Capabilities say so.
func Run(t *testing.T, tr transport.Adapter, brokers []string) {
	RunWith(t, tr, brokers, Options{})
}

// Options adjusts the suite to a group protocol.
type Options struct {
	// MemberEpochs says Generation.ID is a member's own epoch (the KIP-848
	// protocol), not the group's generation: generations of different
	// members are then not compared.
	MemberEpochs bool
	// Embedded says the broker is kfake, which rebalances when a static
	// member rejoins: StaticRejoin is skipped.
	Embedded bool
}

// RunWith is Run with options.
func RunWith(t *testing.T, tr transport.Adapter, brokers []string, o Options) {
	s := &suite{tr: tr, brokers: brokers, caps: tr.Capabilities(), o: o}
	t.Run("RoundTrip", s.testRoundTrip)
	t.Run("PartitionerAgreement", s.testPartitioner)
	t.Run("TooLarge", s.testTooLarge)
	t.Run("UnknownTopic", s.testUnknownTopic)
	t.Run("Admin", s.testAdmin)
	t.Run("CommitResume", s.testCommitResume)
	t.Run("StartLatest", s.testStartLatest)
	t.Run("StartLatestFixedAtAssigned", s.testStartLatestFixed)
	t.Run("OutOfRange", s.testOutOfRange)
	t.Run("Rebalance", s.testRebalance)
	t.Run("PauseResume", s.testPauseResume)
	t.Run("CloseLeavesPromptly", s.testCloseLeaves)
	if s.caps.CommitMetadata && !o.Embedded {
		t.Run("MetadataTooLarge", s.testMetadataTooLarge) // kfake has no offset.metadata.max.bytes
	}
	if s.caps.StaticMembership {
		t.Run("StaticRejoin", s.testStaticRejoin)
	}
	if s.caps.WaitsForBacklog {
		t.Run("BacklogLeavesFetchedRecords", s.testBacklogLeavesFetched)
	}
	if s.caps.HeartbeatsDuringDrain {
		t.Run("DrainBeyondSession", s.testDrainBeyondSession)
		t.Run("CloseDrainBeyondSession", s.testCloseDrainBeyondSession)
	}
}

// RunStart runs the cases of where a group with no committed offset
// starts, which need nothing of a Kafka broker but topics, producing and a
// group: the in-memory transport's tests run them (brokers may be nil).
func RunStart(t *testing.T, tr transport.Adapter, brokers []string) {
	s := &suite{tr: tr, brokers: brokers, caps: tr.Capabilities()}
	t.Run("StartLatest", s.testStartLatest)
	t.Run("StartLatestFixedAtAssigned", s.testStartLatestFixed)
}

type suite struct {
	tr      transport.Adapter
	brokers []string
	caps    transport.Capabilities
	o       Options
}

// Config returns the suite's base configuration for brokers.
func Config(brokers []string) transport.Config {
	return transport.Config{
		Brokers:           brokers,
		ClientID:          "kavari-conformance",
		Partitioner:       transport.Murmur2,
		StartOffset:       transport.Earliest,
		SessionTimeout:    10 * time.Second,
		RebalanceTimeout:  20 * time.Second,
		HeartbeatInterval: 500 * time.Millisecond,
	}
}

func (s *suite) cfg() transport.Config { return Config(s.brokers) }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	t.Cleanup(cancel)
	return ctx
}

// topic creates a fresh topic with n partitions.
func (s *suite) topic(t *testing.T, n int) string {
	t.Helper()
	adm, err := s.tr.NewAdmin(s.cfg())
	if err != nil {
		t.Fatalf("NewAdmin: %v", err)
	}
	defer adm.Close()
	name := testenv.ID("conf")
	if err := adm.CreateTopics(ctxT(t), n, -1, name); err != nil {
		t.Fatalf("CreateTopics(%s): %v", name, err)
	}
	return name
}

func (s *suite) producer(t *testing.T, cfg transport.Config) transport.Producer {
	t.Helper()
	p, err := s.tr.NewProducer(cfg)
	if err != nil {
		t.Fatalf("NewProducer: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// produce writes recs and fails t unless every one was acknowledged.
func produce(t *testing.T, p transport.Producer, recs ...*transport.Record) {
	t.Helper()
	if errs := p.Produce(ctxT(t), recs); errs != nil {
		t.Fatalf("Produce: %v", errs)
	}
}

// KeyFor returns a key that kafka-go's balancer for part puts on partition
// want of n partitions.
func KeyFor(part transport.Partitioner, want, n int) []byte {
	for i := 0; ; i++ {
		k := fmt.Appendf(nil, "key-%d", i)
		if Expected(part, k, n) == want {
			return k
		}
	}
}

// Expected is the partition kafka-go's Murmur2Balancer or CRC32Balancer
// picks for key among n partitions: the reference both adapters follow.
func Expected(part transport.Partitioner, key []byte, n int) int {
	parts := make([]int, n)
	for i := range parts {
		parts[i] = i
	}
	msg := kafka.Message{Key: key}
	if part == transport.CRC32 {
		return kafka.CRC32Balancer{}.Balance(msg, parts...)
	}
	return kafka.Murmur2Balancer{}.Balance(msg, parts...)
}

func (s *suite) testRoundTrip(t *testing.T) {
	topic := s.topic(t, 3)
	p := s.producer(t, s.cfg())
	at := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	var sent []*transport.Record
	for i := range 6 {
		sent = append(sent, &transport.Record{
			Topic: topic,
			Key:   fmt.Appendf(nil, "k-%d", i),
			Value: fmt.Appendf(nil, `{"n":%d}`, i),
			Headers: []transport.Header{
				{Key: "msg_type", Value: []byte("t.x")},
				{Key: "empty", Value: nil},
				{Key: "msg_type", Value: []byte("dup")},
			},
			Time: at.Add(time.Duration(i) * time.Millisecond),
		})
	}
	sent[5].Key = nil // an unkeyed record goes somewhere too
	produce(t, p, sent...)
	byPos := map[[2]int64]*transport.Record{}
	for _, r := range sent {
		if r.Partition < 0 || r.Partition >= 3 || r.Offset < 0 {
			t.Fatalf("produced record has partition %d offset %d", r.Partition, r.Offset)
		}
		if r.Key != nil && int(r.Partition) != Expected(transport.Murmur2, r.Key, 3) {
			t.Errorf("key %q on partition %d, kafka-go's Murmur2Balancer says %d", r.Key, r.Partition, Expected(transport.Murmur2, r.Key, 3))
		}
		pos := [2]int64{int64(r.Partition), r.Offset}
		if byPos[pos] != nil {
			t.Fatalf("two records at partition %d offset %d", r.Partition, r.Offset)
		}
		byPos[pos] = r
	}

	cfg := s.cfg()
	cfg.GroupID, cfg.Topics = testenv.ID("conf-g"), []string{topic}
	m := s.join(t, cfg)
	waitFor(t, "every record delivered", func() bool { return m.h.count(topic) >= len(sent) })
	for _, got := range m.h.all(topic) {
		want := byPos[[2]int64{int64(got.Partition), got.Offset}]
		if want == nil {
			t.Errorf("unexpected record at %d/%d", got.Partition, got.Offset)
			continue
		}
		if got.Topic != topic || !bytes.Equal(got.Key, want.Key) || !bytes.Equal(got.Value, want.Value) || !got.Time.Equal(want.Time) {
			t.Errorf("record %d/%d = %q %q %q %v, want %q %q %q %v", got.Partition, got.Offset,
				got.Topic, got.Key, got.Value, got.Time, topic, want.Key, want.Value, want.Time)
		}
		if len(got.Headers) != len(want.Headers) {
			t.Errorf("record %d/%d headers %v, want %v", got.Partition, got.Offset, got.Headers, want.Headers)
			continue
		}
		for i, h := range got.Headers {
			if h.Key != want.Headers[i].Key || !bytes.Equal(h.Value, want.Headers[i].Value) {
				t.Errorf("record %d/%d header %d = %q:%q, want %q:%q", got.Partition, got.Offset, i, h.Key, h.Value, want.Headers[i].Key, want.Headers[i].Value)
			}
		}
	}
	m.h.mu.Lock()
	defer m.h.mu.Unlock()
	for tp, hw := range m.h.hw {
		recs := m.h.recs[tp]
		if hw != -1 && hw < recs[len(recs)-1].Offset+1 {
			t.Errorf("%v: high watermark %d below the last delivered offset %d", tp, hw, recs[len(recs)-1].Offset)
		}
	}
}

func (s *suite) testPartitioner(t *testing.T) {
	for _, part := range []transport.Partitioner{transport.Murmur2, transport.CRC32} {
		name := map[transport.Partitioner]string{transport.Murmur2: "Murmur2", transport.CRC32: "CRC32"}[part]
		t.Run(name, func(t *testing.T) {
			const n = 7
			topic := s.topic(t, n)
			cfg := s.cfg()
			cfg.Partitioner = part
			p := s.producer(t, cfg)
			var recs []*transport.Record
			for i := range 300 {
				key := fmt.Appendf(nil, "order-%d", i)
				if i%10 == 0 {
					key = []byte{byte(i), 0xff, byte(i >> 3), 0x80} // not UTF-8
				}
				recs = append(recs, &transport.Record{Topic: topic, Key: key, Value: []byte("v")})
			}
			produce(t, p, recs...)
			for _, r := range recs {
				if want := Expected(part, r.Key, n); int(r.Partition) != want {
					t.Errorf("key %q: partition %d, kafka-go's balancer picks %d", r.Key, r.Partition, want)
				}
			}
		})
	}
}

func (s *suite) testTooLarge(t *testing.T) {
	topic := s.topic(t, 1)
	for _, batchBytes := range []int64{0, 8 << 20} {
		t.Run(fmt.Sprintf("BatchBytes=%d", batchBytes), func(t *testing.T) {
			cfg := s.cfg()
			cfg.BatchBytes = batchBytes
			p := s.producer(t, cfg)
			// Random bytes: a client that compresses must not get it under
			// the broker's limit.
			value := make([]byte, 2<<20)
			_, _ = rand.Read(value)
			rec := &transport.Record{Topic: topic, Key: []byte("k"), Value: value}
			errs := p.Produce(ctxT(t), []*transport.Record{rec})
			if len(errs) != 1 || errs[0] == nil {
				t.Fatalf("Produce of 2 MiB = %v, want an error", errs)
			}
			if k := transport.KindOf(errs[0]); k != transport.TooLarge {
				t.Fatalf("kind %v (%v), want TooLarge", k, errs[0])
			}
			// The producer still works.
			produce(t, p, &transport.Record{Topic: topic, Key: []byte("k"), Value: []byte("small")})
		})
	}
}

func (s *suite) testUnknownTopic(t *testing.T) {
	cfg := s.cfg()
	cfg.AllowAutoCreate = false
	p := s.producer(t, cfg)
	topic := testenv.ID("conf-missing")
	errs := p.Produce(ctxT(t), []*transport.Record{{Topic: topic, Key: []byte("k"), Value: []byte("v")}})
	if len(errs) != 1 || errs[0] == nil {
		t.Fatalf("Produce to a missing topic = %v, want an error", errs)
	}
	if k := transport.KindOf(errs[0]); k != transport.UnknownTopic {
		t.Fatalf("kind %v (%v), want UnknownTopic", k, errs[0])
	}
	adm, err := s.tr.NewAdmin(s.cfg())
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	if missing, err := adm.MissingTopics(ctxT(t), topic); err != nil || len(missing) != 1 {
		t.Fatalf("MissingTopics after a refused produce = %v, %v: the topic must not have been created", missing, err)
	}
}

func (s *suite) testAdmin(t *testing.T) {
	topic := s.topic(t, 2)
	adm, err := s.tr.NewAdmin(s.cfg())
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	// Creating it again is not an error.
	if err := adm.CreateTopics(ctxT(t), 2, -1, topic); err != nil {
		t.Fatalf("CreateTopics of an existing topic: %v", err)
	}
	absent := testenv.ID("conf-absent")
	missing, err := adm.MissingTopics(ctxT(t), topic, absent)
	if err != nil || !slices.Equal(missing, []string{absent}) {
		t.Fatalf("MissingTopics = %v, %v; want [%s]", missing, err, absent)
	}
	p := s.producer(t, s.cfg())
	k0, k1 := KeyFor(transport.Murmur2, 0, 2), KeyFor(transport.Murmur2, 1, 2)
	produce(t, p,
		&transport.Record{Topic: topic, Key: k0}, &transport.Record{Topic: topic, Key: k0},
		&transport.Record{Topic: topic, Key: k0}, &transport.Record{Topic: topic, Key: k1})
	tp0, tp1 := transport.TopicPartition{Topic: topic, Partition: 0}, transport.TopicPartition{Topic: topic, Partition: 1}
	ends, err := adm.EndOffsets(ctxT(t), tp0, tp1)
	if err != nil || ends[tp0] != 3 || ends[tp1] != 1 {
		t.Fatalf("EndOffsets = %v, %v; want 3 and 1", ends, err)
	}
}

func (s *suite) testCommitResume(t *testing.T) {
	topic := s.topic(t, 2)
	p := s.producer(t, s.cfg())
	k0, k1 := KeyFor(transport.Murmur2, 0, 2), KeyFor(transport.Murmur2, 1, 2)
	var recs []*transport.Record
	for i := range 5 {
		recs = append(recs, &transport.Record{Topic: topic, Key: k0, Value: fmt.Appendf(nil, "%d", i)},
			&transport.Record{Topic: topic, Key: k1, Value: fmt.Appendf(nil, "%d", i)})
	}
	produce(t, p, recs...)
	tp0, tp1 := transport.TopicPartition{Topic: topic, Partition: 0}, transport.TopicPartition{Topic: topic, Partition: 1}

	cfg := s.cfg()
	cfg.GroupID, cfg.Topics = testenv.ID("conf-g"), []string{topic}
	a := s.join(t, cfg)
	waitFor(t, "member A owns both partitions", func() bool { return len(a.h.owned()) == 2 })
	for _, as := range a.h.assignments() {
		if as.Offset != -1 || as.Metadata != "" || as.Start != 0 {
			t.Fatalf("fresh group (Earliest): Assigned %+v, want offset -1, no metadata and start 0 (the log start)", as)
		}
	}
	waitFor(t, "A receives all 10 records", func() bool { return a.h.count(topic) == 10 })
	gen := a.h.gen()
	// Commit partition 0 in the middle (offsets 0 and 1 done, 3 done
	// beyond the prefix: the kind of metadata kavari stores), partition 1
	// entirely.
	if err := a.c.Commit(ctxT(t), gen, []transport.Offset{
		{TopicPartition: tp0, Offset: 2, Metadata: "v1:3"},
		{TopicPartition: tp1, Offset: 5, Metadata: ""},
	}); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	a.close(t)

	b := s.join(t, cfg)
	waitFor(t, "member B owns both partitions", func() bool { return len(b.h.owned()) == 2 })
	got := map[transport.TopicPartition]transport.Assignment{}
	for _, as := range b.h.assignments() {
		got[as.TopicPartition] = as
	}
	if got[tp0].Offset != 2 || got[tp1].Offset != 5 || got[tp0].Start != 2 || got[tp1].Start != 5 {
		t.Fatalf("B's Assigned offsets %+v, want 2 and 5, where each starts", got)
	}
	if s.caps.CommitMetadata && got[tp0].Metadata != "v1:3" {
		t.Fatalf("B's Assigned metadata %q, want %q", got[tp0].Metadata, "v1:3")
	}
	waitFor(t, "B receives partition 0 from offset 2", func() bool { return len(b.h.records(tp0)) >= 3 })
	if first := b.h.records(tp0)[0].Offset; first != 2 {
		t.Fatalf("B's first record on partition 0 has offset %d, want 2", first)
	}
	if n := len(b.h.records(tp1)); n != 0 {
		t.Fatalf("B received %d records of the fully committed partition 1", n)
	}
}

// testMetadataTooLarge: metadata over the broker's offset.metadata.max.bytes
// (4096 by default) is refused with ErrMetadataTooLarge, which the engine
// answers with shorter metadata; the same offset with short metadata is
// accepted.
func (s *suite) testMetadataTooLarge(t *testing.T) {
	topic := s.topic(t, 1)
	tp := transport.TopicPartition{Topic: topic, Partition: 0}
	cfg := s.cfg()
	cfg.GroupID, cfg.Topics = testenv.ID("conf-g"), []string{topic}
	a := s.join(t, cfg)
	waitFor(t, "member A owns the partition", func() bool { return len(a.h.owned()) == 1 })
	err := a.c.Commit(ctxT(t), a.h.gen(), []transport.Offset{{TopicPartition: tp, Offset: 0, Metadata: strings.Repeat("m", 5000)}})
	if !errors.Is(err, transport.ErrMetadataTooLarge) {
		t.Fatalf("Commit with 5000 bytes of metadata: %v, want ErrMetadataTooLarge", err)
	}
	if err := a.c.Commit(ctxT(t), a.h.gen(), []transport.Offset{{TopicPartition: tp, Offset: 0, Metadata: "short"}}); err != nil {
		t.Fatalf("Commit with short metadata: %v", err)
	}
	a.close(t)
}

// testStartLatest: with StartOffset Latest and nothing committed, a new
// group skips what the partition held before it joined.
func (s *suite) testStartLatest(t *testing.T) {
	topic := s.topic(t, 1)
	tp := transport.TopicPartition{Topic: topic, Partition: 0}
	p := s.producer(t, s.cfg())
	produce(t, p, &transport.Record{Topic: topic, Key: []byte("k"), Value: []byte("before")})
	cfg := s.cfg()
	cfg.GroupID, cfg.Topics, cfg.StartOffset = testenv.ID("conf-g"), []string{topic}, transport.Latest
	m := s.join(t, cfg)
	waitFor(t, "the member owns the partition", func() bool { return len(m.h.owned()) == 1 })
	// Where it starts was fixed before Assigned (StartLatestFixedAtAssigned):
	// one record written now arrives.
	produce(t, p, &transport.Record{Topic: topic, Key: []byte("k"), Value: []byte("after")})
	waitFor(t, "a record written after the join arrives", func() bool { return len(m.h.records(tp)) > 0 })
	if first := m.h.records(tp)[0]; first.Offset == 0 || string(first.Value) != "after" {
		t.Fatalf("first record delivered: offset %d %q; want one written after the join", first.Offset, first.Value)
	}
}

// testStartLatestFixed: with StartOffset Latest and nothing committed,
// where a partition starts is fixed by the time Assigned is called (the
// engine then shows the partition as assigned in Health): a record
// produced from inside Assigned is delivered, and it is the first one.
// A client that resolves the log end lazily, at its first fetch after
// Assigned returned, skips it. Five fresh groups, each one record: a lazy
// resolution fails every time; a record not delivered within the suite's
// generous wait fails the test.
func (s *suite) testStartLatestFixed(t *testing.T) {
	topic := s.topic(t, 1)
	tp := transport.TopicPartition{Topic: topic, Partition: 0}
	p := s.producer(t, s.cfg())
	produce(t, p, &transport.Record{Topic: topic, Key: []byte("k"), Value: []byte("before")})
	for i := range 5 {
		cfg := s.cfg()
		cfg.GroupID, cfg.Topics, cfg.StartOffset = testenv.ID("conf-g"), []string{topic}, transport.Latest
		c, err := s.tr.NewConsumer(cfg)
		if err != nil {
			t.Fatalf("NewConsumer: %v", err)
		}
		m := &member{c: c, h: NewRecorder(), done: make(chan error, 1)}
		want := fmt.Appendf(nil, "produced inside Assigned, group %d", i)
		produced := make(chan *transport.Record, 1)
		var once sync.Once
		m.h.OnAssigned = func(_ transport.Generation, parts []transport.Assignment) {
			if len(parts) == 0 {
				return
			}
			once.Do(func() {
				rec := &transport.Record{Topic: topic, Key: []byte("k"), Value: want}
				ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
				defer cancel()
				if errs := p.Produce(ctx, []*transport.Record{rec}); errs != nil {
					rec = nil
				}
				produced <- rec
			})
		}
		ctx, cancel := context.WithCancel(context.Background())
		go func() { m.done <- c.Run(ctx, m.h) }()
		var rec *transport.Record
		select {
		case rec = <-produced:
		case <-time.After(waitTimeout):
		}
		if rec == nil {
			m.close(t)
			cancel()
			t.Fatalf("group %d: Assigned was not called, or the record produced inside it was not acknowledged", i)
		}
		deadline := time.Now().Add(waitTimeout)
		for len(m.h.records(tp)) == 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		got := m.h.records(tp)
		m.close(t)
		cancel()
		switch {
		case len(got) == 0:
			t.Fatalf("group %d (Latest, nothing committed): the record produced inside Assigned (offset %d) was not delivered: the start was resolved after Assigned",
				i, rec.Offset)
		case got[0].Offset != rec.Offset || !bytes.Equal(got[0].Value, want):
			t.Fatalf("group %d: first record delivered at offset %d %q, want the one produced inside Assigned at %d",
				i, got[0].Offset, got[0].Value, rec.Offset)
		}
		// The engine is told where delivery starts: the log end when
		// Assigned was called.
		if as := m.h.assignments(); len(as) != 1 || as[0].Offset != -1 || as[0].Start != rec.Offset {
			t.Errorf("group %d: Assigned %+v, want offset -1 (none committed) and start %d (the log end)", i, as, rec.Offset)
		}
	}
}

func (s *suite) testRebalance(t *testing.T) {
	const n = 4
	topic := s.topic(t, n)
	cfg := s.cfg()
	cfg.GroupID, cfg.Topics = testenv.ID("conf-g"), []string{topic}
	a := s.join(t, cfg)
	waitFor(t, "A owns every partition", func() bool { return len(a.h.owned()) == n })
	gen1 := a.h.gen()

	b := s.join(t, cfg)
	waitFor(t, "A and B share the partitions", func() bool {
		oa, ob := a.h.owned(), b.h.owned()
		if len(oa) == 0 || len(ob) == 0 || len(oa)+len(ob) != n {
			return false
		}
		for tp := range oa {
			if ob[tp] {
				return false
			}
		}
		return true
	})
	oa, ob := a.h.owned(), b.h.owned()
	revoked := a.h.revokedSet()
	t.Logf("after B joined: A owns %v, B owns %v; A had revoked %v", keysOf(oa), keysOf(ob), keysOf(revoked))
	if s.caps.Cooperative {
		for tp := range revoked {
			if !ob[tp] {
				t.Errorf("cooperative: A's partition %v was revoked though it stayed with A", tp)
			}
		}
	} else if len(revoked) != n {
		t.Errorf("eager: A revoked %v, want every partition", keysOf(revoked))
	}
	if lost := a.h.lostSet(); len(lost) > 0 {
		t.Errorf("A lost %v in an ordinary rebalance", keysOf(lost))
	}

	// A partition that moved to B cannot be committed by A with the
	// generation in which A got it.
	var moved transport.TopicPartition
	for tp := range ob {
		moved = tp
		break
	}
	if err := a.c.Commit(ctxT(t), gen1, []transport.Offset{{TopicPartition: moved, Offset: 1}}); err == nil {
		t.Errorf("A committed %v, which moved to B, with its old generation %+v", moved, gen1)
	}
	// A's own partitions commit with A's current generation, not with a
	// made-up member.
	var kept transport.TopicPartition
	for tp := range oa {
		kept = tp
		break
	}
	cur := a.h.gen()
	if err := a.c.Commit(ctxT(t), cur, []transport.Offset{{TopicPartition: kept, Offset: 0}}); err != nil {
		t.Errorf("A's commit of its own %v in %+v: %v", kept, cur, err)
	}
	if err := a.c.Commit(ctxT(t), transport.Generation{ID: cur.ID, MemberID: "not-a-member"}, []transport.Offset{{TopicPartition: kept, Offset: 0}}); err == nil {
		t.Errorf("a commit with another member id succeeded")
	}
}

func (s *suite) testPauseResume(t *testing.T) {
	topic := s.topic(t, 2)
	tp0, tp1 := transport.TopicPartition{Topic: topic, Partition: 0}, transport.TopicPartition{Topic: topic, Partition: 1}
	k0, k1 := KeyFor(transport.Murmur2, 0, 2), KeyFor(transport.Murmur2, 1, 2)
	p := s.producer(t, s.cfg())
	cfg := s.cfg()
	cfg.GroupID, cfg.Topics = testenv.ID("conf-g"), []string{topic}
	m := s.join(t, cfg)
	waitFor(t, "the member owns both partitions", func() bool { return len(m.h.owned()) == 2 })
	// Fetching has begun on both partitions before the pause.
	produce(t, p, &transport.Record{Topic: topic, Key: k0, Value: []byte("before")}, &transport.Record{Topic: topic, Key: k1, Value: []byte("before")})
	waitFor(t, "the first records arrive", func() bool { return len(m.h.records(tp0)) == 1 && len(m.h.records(tp1)) == 1 })

	m.c.Pause(tp0)
	produce(t, p, &transport.Record{Topic: topic, Key: k0, Value: []byte("paused")})
	// Partition 1 keeps flowing: two later records on it are delivered
	// while partition 0's record is not.
	for i := range 2 {
		produce(t, p, &transport.Record{Topic: topic, Key: k1, Value: []byte("flowing")})
		waitFor(t, "partition 1 keeps delivering", func() bool { return len(m.h.records(tp1)) == 2+i })
	}
	if got := len(m.h.records(tp0)); got != 1 {
		t.Fatalf("partition 0 delivered %d records while paused", got-1)
	}
	m.c.Resume(tp0)
	waitFor(t, "partition 0 delivers after Resume", func() bool { return len(m.h.records(tp0)) == 2 })
}

// testBacklogLeavesFetchedRecords: a partition whose queue is full (its
// Backlog channel stays open) holds back none of the records the client had
// already fetched for the other partitions: with 600 records on each of two
// partitions (more than one poll of the franz adapter) fetched together,
// the partition delivered to first is held, and the other still gets all
// of its records.
//
// The client may fetch the two partitions apart (kgo makes a partition
// fetchable as soon as its start offset is known, and can send a fetch
// before the other's is): then the held partition gets all of its records
// and the other none, and the other's, fetched later, wait for the backlog
// (the engine pauses a partition that waited stallPause). That attempt
// proves nothing, and a new one starts, on a new topic. Before the fix the
// held partition got one poll (500) and the other none, every time.
func (s *suite) testBacklogLeavesFetched(t *testing.T) {
	const attempts = 5
	for i := range attempts {
		if s.backlogLeavesFetched(t) {
			return
		}
		t.Logf("attempt %d: the client fetched the other partition apart from the held one; trying again", i+1)
	}
	t.Fatalf("the client fetched the two partitions apart in %d attempts of %d", attempts, attempts)
}

// backlogLeavesFetched runs one attempt of testBacklogLeavesFetched. It
// reports false when the client fetched the two partitions apart.
func (s *suite) backlogLeavesFetched(t *testing.T) bool {
	topic := s.topic(t, 2)
	const n = 600
	var recs []*transport.Record
	for range n {
		for part := range 2 {
			recs = append(recs, &transport.Record{Topic: topic, Key: KeyFor(transport.Murmur2, part, 2), Value: []byte("queued")})
		}
	}
	produce(t, s.producer(t, s.cfg()), recs...)
	cfg := s.cfg()
	cfg.GroupID, cfg.Topics = testenv.ID("conf-g"), []string{topic}
	c, err := s.tr.NewConsumer(cfg)
	if err != nil {
		t.Fatalf("NewConsumer: %v", err)
	}
	h := &backlogHolder{Recorder: NewRecorder(), hold: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- c.Run(context.Background(), h) }()
	defer func() {
		close(h.hold)
		if err := c.Close(ctxT(t)); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	waitFor(t, "a partition's backlog held", func() bool { _, ok := h.held(); return ok })
	first, _ := h.held()
	other := transport.TopicPartition{Topic: topic, Partition: 1 - first.Partition}
	// seen counts the checks in a row that found the held partition
	// with all of its records and the other with none. One is not
	// enough: a poll delivers the held partition's records before the
	// other's, and a check can fall between the two.
	seen, nh, no := 0, 0, 0
	defer func() {
		if t.Failed() {
			t.Logf("held %v got %d records, the other %d", first, nh, no)
		}
	}()
	waitFor(t, "the other partition's records, fetched with the held one's, delivered", func() bool {
		nh, no = len(h.records(first)), len(h.records(other))
		if no == n {
			return true
		}
		if nh == n && no == 0 {
			seen++
		} else {
			seen = 0
		}
		return seen == 2
	})
	return seen < 2
}

// backlogHolder is a Recorder and Backlogger whose first partition asked
// for has a backlog until hold is closed; the others never have one.
type backlogHolder struct {
	*Recorder
	hold chan struct{}

	mu    sync.Mutex
	first *transport.TopicPartition
}

func (b *backlogHolder) Backlog(tp transport.TopicPartition) <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.first == nil {
		b.first = &tp
	}
	if *b.first == tp {
		return b.hold
	}
	return nil
}

func (b *backlogHolder) held() (transport.TopicPartition, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.first == nil {
		return transport.TopicPartition{}, false
	}
	return *b.first, true
}

func (s *suite) testCloseLeaves(t *testing.T) {
	const n = 2
	topic := s.topic(t, n)
	cfg := s.cfg()
	cfg.GroupID, cfg.Topics = testenv.ID("conf-g"), []string{topic}
	// A member that only vanished would keep its partitions for a minute.
	cfg.SessionTimeout = 60 * time.Second
	a := s.join(t, cfg)
	waitFor(t, "A owns every partition", func() bool { return len(a.h.owned()) == n })
	b := s.join(t, cfg)
	waitFor(t, "A and B each own a partition", func() bool { return len(a.h.owned()) == 1 && len(b.h.owned()) == 1 })
	a.close(t)
	if got := a.h.revokedSet(); len(got) != n {
		t.Errorf("Close revoked %v, want every partition A owned before (Revoked lets the engine commit)", keysOf(got))
	}
	// Well before the session timeout: A left the group.
	waitForWithin(t, 40*time.Second, "B owns every partition after A's Close", func() bool { return len(b.h.owned()) == n })
}

func (s *suite) testStaticRejoin(t *testing.T) {
	if s.o.Embedded {
		t.Skip("kfake rebalances when a static member rejoins; needs Apache Kafka")
	}
	const n = 4
	topic := s.topic(t, n)
	cfg := s.cfg()
	cfg.GroupID, cfg.Topics = testenv.ID("conf-g"), []string{topic}
	cfg.SessionTimeout = 60 * time.Second
	ca, cb := cfg, cfg
	ca.InstanceID, cb.InstanceID = "member-a", "member-b"
	a := s.join(t, ca)
	waitFor(t, "A owns every partition", func() bool { return len(a.h.owned()) == n })
	b := s.join(t, cb)
	waitFor(t, "A and B share the partitions", func() bool {
		return len(a.h.owned()) > 0 && len(b.h.owned()) > 0 && len(a.h.owned())+len(b.h.owned()) == n
	})
	before := a.h.owned()
	genB := b.h.gen()
	bEvents := b.h.events()
	a.close(t)

	a2 := s.join(t, ca)
	waitFor(t, "A, restarted with the same instance id, gets partitions", func() bool { return len(a2.h.owned()) > 0 })
	if got := a2.h.owned(); !maps(got, before) {
		t.Errorf("restarted A owns %v, before %v", keysOf(got), keysOf(before))
	}
	t.Logf("static rejoin: generation before %d (B), A's after restart %d", genB.ID, a2.h.gen().ID)
	if g := a2.h.gen(); !s.o.MemberEpochs && g.ID != genB.ID {
		t.Errorf("static rejoin changed the generation: %d -> %d (a rebalance)", genB.ID, g.ID)
	}
	// B saw nothing: no revoke, no assignment.
	if got := b.h.events(); got != bEvents {
		t.Errorf("B saw %d group events during A's restart", got-bEvents)
	}
}

// testDrainBeyondSession: Revoked blocks (the engine draining) for twice the
// session timeout; heartbeats go on, so the member is not expelled: it loses
// nothing and commits its drained partition in the generation Revoked gave.
func (s *suite) testDrainBeyondSession(t *testing.T) {
	if testing.Short() {
		t.Skip("sleeps twice the session timeout")
	}
	const n = 2
	topic := s.topic(t, n)
	cfg := s.cfg()
	cfg.GroupID, cfg.Topics = testenv.ID("conf-g"), []string{topic}
	cfg.SessionTimeout = 6 * time.Second // the broker's minimum by default
	cfg.RebalanceTimeout = 40 * time.Second
	a := s.join(t, cfg)
	waitFor(t, "A owns every partition", func() bool { return len(a.h.owned()) == n })
	p := s.producer(t, s.cfg())
	drained := make(chan error, 1)
	flowed := make(chan error, 1)
	a.h.mu.Lock()
	var once sync.Once
	a.h.OnRevoked = func(gen transport.Generation, parts []transport.TopicPartition) {
		first := false
		once.Do(func() { first = true })
		if !first {
			return
		}
		start := time.Now()
		if s.caps.Cooperative {
			// The partition A keeps is still delivered while the
			// revoked one drains.
			flowed <- func() error {
				var kept *transport.TopicPartition
				for tp := range a.h.owned() {
					if !slices.Contains(parts, tp) {
						kept = &tp
					}
				}
				if kept == nil {
					return fmt.Errorf("member A keeps no partition (revoked %v)", parts)
				}
				before := len(a.h.records(*kept))
				rec := &transport.Record{Topic: topic, Key: KeyFor(transport.Murmur2, int(kept.Partition), n), Value: []byte("during drain")}
				ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
				defer cancel()
				if errs := p.Produce(ctx, []*transport.Record{rec}); errs != nil {
					return fmt.Errorf("produce: %v", errs)
				}
				for len(a.h.records(*kept)) == before {
					if ctx.Err() != nil {
						return fmt.Errorf("%v delivered nothing while %v drained", *kept, parts)
					}
					time.Sleep(20 * time.Millisecond)
				}
				return nil
			}()
		}
		time.Sleep(2*cfg.SessionTimeout - time.Since(start)) // a slow handler finishing
		offs := make([]transport.Offset, len(parts))
		for i, tp := range parts {
			offs[i] = transport.Offset{TopicPartition: tp, Offset: 0, Metadata: "drained"}
		}
		select {
		case drained <- a.c.Commit(context.Background(), gen, offs):
		default:
		}
	}
	a.h.mu.Unlock()
	b := s.join(t, cfg)
	select {
	case err := <-drained:
		if err != nil {
			t.Fatalf("commit at the end of a drain longer than the session timeout: %v", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Revoked was not called")
	}
	waitFor(t, "A and B each own a partition", func() bool { return len(a.h.owned()) == 1 && len(b.h.owned()) == 1 })
	if lost := a.h.lostSet(); len(lost) > 0 {
		t.Fatalf("A lost %v while draining: heartbeats stopped", keysOf(lost))
	}
	if s.caps.Cooperative {
		if err := <-flowed; err != nil {
			t.Fatal(err)
		}
	}
}

// testCloseDrainBeyondSession: Close revokes every partition while the
// member is still in the group, so a drain longer than the session timeout
// ends with a commit the coordinator accepts, and each partition is
// revoked once. franz-go's leave stopped heartbeating before it revoked:
// the final commit got UNKNOWN_MEMBER_ID (issue 10).
func (s *suite) testCloseDrainBeyondSession(t *testing.T) {
	if testing.Short() {
		t.Skip("sleeps twice the session timeout")
	}
	const n = 2
	topic := s.topic(t, n)
	cfg := s.cfg()
	cfg.GroupID, cfg.Topics = testenv.ID("conf-g"), []string{topic}
	cfg.SessionTimeout = 6 * time.Second // the broker's minimum by default
	cfg.RebalanceTimeout = 40 * time.Second
	a := s.join(t, cfg)
	waitFor(t, "A owns every partition", func() bool { return len(a.h.owned()) == n })
	var (
		mu      sync.Mutex
		revokes = map[transport.TopicPartition]int{}
		commits []error
	)
	a.h.mu.Lock()
	a.h.OnRevoked = func(gen transport.Generation, parts []transport.TopicPartition) {
		mu.Lock()
		for _, tp := range parts {
			revokes[tp]++
		}
		mu.Unlock()
		time.Sleep(2 * cfg.SessionTimeout) // a slow handler finishing
		offs := make([]transport.Offset, len(parts))
		for i, tp := range parts {
			offs[i] = transport.Offset{TopicPartition: tp, Offset: 1, Metadata: "drained"}
		}
		err := a.c.Commit(context.Background(), gen, offs)
		mu.Lock()
		commits = append(commits, err)
		mu.Unlock()
	}
	a.h.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	a.closed = true
	if err := a.c.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(revokes) != n {
		t.Errorf("Close revoked %v, want each of the %d partitions", revokes, n)
	}
	for tp, k := range revokes {
		if k != 1 {
			t.Errorf("%v revoked %d times, want once", tp, k)
		}
	}
	for _, err := range commits {
		if err != nil {
			t.Errorf("commit at the end of a drain longer than the session timeout, in Close: %v", err)
		}
	}
}

func maps(a, b map[transport.TopicPartition]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

func keysOf(m map[transport.TopicPartition]bool) []transport.TopicPartition {
	out := make([]transport.TopicPartition, 0, len(m))
	for tp := range m {
		out = append(out, tp)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Topic != out[j].Topic {
			return out[i].Topic < out[j].Topic
		}
		return out[i].Partition < out[j].Partition
	})
	return out
}

// member is one running consumer and what it saw.
type member struct {
	c      transport.Consumer
	h      *Recorder
	done   chan error
	closed bool
}

func (s *suite) join(t *testing.T, cfg transport.Config) *member {
	t.Helper()
	c, err := s.tr.NewConsumer(cfg)
	if err != nil {
		t.Fatalf("NewConsumer: %v", err)
	}
	m := &member{c: c, h: NewRecorder(), done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { m.done <- c.Run(ctx, m.h) }()
	t.Cleanup(func() {
		if !m.closed {
			m.close(t)
		}
		cancel()
	})
	return m
}

func (m *member) close(t *testing.T) {
	t.Helper()
	m.closed = true
	if err := m.c.Close(ctxT(t)); err != nil {
		t.Errorf("Close: %v", err)
	}
	select {
	case err := <-m.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(opTimeout):
		t.Errorf("Run did not return after Close")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitForWithin(t, waitTimeout, what, cond)
}

func waitForWithin(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %v waiting for: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Recorder is a GroupHandler that records what the adapter calls.
type Recorder struct {
	mu      sync.Mutex
	own     map[transport.TopicPartition]bool
	assigns []transport.Assignment
	revoked map[transport.TopicPartition]bool
	lost    map[transport.TopicPartition]bool
	recs    map[transport.TopicPartition][]*transport.Record
	hw      map[transport.TopicPartition]int64
	g       transport.Generation
	nEvents int
	errs    []error

	// OnRevoked, when set, runs inside Revoked (as the engine's drain and
	// commit would).
	OnRevoked func(gen transport.Generation, parts []transport.TopicPartition)
	// OnAssigned, when set, runs inside Assigned, after the partitions
	// are recorded as owned.
	OnAssigned func(gen transport.Generation, parts []transport.Assignment)
}

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder {
	return &Recorder{
		own: map[transport.TopicPartition]bool{}, revoked: map[transport.TopicPartition]bool{},
		lost: map[transport.TopicPartition]bool{}, recs: map[transport.TopicPartition][]*transport.Record{},
		hw: map[transport.TopicPartition]int64{},
	}
}

// Assigned records parts as owned, then runs OnAssigned.
func (r *Recorder) Assigned(gen transport.Generation, parts []transport.Assignment) {
	r.assigned(gen, parts)
	r.mu.Lock()
	fn := r.OnAssigned
	r.mu.Unlock()
	if fn != nil {
		fn(gen, parts)
	}
}

func (r *Recorder) assigned(gen transport.Generation, parts []transport.Assignment) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.g = gen
	r.nEvents++
	for _, a := range parts {
		if r.own[a.TopicPartition] {
			panic(fmt.Sprintf("transporttest: %v assigned twice", a.TopicPartition))
		}
		r.own[a.TopicPartition] = true
		r.assigns = append(r.assigns, a)
	}
}

// Revoked records parts as revoked.
func (r *Recorder) Revoked(gen transport.Generation, parts []transport.TopicPartition) {
	r.mu.Lock()
	fn := r.OnRevoked
	r.mu.Unlock()
	if fn != nil {
		fn(gen, parts)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.nEvents++
	for _, tp := range parts {
		delete(r.own, tp)
		r.revoked[tp] = true
	}
}

// Lost records parts as lost.
func (r *Recorder) Lost(gen transport.Generation, parts []transport.TopicPartition) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.nEvents++
	for _, tp := range parts {
		delete(r.own, tp)
		r.lost[tp] = true
	}
}

// Records appends recs, checking they are in offset order and owned.
func (r *Recorder) Records(tp transport.TopicPartition, recs []*transport.Record, hw int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.own[tp] {
		panic(fmt.Sprintf("transporttest: records of %v, which is not assigned", tp))
	}
	prev := r.recs[tp]
	for _, rec := range recs {
		if len(prev) > 0 && rec.Offset <= prev[len(prev)-1].Offset {
			panic(fmt.Sprintf("transporttest: %v: offset %d after %d", tp, rec.Offset, prev[len(prev)-1].Offset))
		}
		prev = append(prev, rec)
	}
	r.recs[tp] = prev
	r.hw[tp] = hw
}

// Error records err.
func (r *Recorder) Error(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, err)
}

func (r *Recorder) owned() map[transport.TopicPartition]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[transport.TopicPartition]bool{}
	for tp := range r.own {
		out[tp] = true
	}
	return out
}

func (r *Recorder) revokedSet() map[transport.TopicPartition]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[transport.TopicPartition]bool{}
	for tp := range r.revoked {
		out[tp] = true
	}
	return out
}

func (r *Recorder) lostSet() map[transport.TopicPartition]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[transport.TopicPartition]bool{}
	for tp := range r.lost {
		out[tp] = true
	}
	return out
}

func (r *Recorder) assignments() []transport.Assignment {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.assigns)
}

func (r *Recorder) gen() transport.Generation {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.g
}

func (r *Recorder) events() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.nEvents
}

func (r *Recorder) records(tp transport.TopicPartition) []*transport.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.recs[tp])
}

func (r *Recorder) all(topic string) []*transport.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*transport.Record
	for tp, recs := range r.recs {
		if tp.Topic == topic {
			out = append(out, recs...)
		}
	}
	return out
}

func (r *Recorder) count(topic string) int { return len(r.all(topic)) }
