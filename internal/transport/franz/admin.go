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

// NewAdmin returns the admin client (topics, end offsets), with kmsg
// requests on a plain kgo client.
func (t *franzTransport) NewAdmin(cfg transport.Config) (transport.Admin, error) {
	opts, err := clientOpts(cfg)
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kavari: franz admin: %w", err)
	}
	return &admin{cl: cl}, nil
}

type admin struct{ cl *kgo.Client }

// CreateTopics creates those of topics that do not exist and waits until
// every partition of every topic has a leader.
func (a *admin) CreateTopics(ctx context.Context, partitions int, replication int, topics ...string) error {
	if len(topics) == 0 {
		return nil
	}
	req := kmsg.NewPtrCreateTopicsRequest()
	req.TimeoutMillis = 30000
	if dl, ok := ctx.Deadline(); ok {
		req.TimeoutMillis = int32(max(time.Until(dl).Milliseconds(), 1000))
	}
	for _, name := range topics {
		rt := kmsg.NewCreateTopicsRequestTopic()
		rt.Topic = name
		rt.NumPartitions = int32(partitions)
		rt.ReplicationFactor = int16(replication)
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, a.cl)
	if err != nil {
		return fmt.Errorf("kavari: create topics: %w", err)
	}
	var errs []error
	for _, rt := range resp.Topics {
		if err := kerr.ErrorForCode(rt.ErrorCode); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			msg := ""
			if rt.ErrorMessage != nil {
				msg = ": " + *rt.ErrorMessage
			}
			errs = append(errs, fmt.Errorf("kavari: create topic %q: %w%s", rt.Topic, err, msg))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return a.waitLeaders(ctx, topics)
}

// waitLeaders polls until every partition of topics has a leader that
// serves it.
func (a *admin) waitLeaders(ctx context.Context, topics []string) error {
	delay := 20 * time.Millisecond
	for {
		meta, err := a.metadata(ctx, topics)
		ready := err == nil
		if ready {
			for _, mt := range meta.Topics {
				if mt.ErrorCode != 0 || len(mt.Partitions) == 0 {
					ready = false
				}
				for _, mp := range mt.Partitions {
					if mp.ErrorCode != 0 || mp.Leader < 0 {
						ready = false
					}
				}
			}
		}
		if ready {
			// Metadata names a leader a little before the leader
			// serves the partition: ListOffsets goes to the leader and
			// answers NOT_LEADER until it does.
			tps := make([]transport.TopicPartition, 0)
			for _, mt := range meta.Topics {
				for _, mp := range mt.Partitions {
					tps = append(tps, transport.TopicPartition{Topic: *mt.Topic, Partition: mp.Partition})
				}
			}
			if _, err = a.EndOffsets(ctx, tps...); err == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = errors.New("partitions without a leader")
			}
			return fmt.Errorf("kavari: waiting for topic leaders: %w (%w)", ctx.Err(), err)
		case <-time.After(delay):
		}
		delay = min(2*delay, 500*time.Millisecond)
	}
}

func (a *admin) metadata(ctx context.Context, topics []string) (*kmsg.MetadataResponse, error) {
	req := kmsg.NewPtrMetadataRequest()
	req.AllowAutoTopicCreation = false
	for _, name := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(name)
		req.Topics = append(req.Topics, rt)
	}
	return req.RequestWith(ctx, a.cl)
}

// MissingTopics returns those of topics the cluster does not have.
func (a *admin) MissingTopics(ctx context.Context, topics ...string) ([]string, error) {
	if len(topics) == 0 {
		return nil, nil
	}
	meta, err := a.metadata(ctx, topics)
	if err != nil {
		return nil, fmt.Errorf("kavari: topic metadata: %w", err)
	}
	found := make(map[string]bool, len(meta.Topics))
	for _, mt := range meta.Topics {
		if mt.Topic == nil {
			continue
		}
		switch err := kerr.ErrorForCode(mt.ErrorCode); {
		case err == nil:
			found[*mt.Topic] = true
		case errors.Is(err, kerr.UnknownTopicOrPartition):
		default:
			return nil, fmt.Errorf("kavari: topic metadata for %q: %w", *mt.Topic, err)
		}
	}
	var missing []string
	for _, name := range topics {
		if !found[name] {
			missing = append(missing, name)
		}
	}
	return missing, nil
}

// EndOffsets returns each partition's high watermark (ListOffsets at latest,
// which kgo sends to each partition's leader).
func (a *admin) EndOffsets(ctx context.Context, tps ...transport.TopicPartition) (map[transport.TopicPartition]int64, error) {
	out := make(map[transport.TopicPartition]int64, len(tps))
	if len(tps) == 0 {
		return out, nil
	}
	req := kmsg.NewPtrListOffsetsRequest()
	req.ReplicaID = -1
	byTopic := map[string]int{}
	for _, tp := range tps {
		i, ok := byTopic[tp.Topic]
		if !ok {
			rt := kmsg.NewListOffsetsRequestTopic()
			rt.Topic = tp.Topic
			req.Topics = append(req.Topics, rt)
			i = len(req.Topics) - 1
			byTopic[tp.Topic] = i
		}
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition = tp.Partition
		rp.Timestamp = -1 // latest: the high watermark
		rp.CurrentLeaderEpoch = -1
		req.Topics[i].Partitions = append(req.Topics[i].Partitions, rp)
	}
	shards := a.cl.RequestSharded(ctx, req)
	var errs []error
	for _, sh := range shards {
		if sh.Err != nil {
			errs = append(errs, sh.Err)
			continue
		}
		resp := sh.Resp.(*kmsg.ListOffsetsResponse)
		for _, rt := range resp.Topics {
			for _, rp := range rt.Partitions {
				if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
					errs = append(errs, fmt.Errorf("%s/%d: %w", rt.Topic, rp.Partition, err))
					continue
				}
				out[transport.TopicPartition{Topic: rt.Topic, Partition: rp.Partition}] = rp.Offset
			}
		}
	}
	if len(errs) > 0 {
		return out, fmt.Errorf("kavari: end offsets: %w", errors.Join(errs...))
	}
	return out, nil
}

// Close releases the admin client's connections.
func (a *admin) Close() error {
	a.cl.Close()
	return nil
}
