// Package kafkago is kavari's transport on segmentio/kafka-go: a Writer
// configured for publishing, a consumer group member (the group protocol
// run on a Client, group.go, rather than kafka-go's ConsumerGroup, whose
// generation does not survive a broken coordinator connection) with a
// partition Reader per assignment, and admin calls on a Client. It is the
// only package of the library that imports kafka-go.
//
// What kafka-go cannot do, it says in Capabilities: no idempotent producing,
// eager rebalances only (every partition is revoked at each one), no
// heartbeats once a generation ends (so drains must fit in the session
// timeout), no static membership and no commit metadata.
package kafkago

import (
	"fmt"
	"time"
	"unsafe"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"

	"github.com/kavari-go/kavari/internal/transport"
	"github.com/kavari-go/kavari/internal/transport/conntrack"
)

// Adapter builds kafka-go producers, consumers and admins.
type Adapter struct{}

// New returns the kafka-go transport.
func New() transport.Adapter { return Adapter{} }

// Capabilities reports what kafka-go can do: none of the optional features.
func (Adapter) Capabilities() transport.Capabilities {
	return transport.Capabilities{}
}

// mechanism builds the kafka-go SASL mechanism of s.
func mechanism(s *transport.SASL) (sasl.Mechanism, error) {
	if s == nil {
		return nil, nil
	}
	switch s.Mechanism {
	case "PLAIN":
		return plain.Mechanism{Username: s.Username, Password: s.Password}, nil
	case "SCRAM-SHA-256":
		return scram.Mechanism(scram.SHA256, s.Username, s.Password)
	case "SCRAM-SHA-512":
		return scram.Mechanism(scram.SHA512, s.Username, s.Password)
	}
	return nil, fmt.Errorf("kavari: SASL.Mechanism %q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", s.Mechanism)
}

// newTransport returns a kafka-go transport for the writer and admin calls
// whose connections are tracked by conns.
func newTransport(cfg transport.Config, conns *conntrack.Set) (*kafka.Transport, error) {
	m, err := mechanism(cfg.SASL)
	if err != nil {
		return nil, err
	}
	return &kafka.Transport{ClientID: cfg.ClientID, TLS: cfg.TLS, SASL: m, DialTimeout: 10 * time.Second,
		MetadataTTL: 5 * time.Second, Dial: conns.Dial}, nil
}

// newDialer returns the kafka-go dialer of the consumer group and the
// partition readers, its connections tracked by conns.
func newDialer(cfg transport.Config, conns *conntrack.Set) (*kafka.Dialer, error) {
	m, err := mechanism(cfg.SASL)
	if err != nil {
		return nil, err
	}
	return &kafka.Dialer{ClientID: cfg.ClientID, Timeout: 10 * time.Second, DualStack: true, TLS: cfg.TLS,
		SASLMechanism: m, DialFunc: conns.Dial}, nil
}

func balancer(p transport.Partitioner) kafka.Balancer {
	if p == transport.CRC32 {
		return &kafka.CRC32Balancer{}
	}
	return &kafka.Murmur2Balancer{}
}

// kafka.Header and transport.Header have identical underlying types (the
// conversion below does not compile otherwise), so a slice of one is a
// slice of the other: headers cross the seam without a copy.
var _ = transport.Header(kafka.Header{})

func toHeaders(hs []transport.Header) []kafka.Header {
	if len(hs) == 0 {
		return nil
	}
	return unsafe.Slice((*kafka.Header)(unsafe.Pointer(unsafe.SliceData(hs))), len(hs))
}

func fromHeaders(hs []kafka.Header) []transport.Header {
	if len(hs) == 0 {
		return nil
	}
	return unsafe.Slice((*transport.Header)(unsafe.Pointer(unsafe.SliceData(hs))), len(hs))
}
