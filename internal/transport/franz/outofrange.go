package franz

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kavari-go/kavari/internal/transport"
)

// clampOutOfRange moves each committed offset of parts that lies outside
// its partition's log to the log start, without its metadata, and returns
// one error per offset moved (for the log and Health). kgo resumes there
// too (ConsumeResetOffset AtStart), so the engine is told where delivery
// really starts: the metadata's completed offsets belong to a log that is
// gone, and the commits from the log start are not taken for commits
// going backwards. When the offsets cannot be listed, the error is
// returned and parts stay.
func clampOutOfRange(ctx context.Context, cl *kgo.Client, parts []transport.Assignment) ([]error, error) {
	idx := map[transport.TopicPartition]int{}
	for i, a := range parts {
		if a.Offset >= 0 {
			idx[a.TopicPartition] = i
		}
	}
	if len(idx) == 0 {
		return nil, nil
	}
	tps := make([]transport.TopicPartition, 0, len(idx))
	for tp := range idx {
		tps = append(tps, tp)
	}
	list := func(ts int64) (map[transport.TopicPartition]int64, error) { return listOffsets(ctx, cl, tps, ts) }
	first, err := list(-2)
	if err != nil {
		return nil, fmt.Errorf("kavari: franz-go consumer: list log start offsets: %w", err)
	}
	end, err := list(-1)
	if err != nil {
		return nil, fmt.Errorf("kavari: franz-go consumer: list log end offsets: %w", err)
	}
	var moved []error
	for tp, i := range idx {
		lo, ok1 := first[tp]
		hi, ok2 := end[tp]
		if !ok1 || !ok2 {
			continue
		}
		if err := transport.OutOfRange(tp, parts[i].Offset, lo, hi); err != nil {
			moved = append(moved, err)
			parts[i].Offset, parts[i].Metadata = lo, ""
		}
	}
	return moved, nil
}

// resolveStarts sets Start of each of parts: its committed Offset, or, with
// none, the log start or end (StartOffset latest) listed now, and returns
// the listed ones. kgo would list them only once it fetches the partition,
// after Assigned: with Latest, records produced in between were skipped.
// Listed before Assigned, the start is fixed when the engine is told of
// the partition; AdjustFetchOffsetsFn (adjustStarts) makes kgo start
// there. A listing that fails (a partition of a topic just created may not
// be loaded on its leader yet) is tried again, with backoff, until budget
// ends (kgo heartbeats meanwhile); then the error is returned and those
// partitions keep Start -1 (kgo resolves them itself).
func resolveStarts(ctx context.Context, cl *kgo.Client, parts []transport.Assignment, latest bool, budget time.Duration) (map[transport.TopicPartition]int64, error) {
	var none []transport.TopicPartition
	for i := range parts {
		parts[i].Start = -1
		if parts[i].Offset >= 0 {
			parts[i].Start = parts[i].Offset
		} else {
			none = append(none, parts[i].TopicPartition)
		}
	}
	if len(none) == 0 {
		return nil, nil
	}
	ts := int64(-2)
	if latest {
		ts = -1
	}
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	var starts map[transport.TopicPartition]int64
	for delay := 50 * time.Millisecond; ; delay = min(2*delay, time.Second) {
		var err error
		if starts, err = listOffsets(ctx, cl, none, ts); err == nil {
			break
		}
		if errors.Is(err, kgo.ErrClientClosed) || ctx.Err() != nil {
			return nil, fmt.Errorf("kavari: franz-go consumer: list where partitions with no committed offset start: %w", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
	}
	for i := range parts {
		if s, ok := starts[parts[i].TopicPartition]; ok && parts[i].Offset < 0 && s >= 0 {
			parts[i].Start = s
		}
	}
	return starts, nil
}

// listOffsets returns the offset of each of tps at timestamp ts (-2: the
// log start, -1: the log end).
func listOffsets(ctx context.Context, cl *kgo.Client, tps []transport.TopicPartition, ts int64) (map[transport.TopicPartition]int64, error) {
	req := kmsg.NewPtrListOffsetsRequest()
	req.ReplicaID = -1
	for t, ps := range byTopic(tps) {
		rt := kmsg.NewListOffsetsRequestTopic()
		rt.Topic = t
		for _, p := range ps {
			rp := kmsg.NewListOffsetsRequestTopicPartition()
			rp.Partition, rp.Timestamp, rp.CurrentLeaderEpoch = p, ts, -1
			rt.Partitions = append(rt.Partitions, rp)
		}
		req.Topics = append(req.Topics, rt)
	}
	res, err := req.RequestWith(ctx, cl)
	if err != nil {
		return nil, err
	}
	out := map[transport.TopicPartition]int64{}
	for _, rt := range res.Topics {
		for _, rp := range rt.Partitions {
			if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
				return nil, fmt.Errorf("%s/%d: %w", rt.Topic, rp.Partition, err)
			}
			out[transport.TopicPartition{Topic: rt.Topic, Partition: rp.Partition}] = rp.Offset
		}
	}
	return out, nil
}

// adjustStarts is kgo's AdjustFetchOffsetsFn: each partition kgo found no
// committed offset for starts where onAssigned listed it (resolveStarts),
// not where kgo would list it now. A partition with a committed offset
// (the engine may have committed the listed start already) starts there.
func (c *consumer) adjustStarts(_ context.Context, offsets map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for t, ps := range offsets {
		for p, o := range ps {
			tp := transport.TopicPartition{Topic: t, Partition: p}
			start, ok := c.starts[tp]
			if !ok {
				continue
			}
			delete(c.starts, tp)
			if o.EpochOffset().Offset < 0 {
				ps[p] = kgo.NewOffset().At(start).WithEpoch(-1)
			}
		}
	}
	return offsets, nil
}
