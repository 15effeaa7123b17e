package kavari

// Test-only access to internals for the tests of package kavari_test
// (envelope, decode, tag cache, configuration defaults and benchmarks).
// Nothing here is part of the API.

import (
	"bytes"
	"context"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/kavari-go/kavari/internal/transport"
	"github.com/kavari-go/kavari/internal/transport/kafkago"
)

// toRecord and fromRecord convert between the kafka-go messages the tests
// build and kavari's own records.
func toRecord(m *kafka.Message) *transport.Record {
	r := &transport.Record{Topic: m.Topic, Partition: int32(m.Partition), Offset: m.Offset, Key: m.Key, Value: m.Value, Time: m.Time}
	for _, h := range m.Headers {
		r.Headers = append(r.Headers, transport.Header(h))
	}
	return r
}

func fromRecord(r transport.Record) kafka.Message {
	m := kafka.Message{Topic: r.Topic, Partition: int(r.Partition), Offset: r.Offset, Key: r.Key, Value: r.Value, Time: r.Time}
	for _, h := range r.Headers {
		m.Headers = append(m.Headers, kafka.Header(h))
	}
	return m
}

// NewOnTransport is New on the adapter tr instead of Config.Transport's
// (the in-memory transport, for the engine's own tests).
func NewOnTransport(cfg Config, tr transport.Adapter) (*Client, error) {
	return newWith(cfg, tr)
}

// MessageInfo is what kavari derives from a message for publishing.
type MessageInfo struct {
	Topic   string
	Name    string // logical name: msg_type and ce_type
	Version string
	Key     []byte // nil when the type declares none
}

// DescribeMessage returns the topic, logical name, version and partition key
// of msg, exactly as publishing computes them.
func DescribeMessage(msg any) (MessageInfo, error) {
	info, v, err := messageValue(msg)
	if err != nil {
		return MessageInfo{}, err
	}
	key, err := info.appendKey(nil, v)
	if err != nil {
		return MessageInfo{}, err
	}
	return MessageInfo{Topic: info.topic, Name: info.name, Version: info.version, Key: key}, nil
}

// CachedTypeInfo returns the cached description of msg's type as an opaque
// value: two calls for one type return the identical pointer.
func CachedTypeInfo(msg any) (any, error) {
	info, _, err := messageValue(msg)
	if err != nil {
		return nil, err
	}
	return info, nil
}

// EncodeRecord runs the publish path without I/O: validation, key, JSON and
// headers, as a Client with this Source, MaxMessageBytes and clock would.
func EncodeRecord(ctx context.Context, source string, maxBytes int, now func() time.Time, msg any) (kafka.Message, error) {
	if now == nil {
		now = time.Now
	}
	e := newEncoder(source, maxBytes, now)
	rec, err := e.encode(ctx, msg)
	return fromRecord(rec), err
}

// DecodeRecord turns rec into a message of the type registered on r for its
// topic and msg_type, as the consumer does.
func DecodeRecord(r *Registry, rec *kafka.Message) (any, error) {
	_, msg, err := r.table().decode(toRecord(rec))
	return msg, err
}

// DeadLetterRecord builds the dead letter of rec as the consumer does.
func DeadLetterRecord(rec *kafka.Message, topic string, kind ErrorKind, handler string, attempts int, cause error) kafka.Message {
	return fromRecord(deadLetter(toRecord(rec), topic, kind, handler, attempts, cause))
}

// ConfigWithDefaults returns c with its defaults applied and the result of
// validating it, as New does.
func ConfigWithDefaults(c Config) (Config, error) {
	c.setDefaults()
	return c, c.validate()
}

// WriterOf returns the kafka-go Writer of k.
func WriterOf(k *Client) *kafka.Writer { return k.pub.prod.(*kafkago.Producer).Writer() }

// FreezeRegistry freezes r as Start does, so lookups take the lock-free path.
func FreezeRegistry(r *Registry) { r.freeze() }

// Encoder returns the publish path without I/O bound to one encoder, as a
// Client holds it (for benchmarks).
func Encoder(source string, maxBytes int) func(ctx context.Context, msg any) (transport.Record, error) {
	return newEncoder(source, maxBytes, time.Now).encode
}

// SetWorkerIdle sets how long an idle consumer worker waits for work before
// it exits, and returns a function restoring the previous value.
func SetWorkerIdle(d time.Duration) (restore func()) {
	prev := workerIdle
	workerIdle = d
	return func() { workerIdle = prev }
}

// DeadLetterForm builds the dead letter of rec in form f: 0 full, 1 without
// the value, 2 also without original headers over 1 KiB, 3 also without any
// original header and with a shorter original_error.
func DeadLetterForm(rec *kafka.Message, topic string, kind ErrorKind, handler string, attempts int, cause error, f int) kafka.Message {
	return fromRecord(deadLetterForm(toRecord(rec), topic, kind, handler, attempts, cause, dlForm(f)))
}

// PartitionFloor is how many buffer slots are reserved to each of n partitions.
func PartitionFloor(maxBuffered, n int) int { return partitionFloor(maxBuffered, n) }

// PartitionShare is how many open records one of n partitions may have.
func PartitionShare(maxBuffered, maxInFlight, n int) int {
	return partitionShare(maxBuffered, maxInFlight, n)
}

// DeclareAny is Registry.Declare without the compile-time Msg check, for
// tests of what the run-time checks say about values that are not messages.
func DeclareAny(r *Registry, msg any) error { return r.add(msg, nil) }

// The misuse errors Start returns, for the package's external tests (not
// exported: nothing should branch on them).
var (
	ErrNoGroupID  = errNoGroupID
	ErrNoHandlers = errNoHandlers
	ErrStarted    = errStarted
)

// SetWorkerSlowRecord sets the time per record from which a lane counts as
// slow for the worker pool (0: every lane, so that the pool mostly gives
// every lane a worker at once), and returns a function restoring the
// previous value.
func SetWorkerSlowRecord(d time.Duration) (restore func()) {
	prev := workerSlowRecord
	workerSlowRecord = d
	return func() { workerSlowRecord = prev }
}

// SyncBuffer is a bytes.Buffer safe for a logger's concurrent writes and a
// test's reads.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
