package transporttest

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/internal/transport"
)

// testOutOfRange: a committed offset outside the partition's log resumes
// at the log start, whatever StartOffset says (StartOffset only decides
// where a partition with no committed offset starts). Below the start,
// records were deleted before the group handled them, and every record
// still there is one it never handled; past the end, the log was truncated
// or recreated, and the records it holds now are ones the group cannot
// have handled. Both transports follow this one rule (before, with
// StartOffset Latest, franz-go resumed at the end and kafka-go at the
// start below it; past the end, kafka-go waited until the log reached the
// committed offset).
func (s *suite) testOutOfRange(t *testing.T) {
	topic := s.topic(t, 1)
	tp := transport.TopicPartition{Topic: topic, Partition: 0}
	p := s.producer(t, s.cfg())
	for i := range 10 {
		produce(t, p, &transport.Record{Topic: topic, Key: []byte("k"), Value: []byte(strconv.Itoa(i))})
	}
	// OffsetCommit by topic name: versions before topic IDs.
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.brokers...), kgo.MaxVersions(kversion.V3_8_0()))
	if err != nil {
		t.Fatalf("kgo.NewClient: %v", err)
	}
	defer cl.Close()
	const logStart = 5
	if err := deleteRecords(ctxT(t), cl, topic, logStart); err != nil {
		t.Fatalf("DeleteRecords below %d: %v", logStart, err)
	}
	for _, c := range []struct {
		name      string
		committed int64
	}{{"below-start", 2}, {"past-end", 100}} {
		t.Run(c.name, func(t *testing.T) {
			for _, start := range []transport.StartOffset{transport.Earliest, transport.Latest} {
				cfg := s.cfg()
				cfg.GroupID, cfg.Topics, cfg.StartOffset = testenv.ID("conf-g"), []string{topic}, start
				var warned warnings
				cfg.Logger = slog.New(&warned)
				if err := commitOffset(ctxT(t), cl, cfg.GroupID, topic, c.committed); err != nil {
					t.Fatalf("commit offset %d for %s: %v", c.committed, cfg.GroupID, err)
				}
				m := s.join(t, cfg)
				waitFor(t, fmt.Sprintf("a record arrives (committed %d, StartOffset %v)", c.committed, start),
					func() bool { return len(m.h.records(tp)) > 0 })
				if first := m.h.records(tp)[0]; first.Offset != logStart {
					t.Errorf("committed %d, log %d..10, StartOffset %v: first record delivered at offset %d, want %d (the log start)",
						c.committed, logStart, start, first.Offset, logStart)
				}
				// The engine is told where delivery starts, without the
				// metadata of a commit that no longer describes this log
				// (its completed offsets would skip records of the new
				// one); a commit from there is taken.
				if as := m.h.assignments(); len(as) == 0 || as[0].Offset != logStart || as[0].Metadata != "" {
					t.Errorf("committed %d with metadata, StartOffset %v: assigned %+v, want offset %d and no metadata", c.committed, start, as, logStart)
				}
				if err := m.c.Commit(ctxT(t), m.h.gen(), []transport.Offset{{TopicPartition: tp, Offset: logStart + 1}}); err != nil {
					t.Errorf("Commit at %d after the reset: %v", logStart+1, err)
				} else if got, err := committedOffset(ctxT(t), cl, cfg.GroupID, topic); err != nil || got != logStart+1 {
					t.Errorf("committed %d, then Commit at %d after the reset: the group's offset is %d (%v)", c.committed, logStart+1, got, err)
				}
				m.close(t)
				if !warned.mention(topic) {
					t.Errorf("committed %d, StartOffset %v: no warning names %s", c.committed, start, topic)
				}
			}
		})
	}
}

// deleteRecords deletes the records of partition 0 of topic below offset.
func deleteRecords(ctx context.Context, cl *kgo.Client, topic string, offset int64) error {
	req := kmsg.NewPtrDeleteRecordsRequest()
	req.TimeoutMillis = 15000
	rt := kmsg.NewDeleteRecordsRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewDeleteRecordsRequestTopicPartition()
	rp.Partition, rp.Offset = 0, offset
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	res, err := req.RequestWith(ctx, cl)
	if err != nil {
		return err
	}
	for _, t := range res.Topics {
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return err
			}
		}
	}
	return nil
}

// commitOffset commits offset for partition 0 of topic in group, which
// has no members.
func commitOffset(ctx context.Context, cl *kgo.Client, group, topic string, offset int64) error {
	req := kmsg.NewPtrOffsetCommitRequest()
	req.Group, req.Generation = group, -1
	rt := kmsg.NewOffsetCommitRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewOffsetCommitRequestTopicPartition()
	rp.Partition, rp.Offset, rp.LeaderEpoch = 0, offset, -1
	md := fmt.Sprintf("completed offsets beyond %d (not kavari's encoding: never read)", offset)
	rp.Metadata = &md
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	res, err := req.RequestWith(ctx, cl)
	if err != nil {
		return err
	}
	for _, t := range res.Topics {
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return err
			}
		}
	}
	return nil
}

// warnings is a slog handler that keeps the warnings and errors logged.
type warnings struct {
	mu    sync.Mutex
	lines []string
}

func (w *warnings) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (w *warnings) Handle(_ context.Context, r slog.Record) error {
	line := r.Message
	r.Attrs(func(a slog.Attr) bool { line += " " + a.String(); return true })
	w.mu.Lock()
	w.lines = append(w.lines, line)
	w.mu.Unlock()
	return nil
}

func (w *warnings) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *warnings) WithGroup(string) slog.Handler      { return w }

// mention reports whether a warning logged names s.
func (w *warnings) mention(s string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, l := range w.lines {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

// committedOffset returns group's committed offset of partition 0 of topic.
func committedOffset(ctx context.Context, cl *kgo.Client, group, topic string) (int64, error) {
	req := kmsg.NewPtrOffsetFetchRequest()
	req.Group = group
	rt := kmsg.NewOffsetFetchRequestTopic()
	rt.Topic, rt.Partitions = topic, []int32{0}
	req.Topics = append(req.Topics, rt)
	res, err := req.RequestWith(ctx, cl)
	if err != nil {
		return -1, err
	}
	if err := kerr.ErrorForCode(res.ErrorCode); err != nil {
		return -1, err
	}
	for _, t := range res.Topics {
		for _, p := range t.Partitions {
			return p.Offset, kerr.ErrorForCode(p.ErrorCode)
		}
	}
	return -1, fmt.Errorf("no offset in the answer")
}
