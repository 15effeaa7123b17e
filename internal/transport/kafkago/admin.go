package kafkago

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/kavari-go/kavari/internal/transport"
	"github.com/kavari-go/kavari/internal/transport/conntrack"
)

// Admin creates and looks up topics with a kafka-go Client whose connections
// are tracked, so Close cuts them.
type Admin struct {
	cfg   transport.Config
	tr    *kafka.Transport
	conns *conntrack.Set
}

// NewAdmin returns an Admin for cfg. It does not contact the brokers.
func (Adapter) NewAdmin(cfg transport.Config) (transport.Admin, error) {
	conns := newConnSet()
	tr, err := newTransport(cfg, conns)
	if err != nil {
		return nil, err
	}
	return &Admin{cfg: cfg, tr: tr, conns: conns}, nil
}

// CreateTopics creates topics that do not exist and waits until the brokers
// list every one of them with leaders.
func (a *Admin) CreateTopics(ctx context.Context, partitions, replication int, names ...string) error {
	if len(names) == 0 {
		return nil
	}
	client := &kafka.Client{Addr: kafka.TCP(a.cfg.Brokers...), Transport: a.tr, Timeout: 30 * time.Second}
	req := &kafka.CreateTopicsRequest{}
	for _, n := range names {
		req.Topics = append(req.Topics, kafka.TopicConfig{Topic: n, NumPartitions: partitions, ReplicationFactor: replication})
	}
	resp, err := client.CreateTopics(ctx, req)
	if err != nil {
		return fmt.Errorf("kavari: create topics: %w", err)
	}
	for name, e := range resp.Errors {
		if e != nil && !errors.Is(e, kafka.TopicAlreadyExists) {
			return fmt.Errorf("kavari: create topic %s: %w", name, e)
		}
	}
	// Wait until metadata lists every topic with leaders.
	for {
		md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: names})
		if err == nil {
			ready := 0
		topics:
			for _, t := range md.Topics {
				if t.Error != nil || len(t.Partitions) == 0 {
					continue
				}
				for _, p := range t.Partitions {
					if p.Error != nil || p.Leader.Host == "" {
						continue topics
					}
				}
				ready++
			}
			if ready == len(names) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kavari: topics not ready: %w", context.Cause(ctx))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// MissingTopics returns the names the brokers do not know, asking with a
// transport of its own so that no cached metadata answers.
func (a *Admin) MissingTopics(ctx context.Context, names ...string) ([]string, error) {
	tr, err := newTransport(a.cfg, a.conns)
	if err != nil {
		return nil, err
	}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(a.cfg.Brokers...), Transport: tr}
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: names})
	if err != nil {
		return nil, err
	}
	known := map[string]bool{}
	for _, t := range md.Topics {
		if t.Error == nil {
			known[t.Name] = true
		} else if !errors.Is(t.Error, kafka.UnknownTopicOrPartition) {
			return nil, fmt.Errorf("topic %s: %w", t.Name, t.Error)
		}
	}
	var missing []string
	for _, n := range names {
		if !known[n] {
			missing = append(missing, n)
		}
	}
	return missing, nil
}

// EndOffsets returns each partition's high watermark.
func (a *Admin) EndOffsets(ctx context.Context, tps ...transport.TopicPartition) (map[transport.TopicPartition]int64, error) {
	client := &kafka.Client{Addr: kafka.TCP(a.cfg.Brokers...), Transport: a.tr, Timeout: 10 * time.Second}
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for _, tp := range tps {
		req.Topics[tp.Topic] = append(req.Topics[tp.Topic], kafka.LastOffsetOf(int(tp.Partition)))
	}
	resp, err := client.ListOffsets(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("kavari: list offsets: %w", err)
	}
	out := make(map[transport.TopicPartition]int64, len(tps))
	for topic, ps := range resp.Topics {
		for _, p := range ps {
			if p.Error != nil {
				return nil, fmt.Errorf("kavari: list offsets of %s/%d: %w", topic, p.Partition, p.Error)
			}
			out[transport.TopicPartition{Topic: topic, Partition: int32(p.Partition)}] = p.LastOffset
		}
	}
	return out, nil
}

// Close cuts every connection the admin opened.
func (a *Admin) Close() error {
	a.conns.Cut(true)
	a.tr.CloseIdleConnections()
	return nil
}
