package kavari

import (
	"errors"
	"fmt"

	"github.com/kavari-go/kavari/internal/transport"
	"github.com/kavari-go/kavari/internal/transport/franz"
	"github.com/kavari-go/kavari/internal/transport/kafkago"
)

// Transport selects the Kafka client kavari runs on. Every Config field means
// the same on each; a field a transport cannot honour is rejected by New.
type Transport int

const (
	// KafkaGo is segmentio/kafka-go, the default: eager rebalances, no
	// idempotent producing, no heartbeats while a revoke or Stop drains
	// (drains are cut at the session timeout's bound, see Config.Consume.DrainTimeout).
	KafkaGo Transport = iota
	// FranzGo is twmb/franz-go: idempotent producing (a retried write is
	// stored once), cooperative-sticky rebalancing (only partitions that
	// move are revoked and drained), heartbeats during drains, commits
	// carrying metadata. Its members also offer the eager range assignor,
	// which KafkaGo members (and librdkafka's by default) offer too: a
	// group mixing both transports, as during a rolling change of
	// Transport, agrees on range and rebalances eagerly until its last
	// KafkaGo member left.
	FranzGo
)

// GroupProtocol is the consumer group protocol.
type GroupProtocol int

const (
	// ClassicProtocol is the JoinGroup/SyncGroup protocol: the members
	// assign partitions (eager range on KafkaGo, cooperative-sticky on
	// FranzGo; eager range in a group with members of both).
	ClassicProtocol GroupProtocol = iota
	// ConsumerProtocol is KIP-848's: the broker assigns partitions and sets
	// the session timeout and heartbeat interval (group.consumer.*), so
	// Config.Consume.SessionTimeout and Config.Consume.HeartbeatInterval must be left zero. It
	// needs Kafka 4.0 or later and Transport FranzGo.
	ConsumerProtocol
)

func (p GroupProtocol) String() string {
	switch p {
	case ClassicProtocol:
		return "ClassicProtocol"
	case ConsumerProtocol:
		return "ConsumerProtocol"
	}
	return fmt.Sprintf("GroupProtocol(%d)", int(p))
}

// transports builds each Transport's adapter for a Config. Adding a client
// is one entry.
var transports = map[Transport]func(*Config) transport.Adapter{
	KafkaGo: func(*Config) transport.Adapter { return kafkago.New() },
	FranzGo: func(c *Config) transport.Adapter {
		if c.Consume.GroupProtocol == ConsumerProtocol {
			return franz.New(franz.ConsumerGroupProtocol())
		}
		return franz.New()
	},
}

// checkTransport rejects what the user set in c (before defaults) that the
// transport cannot honour, rather than ignoring it.
func (c *Config) checkTransport(caps transport.Capabilities) error {
	var errs []error
	if c.Consume.InstanceID != "" && !caps.StaticMembership {
		errs = append(errs, fmt.Errorf("Consume.InstanceID: %v has no static membership (use FranzGo)", c.Transport))
	}
	if c.Consume.GroupProtocol == ConsumerProtocol && c.Transport != FranzGo {
		errs = append(errs, fmt.Errorf("Consume.GroupProtocol ConsumerProtocol (KIP-848): %v speaks only the classic protocol (use FranzGo)", c.Transport))
	}
	if c.Consume.Isolation == ReadCommitted && !caps.ReadCommitted {
		errs = append(errs, fmt.Errorf("Consume.Isolation ReadCommitted: %v cannot read committed: its reader hands over the records of aborted transactions (use FranzGo)", c.Transport))
	}
	if c.Consume.ExactlyOnce.enabled() && !caps.Transactions {
		errs = append(errs, fmt.Errorf("Consume.ExactlyOnce: %v has no transactional producer, so a handler's writes and its record's offset cannot commit together (use FranzGo)", c.Transport))
	}
	if c.Transport == FranzGo {
		if c.Publish.BatchTimeout != 0 {
			errs = append(errs, errors.New("Publish.BatchTimeout: FranzGo publishes without linger (a synchronous Publish would wait for it); it batches what is buffered while a request is in flight"))
		}
		if c.Consume.GroupProtocol == ConsumerProtocol {
			if c.Consume.SessionTimeout != 0 {
				errs = append(errs, errors.New("Consume.GroupProtocol ConsumerProtocol: the broker sets Consume.SessionTimeout (group.consumer.session.timeout.ms); leave it zero"))
			}
			if c.Consume.HeartbeatInterval != 0 {
				errs = append(errs, errors.New("Consume.GroupProtocol ConsumerProtocol: the broker sets Consume.HeartbeatInterval (group.consumer.heartbeat.interval.ms); leave it zero"))
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("kavari: invalid Config for Transport %v: %w", c.Transport, errors.Join(errs...))
	}
	return nil
}

func (t Transport) String() string {
	switch t {
	case KafkaGo:
		return "KafkaGo"
	case FranzGo:
		return "FranzGo"
	}
	return fmt.Sprintf("Transport(%d)", int(t))
}

// adapter returns the adapter of c.Transport.
func (c *Config) adapter() (transport.Adapter, error) {
	mk, ok := transports[c.Transport]
	if !ok {
		return nil, fmt.Errorf("kavari: invalid Config: unknown Transport %d", int(c.Transport))
	}
	return mk(c), nil
}

// transportConfig is c as the adapters see it, consuming topics.
func (c *Config) transportConfig(topics []string) transport.Config {
	tc := transport.Config{
		Brokers:           c.Brokers,
		ClientID:          c.ClientID,
		TLS:               c.TLS,
		Logger:            c.Logger,
		Partitioner:       transport.Partitioner(c.Publish.Partitioner),
		BatchTimeout:      c.Publish.BatchTimeout,
		BatchSize:         c.Publish.BatchSize,
		BatchBytes:        c.Publish.BatchBytes,
		AllowAutoCreate:   c.Publish.AllowAutoCreate,
		GroupID:           c.Consume.GroupID,
		InstanceID:        c.Consume.InstanceID,
		Topics:            topics,
		StartOffset:       transport.StartOffset(c.Consume.AutoOffsetReset),
		SessionTimeout:    c.Consume.SessionTimeout,
		RebalanceTimeout:  c.Consume.RebalanceTimeout,
		HeartbeatInterval: c.Consume.HeartbeatInterval,
		ReadCommitted:     c.Consume.Isolation == ReadCommitted || c.Consume.ExactlyOnce.enabled(),
	}
	if c.SASL != nil {
		tc.SASL = &transport.SASL{Mechanism: c.SASL.Mechanism, Username: c.SASL.Username, Password: c.SASL.Password}
	}
	return tc
}
