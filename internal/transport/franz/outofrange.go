package franz

import (
	"context"
	"fmt"

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
	list := func(ts int64) (map[transport.TopicPartition]int64, error) {
		req := kmsg.NewPtrListOffsetsRequest()
		req.ReplicaID = -1
		byT := map[string][]int32{}
		for tp := range idx {
			byT[tp.Topic] = append(byT[tp.Topic], tp.Partition)
		}
		for t, ps := range byT {
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
