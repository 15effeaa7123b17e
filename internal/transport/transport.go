// Package transport is the seam between kavari's engine (publisher retries
// and async queue; consumer lanes, offset tracking, retries, dead letters,
// commits, drains, Stop, Health) and a Kafka client. The engine sees only
// this package's types; each client has one adapter (internal/transport/kafkago,
// internal/transport/franz, and internal/transport/memory for the engine's own
// tests), and records are converted to Record once, at the adapter.
package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// ErrCommitUnconfirmed marks a Commit error whose request may have reached
// the broker (the connection broke or was cut, or the request timed out,
// before an answer): the broker may have applied the commit, or may still.
// An error the broker answered with (a refused commit) does not match it.
var ErrCommitUnconfirmed = errors.New("the commit may have reached the broker, its outcome is unknown")

// ErrMetadataTooLarge marks a Commit error for an offset whose metadata is
// longer than the broker allows (OFFSET_METADATA_TOO_LARGE: its
// offset.metadata.max.bytes); the same offset with shorter metadata would
// be accepted.
var ErrMetadataTooLarge = errors.New("the commit metadata is larger than the broker's offset.metadata.max.bytes")

// Header is one record header.
type Header struct {
	Key   string
	Value []byte
}

// Record is a Kafka record as kavari sees it, produced or fetched.
type Record struct {
	Topic     string
	Partition int32 // set by Produce on success; by the adapter on fetch
	Offset    int64 // set by Produce on success; by the adapter on fetch
	Key       []byte
	Value     []byte
	Headers   []Header
	Time      time.Time // the record timestamp (fetch); zero lets the client set it (produce)

	// InFlight is a Producer's own state of a write of this record that an
	// earlier Produce call left unsettled (its attempt ended while the
	// client still held the record, sent or not). kavari keeps it across
	// its retries of the same record and never reads it; the Producer that
	// finds it settles that write instead of writing the record again, so
	// a retry cannot store the record twice. Nil on a new record.
	InFlight any
}

// TopicPartition names one partition.
type TopicPartition struct {
	Topic     string
	Partition int32
}

// Partitioner chooses a keyed record's partition. Both adapters must pick the
// same partition for the same key and partition count.
type Partitioner int

const (
	Murmur2 Partitioner = iota // the Java client's default
	CRC32                      // librdkafka's default
)

// StartOffset says where to begin on a partition with no committed offset.
type StartOffset int

const (
	Earliest StartOffset = iota
	Latest
)

// SASL is SASL authentication: Mechanism is "PLAIN", "SCRAM-SHA-256" or
// "SCRAM-SHA-512".
type SASL struct {
	Mechanism, Username, Password string
}

// Config is what every adapter needs, already defaulted and validated by
// kavari. What an adapter cannot honour follows from its Capabilities (and
// the Transport selected): kavari's New rejects a Config that asks for it
// (Config.checkTransport in package kavari), so an adapter never sees one.
type Config struct {
	Brokers  []string
	ClientID string
	TLS      *tls.Config
	SASL     *SASL
	Logger   *slog.Logger

	// Producing.
	Partitioner     Partitioner
	BatchTimeout    time.Duration // how long a batch may wait to fill (linger); 0: none
	BatchSize       int
	BatchBytes      int64
	AllowAutoCreate bool

	// Consuming.
	GroupID           string
	InstanceID        string // static membership; "" for none
	Topics            []string
	StartOffset       StartOffset
	SessionTimeout    time.Duration
	RebalanceTimeout  time.Duration
	HeartbeatInterval time.Duration
	// ReadCommitted reads only committed transactional records (Kafka's
	// read_committed): up to the last stable offset, never a record of an
	// aborted transaction. False reads every record (read_uncommitted).
	ReadCommitted bool

	// TransactionalID makes the consumer Transactional: it reads committed
	// and produces in transactions under this id. "" for none.
	TransactionalID string
	// TransactionTimeout is how long the broker lets a transaction stay
	// open before it aborts it (transaction.timeout.ms); 0 keeps the
	// client's default.
	TransactionTimeout time.Duration
}

// Capabilities says what an adapter's client can do; the engine adapts to it
// (for example it bounds drains by the session timeout when the client stops
// heartbeating during them).
type Capabilities struct {
	Idempotent            bool // a retried produce stores no duplicate
	Cooperative           bool // a rebalance revokes only the partitions that move
	HeartbeatsDuringDrain bool // Revoked may block up to the rebalance timeout
	StaticMembership      bool // Config.InstanceID is honoured
	CommitMetadata        bool // Commit stores Offset.Metadata and Assigned returns it
	// WaitsForBacklog: after each delivery the consumer asks the handler
	// (a Backlogger) whether the partitions it delivered to have enough
	// queued and, if so, takes no more records from its client, beyond
	// what the client had already fetched, until they drained. The engine
	// then pauses a partition only when its feeder waits for room or its
	// backlog has stood 100 ms, not whenever its queue is full: pausing
	// makes some clients (kgo) drop what they fetched for it, which is
	// fetched again.
	WaitsForBacklog bool
	// ReadCommitted: the consumer honours Config.ReadCommitted, never
	// delivering a record of an aborted transaction (nor a transaction
	// marker).
	ReadCommitted bool
	// Transactions: a consumer built with Config.TransactionalID is
	// Transactional.
	Transactions bool
}

// Producer writes records. It is safe for concurrent use.
type Producer interface {
	// Produce writes recs (acks from all in-sync replicas, partition from
	// the key with the configured partitioner) and returns when each is
	// acknowledged or has failed; it does not retry (kavari does, with its
	// own policy). On success it sets each record's Partition and Offset.
	// It returns nil when every record was acknowledged, else one error per
	// record (nil for the acknowledged ones), each classified with a
	// *ProduceError.
	Produce(ctx context.Context, recs []*Record) []error
	// Close releases every connection and goroutine the producer started.
	// It may be called more than once, also while Produce calls are under
	// way (at Stop's deadline kavari cuts the connections that way): they
	// then fail.
	Close() error
}

// noLingerKey marks a context made by WithoutLinger.
type noLingerKey struct{}

// WithoutLinger returns ctx marked so that a Producer sends the records of
// a Produce call made with it at once, without waiting up to BatchTimeout
// for more records to fill their batch: for writes that hold a partition's
// commits until they are acknowledged (retry-topic moves). A Producer that
// does not linger ignores the mark.
func WithoutLinger(ctx context.Context) context.Context {
	return context.WithValue(ctx, noLingerKey{}, true)
}

// NoLinger reports whether ctx was marked by WithoutLinger.
func NoLinger(ctx context.Context) bool {
	return ctx.Value(noLingerKey{}) != nil
}

// ErrorKind classifies a produce failure for kavari's retry decision.
type ErrorKind int

const (
	Retriable    ErrorKind = iota // leader/metadata/network/timeout: try again
	TooLarge                      // the broker refuses the record at this size
	UnknownTopic                  // the topic does not exist (and is not auto-created)
	Permanent                     // authorization, invalid record, ... : do not retry
	Closed                        // the producer was closed
)

// ProduceError is one record's produce failure.
type ProduceError struct {
	Kind ErrorKind
	// MayHaveBeenWritten is true when the request may have reached the
	// broker (timeout or connection lost mid-request): the outcome is
	// unknown.
	MayHaveBeenWritten bool
	Err                error
}

func (e *ProduceError) Error() string { return e.Err.Error() }
func (e *ProduceError) Unwrap() error { return e.Err }

// KindOf returns err's ErrorKind (Retriable when err is not a *ProduceError).
func KindOf(err error) ErrorKind {
	var pe *ProduceError
	if errors.As(err, &pe) {
		return pe.Kind
	}
	return Retriable
}

// Generation identifies one membership of the group: commits are fenced to it.
type Generation struct {
	ID       int32
	MemberID string
}

// Assignment is one partition given to this member, with where to start.
type Assignment struct {
	TopicPartition
	// Offset is the committed offset to resume from, or -1 when none is
	// committed (StartOffset applies).
	Offset int64
	// Metadata is the committed offset's metadata ("" when none or when the
	// adapter cannot read it).
	Metadata string
	// Start is where delivery of the partition starts, fixed before
	// Assigned is called: Offset when one is committed, else the log
	// start or end that StartOffset chose, listed then (so with Latest
	// every record produced once Assigned was called is delivered). -1
	// when the adapter could not list it: its client then starts as
	// StartOffset says, at its first fetch.
	Start int64
}

// Offset is one partition's commit.
type Offset struct {
	TopicPartition
	Offset   int64 // the next record to read
	Metadata string
}

// GroupHandler is the engine's side of a consumer group. The adapter calls
// it from its own goroutines; Assigned, Revoked and Lost are never called
// concurrently with each other.
type GroupHandler interface {
	// Assigned gives the member partitions, in the generation gen. On a
	// cooperative client it names only the partitions added: those kept
	// through a rebalance stay owned, and the generation they were
	// assigned in still commits them. It is called at every generation
	// the member joins, with no parts when nothing was added, so the
	// engine always knows the current generation.
	Assigned(gen Generation, parts []Assignment)
	// Revoked takes partitions away. It blocks while the engine drains them
	// and commits (Commit with gen); it returns when they are released. On
	// an eager client every partition is revoked at each rebalance.
	Revoked(gen Generation, parts []TopicPartition)
	// Lost says partitions are gone without a chance to commit (session
	// expired, fenced): the engine abandons their work.
	Lost(gen Generation, parts []TopicPartition)
	// Records delivers one partition's records, in offset order, with the
	// partition's high watermark when the client knows it (else -1). It
	// must not block for long: backpressure is Pause/Resume, and with
	// WaitsForBacklog the handler's Backlog.
	Records(tp TopicPartition, recs []*Record, highWatermark int64)
	// Error reports a group or fetch error (for logs and Health); the
	// adapter keeps trying.
	Error(err error)
}

// Backlogger is a GroupHandler that queues what Records delivers. A
// consumer whose Capabilities have WaitsForBacklog calls Backlog for each
// partition it delivered records to, and before it takes more records from
// its client than the client held fetched when the first channel was
// returned, waits until every channel returned is closed (or it stops).
// Backlog returns nil when the partition may take more now. The handler
// closes the channel once the partition's queue drained enough, its
// fetching was paused, or the partition was revoked or lost, so a partition
// whose handlers are stuck or slow never holds up the others for long.
type Backlogger interface {
	Backlog(tp TopicPartition) <-chan struct{}
}

// Consumer is one member of a consumer group.
type Consumer interface {
	// Run joins the group and consumes until ctx ends or Close is called,
	// calling h. Broker failures do not end it: it rejoins with backoff.
	// When ctx ends or Close is called it revokes every partition (Revoked,
	// which drains and commits) and leaves; it returns after that Revoked
	// returned.
	Run(ctx context.Context, h GroupHandler) error
	// Commit commits offsets for partitions owned in gen: the generation
	// they were assigned in, or a later one of this member. It fails when
	// gen is not this member's, when a partition was revoked or lost
	// since gen (fenced), or when the broker refuses.
	Commit(ctx context.Context, gen Generation, offsets []Offset) error
	// Pause stops fetching tps; Resume starts again. Records already
	// fetched may still be delivered after Pause.
	Pause(tps ...TopicPartition)
	Resume(tps ...TopicPartition)
	// Close leaves the group and releases every connection and goroutine,
	// bounded by ctx: it waits for Run to return, and when ctx ends first
	// it cuts the connections so that Run returns soon after. It may be
	// called more than once and concurrently; with ctx already done it cuts
	// at once (kavari does that at Stop's deadline).
	Close(ctx context.Context) error
}

// Admin is what kavari needs besides producing and consuming.
type Admin interface {
	// CreateTopics creates topics that do not exist (replication -1: the
	// broker default) and waits until every partition has a leader.
	CreateTopics(ctx context.Context, partitions int, replication int, topics ...string) error
	// MissingTopics returns those of topics the cluster does not have.
	MissingTopics(ctx context.Context, topics ...string) ([]string, error)
	// EndOffsets returns the high watermark of each partition (for lag).
	EndOffsets(ctx context.Context, tps ...TopicPartition) (map[TopicPartition]int64, error)
	Close() error
}

// Adapter builds the three parts (producer, consumer, admin) on one client
// configuration: one per Kafka client. It is not the public kavari.Transport
// enum, which selects one.
type Adapter interface {
	Capabilities() Capabilities
	NewProducer(cfg Config) (Producer, error)
	NewConsumer(cfg Config) (Consumer, error)
	NewAdmin(cfg Config) (Admin, error)
}

// OutOfRange says what becomes of a committed offset of tp when its log
// holds logStart..logEnd: nil when the offset is in that range; otherwise
// the error that reports it, and the group resumes at logStart (both
// adapters follow this one rule). Below the start, the records were deleted
// before the group handled them; past the end, the log was truncated or
// recreated: every record the log holds from its start is one the group has
// not handled.
func OutOfRange(tp TopicPartition, committed, logStart, logEnd int64) error {
	if committed >= logStart && committed <= logEnd {
		return nil
	}
	where := "below the log start (its records were deleted before the group handled them)"
	if committed > logEnd {
		where = "past the log end (the log was truncated or recreated)"
	}
	return fmt.Errorf("kavari: %s/%d: committed offset %d is %s; resuming at the log start %d (log %d..%d)",
		tp.Topic, tp.Partition, committed, where, logStart, logStart, logEnd)
}
