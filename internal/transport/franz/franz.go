// Package franz is kavari's transport on franz-go (pkg/kgo).
//
// What it does that the kafka-go transport cannot:
//
//   - Producing is idempotent (kgo's default): a write kgo retries after a
//     lost response stores no duplicate. Acks come from all in-sync replicas,
//     and a synchronous Produce does not wait for a linger.
//   - The group is cooperative-sticky by default: a rebalance revokes only the
//     partitions that move, and the others keep being fetched and delivered
//     while those drain. [ConsumerGroupProtocol] opts into the KIP-848
//     protocol, where the broker assigns partitions.
//   - Static membership (Config.InstanceID): a member restarted with the same
//     id within the session timeout gets its partitions back, in the same
//     generation, without a rebalance.
//   - kgo keeps heartbeating while Revoked blocks, so a drain may take up to
//     the rebalance timeout; at Close too, which revokes before it leaves.
//   - Commits carry metadata, can never move a partition's offset backwards,
//     and are fenced to the generation that owns the partition.
package franz

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/kavari-go/kavari/internal/transport"
)

// Option changes the transport New returns.
type Option func(*franzTransport)

// ConsumerGroupProtocol makes consumers join with the KIP-848 consumer group
// protocol (the broker assigns partitions; Kafka 4.0 or later, and kgo
// recommends 4.3 or later, where an offset commit cannot meet a
// STALE_MEMBER_EPOCH during ordinary operation). Without it the classic
// protocol runs with the cooperative-sticky balancer, or eager range in a
// group whose other members do not offer cooperative-sticky (balancers).
func ConsumerGroupProtocol() Option {
	return func(t *franzTransport) { t.kip848 = true }
}

// New returns the franz-go transport.
func New(opts ...Option) transport.Adapter {
	t := &franzTransport{}
	for _, o := range opts {
		o(t)
	}
	return t
}

type franzTransport struct {
	kip848 bool
}

// Capabilities reports what franz-go does: everything kavari can use.
func (t *franzTransport) Capabilities() transport.Capabilities {
	return transport.Capabilities{
		Idempotent:            true,
		Cooperative:           true,
		HeartbeatsDuringDrain: true,
		StaticMembership:      true,
		CommitMetadata:        true,
		WaitsForBacklog:       true,
		ReadCommitted:         true,
		Transactions:          true,
	}
}

// clientOpts are the options every client (producer, consumer, admin) shares.
func clientOpts(cfg transport.Config) ([]kgo.Opt, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("kavari: franz transport: no brokers")
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		// A moved leader or a new topic is found after 250 ms rather
		// than kgo's 5 s.
		kgo.MetadataMinAge(250 * time.Millisecond),
	}
	if cfg.ClientID != "" {
		opts = append(opts, kgo.ClientID(cfg.ClientID))
	}
	if cfg.TLS != nil {
		opts = append(opts, kgo.DialTLSConfig(cfg.TLS.Clone()))
	}
	if cfg.SASL != nil {
		m, err := saslMechanism(*cfg.SASL)
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.SASL(m))
	}
	if cfg.Logger != nil {
		opts = append(opts, kgo.WithLogger(slogLogger{cfg.Logger}))
	}
	return opts, nil
}

func saslMechanism(s transport.SASL) (sasl.Mechanism, error) {
	switch strings.ToUpper(s.Mechanism) {
	case "PLAIN":
		return plain.Auth{User: s.Username, Pass: s.Password}.AsMechanism(), nil
	case "SCRAM-SHA-256":
		return scram.Auth{User: s.Username, Pass: s.Password}.AsSha256Mechanism(), nil
	case "SCRAM-SHA-512":
		return scram.Auth{User: s.Username, Pass: s.Password}.AsSha512Mechanism(), nil
	}
	return nil, fmt.Errorf("kavari: franz transport: unsupported SASL mechanism %q", s.Mechanism)
}

// slogLogger passes kgo's log lines to slog. kgo's Info lines (every join,
// assignment and heartbeat loop) are logged at Debug, but for the reset of
// an out-of-range offset, a warning as on the other transports; its
// warnings and errors at their own level.
type slogLogger struct{ l *slog.Logger }

func (s slogLogger) Level() kgo.LogLevel {
	if s.l.Enabled(context.Background(), slog.LevelDebug) || s.l.Enabled(context.Background(), slog.LevelWarn) {
		return kgo.LogLevelInfo // for the out-of-range reset
	}
	return kgo.LogLevelWarn
}

func (s slogLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	lv := slog.LevelDebug
	switch {
	case level == kgo.LogLevelError:
		lv = slog.LevelError
	case level == kgo.LogLevelWarn, strings.Contains(msg, "OFFSET_OUT_OF_RANGE"):
		lv = slog.LevelWarn
	}
	if !s.l.Enabled(context.Background(), lv) {
		return
	}
	s.l.Log(context.Background(), lv, "kgo: "+msg, keyvals...)
}
