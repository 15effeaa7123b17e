package kavari

import (
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
	// (drains are cut at the session timeout's bound, see DrainTimeout).
	KafkaGo Transport = iota
	// FranzGo is twmb/franz-go: idempotent producing (a retried write is
	// stored once), cooperative-sticky rebalancing (only partitions that
	// move are revoked and drained), heartbeats during drains, commits
	// carrying metadata.
	FranzGo
)

// transports builds each Transport's adapter. Adding a client is one entry.
var transports = map[Transport]func() transport.Transport{
	KafkaGo: kafkago.New,
	FranzGo: func() transport.Transport { return franz.New() },
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
func (c *Config) adapter() (transport.Transport, error) {
	mk, ok := transports[c.Transport]
	if !ok {
		return nil, fmt.Errorf("kavari: invalid Config: unknown Transport %d", int(c.Transport))
	}
	return mk(), nil
}

// transportConfig is c as the adapters see it, consuming topics.
func (c *Config) transportConfig(topics []string) transport.Config {
	tc := transport.Config{
		Brokers:           c.Brokers,
		ClientID:          c.ClientID,
		TLS:               c.TLS,
		Logger:            c.Logger,
		Partitioner:       transport.Partitioner(c.Partitioner),
		BatchTimeout:      c.BatchTimeout,
		BatchSize:         c.BatchSize,
		BatchBytes:        c.BatchBytes,
		AllowAutoCreate:   c.AllowAutoCreate,
		GroupID:           c.GroupID,
		InstanceID:        c.InstanceID,
		Topics:            topics,
		StartOffset:       transport.StartOffset(c.AutoOffsetReset),
		SessionTimeout:    c.SessionTimeout,
		RebalanceTimeout:  c.RebalanceTimeout,
		HeartbeatInterval: c.Heartbeat,
	}
	if c.SASL != nil {
		tc.SASL = &transport.SASL{Mechanism: c.SASL.Mechanism, Username: c.SASL.Username, Password: c.SASL.Password}
	}
	return tc
}
