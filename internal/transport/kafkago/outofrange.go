package kafkago

import (
	"context"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/kavari-go/kavari/internal/transport"
)

// clampOutOfRange moves each committed offset of m that lies outside its
// partition's log to the log start, and returns one error per offset
// moved (for the log and Health). Below the start, the records were
// deleted before the group handled them; past the end, the log was
// truncated or recreated: either way every record the log holds from its
// start is one the group has not handled, and none is skipped. kafka-go's
// reader would move an offset below the start there itself, but wait, past
// the end, until the log reached the committed offset. When the offsets
// cannot be listed, the error is returned and the offsets stay.
func (c *Consumer) clampOutOfRange(ctx context.Context, m *membership) ([]error, error) {
	if len(m.offsets) == 0 {
		return nil, nil
	}
	parts := map[string][]int{}
	for t, ps := range m.offsets {
		for p := range ps {
			parts[t] = append(parts[t], p)
		}
	}
	first, err := c.listOffsets(ctx, parts, false)
	if err != nil {
		return nil, fmt.Errorf("kavari: kafka-go consumer: list log start offsets: %w", err)
	}
	end, err := c.listOffsets(ctx, parts, true)
	if err != nil {
		return nil, fmt.Errorf("kavari: kafka-go consumer: list log end offsets: %w", err)
	}
	var moved []error
	for t, ps := range m.offsets {
		for p, off := range ps {
			lo, ok1 := first[t][p]
			hi, ok2 := end[t][p]
			if !ok1 || !ok2 {
				continue
			}
			if err := transport.OutOfRange(transport.TopicPartition{Topic: t, Partition: int32(p)}, off, lo, hi); err != nil {
				moved = append(moved, err)
				ps[p] = lo
			}
		}
	}
	return moved, nil
}

// resolveStarts lists where each assigned partition of m with no committed
// offset starts, the log start or end as StartOffset says, into m.starts.
// kafka-go's reader would resolve it at its first fetch, after Assigned:
// with Latest, records produced in between were skipped. Listed here,
// before Assigned, the start is fixed when the engine is told of the
// partition. A listing that fails (a partition of a topic just created
// may not be loaded on its leader yet) is tried again every retryBackoff
// while more than half the session is left; then the error is returned.
func (c *Consumer) resolveStarts(ctx context.Context, m *membership) error {
	parts := map[string][]int{}
	for t, ps := range m.assigned {
		for _, p := range ps {
			if _, ok := m.offsets[t][p]; !ok {
				parts[t] = append(parts[t], p)
			}
		}
	}
	if len(parts) == 0 {
		return nil
	}
	latest := c.cfg.StartOffset == transport.Latest
	for {
		starts, err := c.listOffsets(ctx, parts, latest)
		if err == nil {
			m.starts = starts
			return nil
		}
		if ctx.Err() != nil || m.sessionLeft(c.cfg.SessionTimeout) < c.cfg.SessionTimeout/2 {
			return fmt.Errorf("kavari: kafka-go consumer: list where partitions with no committed offset start: %w", err)
		}
		t := time.NewTimer(retryBackoff)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
}

// listOffsets returns the log start (last false) or end (last true) of
// each partition of parts (topic → partitions).
func (c *Consumer) listOffsets(ctx context.Context, parts map[string][]int, last bool) (map[string]map[int]int64, error) {
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for t, ps := range parts {
		for _, p := range ps {
			o := kafka.FirstOffsetOf(p)
			if last {
				o = kafka.LastOffsetOf(p)
			}
			req.Topics[t] = append(req.Topics[t], o)
		}
	}
	lctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	res, err := c.cl.ListOffsets(lctx, req)
	if err != nil {
		return nil, err
	}
	out := map[string]map[int]int64{}
	for t, ps := range res.Topics {
		out[t] = map[int]int64{}
		for _, p := range ps {
			if p.Error != nil {
				return nil, fmt.Errorf("%s/%d: %w", t, p.Partition, p.Error)
			}
			out[t][p.Partition] = p.FirstOffset
			if last {
				out[t][p.Partition] = p.LastOffset
			}
		}
	}
	return out, nil
}
