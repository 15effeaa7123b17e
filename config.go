package kavari

//lint:file-ignore ST1005 the error strings of Config.validate begin with the Config field they name

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"
)

// Ordering says which messages a consumer may handle at the same time.
type Ordering int

const (
	// PerKey handles records with the same key strictly one after another in
	// offset order, and records with different keys in parallel. The default.
	PerKey Ordering = iota
	// PerPartition handles each partition's records one after another.
	PerPartition
	// Unordered handles every record as soon as a slot is free.
	Unordered
)

func (o Ordering) String() string {
	switch o {
	case PerKey:
		return "PerKey"
	case PerPartition:
		return "PerPartition"
	case Unordered:
		return "Unordered"
	}
	return fmt.Sprintf("Ordering(%d)", int(o))
}

// Partitioner chooses a record's partition from its key.
type Partitioner int

const (
	// Murmur2 is the Java client's default: Go and JVM producers agree.
	Murmur2 Partitioner = iota
	// CRC32 is librdkafka's default (and so the Python kavari's): use it when
	// Python or other librdkafka producers share the topics and per-key order
	// across languages matters.
	CRC32
)

// OffsetReset says where a group starts on a partition with no committed offset.
type OffsetReset int

const (
	// Earliest starts from the oldest record (the Python kavari example's choice).
	Earliest OffsetReset = iota
	// Latest starts from records published after the partition was
	// assigned: its log end, listed before the partition is reported
	// assigned (Health, the OnAssigned hook), so every record published
	// from then on is delivered. That start is committed at once, so a
	// partition that moves before the group committed any progress resumes
	// there on its next owner, not at the log end of that owner's join.
	Latest
)

// SASL configures SASL authentication.
//
// Printed with fmt (any verb, %v, %+v and %#v included, also as a field of
// a Config) or logged through slog, it shows the mechanism and user name
// but never the password, which appears as "xxxxx" (empty when unset), as
// database/sql drivers redact a DSN's password. encoding/json still
// marshals every field.
type SASL struct {
	Mechanism string // "PLAIN", "SCRAM-SHA-256" or "SCRAM-SHA-512"
	Username  string
	Password  string
}

// redactedPassword replaces a set password in what SASL prints.
const redactedPassword = "xxxxx"

// redacted returns s with its password, when set, replaced.
func (s SASL) redacted() SASL {
	if s.Password != "" {
		s.Password = redactedPassword
	}
	return s
}

// String returns s as %+v would print it, with the password redacted.
func (s SASL) String() string {
	r := s.redacted()
	return fmt.Sprintf("{Mechanism:%s Username:%s Password:%s}", r.Mechanism, r.Username, r.Password)
}

// GoString returns s as %#v would print it, with the password redacted.
func (s SASL) GoString() string {
	r := s.redacted()
	return fmt.Sprintf("kavari.SASL{Mechanism:%q, Username:%q, Password:%q}", r.Mechanism, r.Username, r.Password)
}

// Format prints s with any verb, the password redacted: %#v is GoString,
// every other verb formats String.
func (s SASL) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = io.WriteString(f, s.GoString())
		return
	}
	_, _ = fmt.Fprintf(f, fmt.FormatString(f, verb), s.String())
}

// LogValue makes slog log s with the password redacted.
func (s SASL) LogValue() slog.Value {
	r := s.redacted()
	return slog.GroupValue(slog.String("mechanism", r.Mechanism), slog.String("username", r.Username), slog.String("password", r.Password))
}

// Config configures a Client. It is grouped by concern: the fields every
// part uses, then Publish, Consume and Topics. The zero value of every field
// means its default (stated on each field); only Brokers is required (and
// Consume.GroupID to consume). New validates it.
type Config struct {
	// Brokers are the bootstrap brokers, host:port.
	// Default none: required.
	Brokers []string
	// ClientID is the Kafka client id.
	// Default "kavari".
	ClientID string
	// Transport is the Kafka client kavari runs on (see Transport).
	// Default KafkaGo.
	Transport Transport
	// TLS encrypts the connections; an empty ServerName is each broker's host.
	// Default nil: plaintext.
	TLS *tls.Config
	// SASL authenticates the connections.
	// Default nil: no authentication.
	SASL *SASL
	// Logger receives kavari's logs.
	// Default slog.Default().
	Logger *slog.Logger
	// Registry holds the message types and handlers this client serves.
	// Default DefaultRegistry.
	Registry *Registry
	// Hooks observe publishing and consuming; each implements one or more
	// HookXxx interfaces (see Hook). None costs nothing.
	// Default none.
	Hooks []Hook
	// Middleware wraps every handler attempt, the first outermost (see
	// Middleware). Without any, handlers are called directly.
	// Default none.
	Middleware []Middleware
	// CloudEventsSource is written to the ce_source header of every message.
	// Default the host name.
	CloudEventsSource string

	// Publish configures publishing.
	Publish PublishConfig
	// Consume configures consuming (Start).
	Consume ConsumeConfig
	// Topics configures topic names and their creation.
	Topics TopicConfig
}

// PublishConfig is Config.Publish: how messages are published.
type PublishConfig struct {
	// Retry is the publish retry policy; each zero field takes its default on
	// its own (see RetryPolicy).
	// Default Fibonacci, 100 ms base, 10 attempts.
	//
	// One attempt is one try of the client, on both transports: it ends
	// at the broker's answer, at a refused connection to the broker (about
	// 250 ms more on FranzGo when no broker is reachable at all), or after
	// a 10 s write timeout (a broker that does not answer), or when the
	// context ends. A failed publish takes about the policy's waits plus
	// its attempts. On FranzGo an attempt that ends before the broker
	// answered does not abandon the write: the next attempt waits for that
	// same idempotent write instead of sending the message again, so
	// retries store no duplicate; when the policy gives up first, the error
	// has MayHaveBeenWritten and the message may still be stored, once
	// (when the broker answers before Stop).
	Retry RetryPolicy
	// Partitioner chooses a record's partition from its key.
	// Default Murmur2.
	Partitioner Partitioner
	// BatchTimeout is how long a batch waits to fill. KafkaGo only: FranzGo
	// publishes without linger, and New rejects a value. The consumer's
	// moves to retry topics (Consume.RetryTopics) do not wait.
	// Default 2 ms.
	BatchTimeout time.Duration
	// BatchSize is how many messages a PublishAsync writer hands to the
	// client at once (on KafkaGo also the Writer's batch bound).
	// Default 1000.
	BatchSize int
	// BatchBytes bounds the bytes of one batch request; it must be at least
	// MaxMessageBytes (New rejects a smaller value).
	// Default 1 MiB.
	BatchBytes int64
	// MaxMessageBytes is the encoded size limit checked before sending
	// (ErrTooLarge). It may not exceed BatchBytes: a larger message would
	// pass the check and never fit in a batch request.
	// Default 1,000,000.
	MaxMessageBytes int
	// AsyncQueue is the PublishAsync queue length.
	// Default 10,000.
	AsyncQueue int
	// AsyncWorkers is the number of PublishAsync writers.
	// Default 4.
	AsyncWorkers int
	// AllowAutoCreate lets the broker auto-create topics on publish (and
	// Start create missing dead-letter topics).
	// Default false.
	AllowAutoCreate bool
}

// ConsumeConfig is Config.Consume: how Start consumes.
type ConsumeConfig struct {
	// GroupID is the consumer group.
	// Default none: required by Start.
	GroupID string
	// InstanceID makes the member static (KIP-345): restarted with the same
	// id within SessionTimeout it gets its partitions back without a
	// rebalance. One exception: when the restarted member is the group's
	// leader, the broker returns the members' subscriptions of their last
	// join, which may not show what they own now, and franz-go then forces
	// one cooperative rebalance; it moves no partition. Each member of the
	// group needs its own. FranzGo only: New rejects it on KafkaGo.
	// Default "": a dynamic member.
	InstanceID string
	// GroupProtocol is the consumer group protocol. ConsumerProtocol
	// (KIP-848) is FranzGo only.
	// Default ClassicProtocol.
	GroupProtocol GroupProtocol
	// AutoOffsetReset says where the group starts on a partition with no
	// committed offset: the log start (Earliest) or end (Latest), listed
	// when the partition is assigned; with Latest the start is committed
	// then, so the group's start is the first member's, whichever member
	// owns the partition later. A committed offset outside the partition's log is
	// not "no offset": below the log start (records deleted by retention
	// before the group handled them) or past its end (the log truncated or
	// the topic recreated), the group resumes at the log start on every
	// transport, so that no record still in the log is skipped; on a
	// broker, a warning names the partition.
	// Default Earliest.
	AutoOffsetReset OffsetReset
	// Isolation says whether records of aborted or still open Kafka
	// transactions are handed to handlers (see Isolation).
	// Default ReadUncommitted.
	Isolation Isolation
	// ExactlyOnce makes consume → process → publish exactly-once on
	// FranzGo: a handler's writes with its context and its record's
	// offset commit in one Kafka transaction (see ExactlyOnceConfig).
	// Default off.
	ExactlyOnce ExactlyOnceConfig
	// Ordering says which records may be handled at the same time.
	// Default PerKey.
	Ordering Ordering
	// MaxInFlight bounds the records being handled at once, all partitions
	// together.
	// Default 256.
	MaxInFlight int
	// MaxBuffered bounds records fetched and not finished, all partitions
	// (those handled plus those queued behind a busy key); when reached,
	// fetching pauses. At least MaxInFlight. One of n assigned partitions
	// may have at most max(MaxBuffered/n, min(MaxInFlight, MaxBuffered/2))
	// records open (fetched and not yet committable); then only its own
	// fetching pauses. With RetryTopics, a record whose move to a tier is
	// under way counts out of that while the partition has fewer than four
	// times as many open: the records after it keep coming until its
	// write is answered. Each partition has max(MaxBuffered/2n, 1) of the
	// buffer reserved, which the others cannot take; beyond it a partition
	// takes from the rest while some is left. So partitions whose keys are
	// stuck never stall the others, as long as fewer than MaxInFlight
	// handlers are stuck (a stuck handler holds its run slot). With more
	// partitions than MaxBuffered, each still has its one record: up to n
	// are buffered.
	// Default 4 × MaxInFlight.
	MaxBuffered int
	// MaxBatchRecords bounds the records of one batch handed to a batch
	// handler (RegisterBatch). A batch holds records of one type and one
	// partition; it is handed over when it has MaxBatchRecords records or
	// MaxBatchBytes bytes, or when its first record waited MaxBatchWait.
	// Its records count in MaxBuffered; a batch takes one of MaxInFlight.
	// Default 100.
	MaxBatchRecords int
	// MaxBatchBytes bounds the bytes (keys and values) of one batch; a
	// record larger than it is a batch of its own.
	// Default 1 MiB.
	MaxBatchBytes int
	// MaxBatchWait is how long a batch that is not full waits for more
	// records (the linger) after its first record arrived; it goes at once
	// when its partition can take no more records (its share of
	// MaxBuffered is open).
	// Default 10 ms.
	MaxBatchWait time.Duration
	// Retry is the handler retry policy before dead-lettering; each zero
	// field takes its default on its own (MaxAttempts 0 is 5 here).
	// Default Fibonacci, 100 ms base, 5 attempts.
	Retry RetryPolicy
	// HandlerTimeout bounds one handler attempt: it cancels the handler's
	// context (a handler that returns nil anyway succeeded).
	// Default 0: none.
	HandlerTimeout time.Duration
	// CommitInterval is how often completed offsets are committed; they are
	// also committed on revoke and on Stop.
	// Default 1 s.
	CommitInterval time.Duration
	// DrainTimeout is how long in-flight work may finish on revoke; it must
	// be shorter than SessionTimeout and RebalanceTimeout. On KafkaGo every
	// drain (revoke and Stop) is also cut at the drain bound, SessionTimeout −
	// HeartbeatInterval − min(2 s, a third of that): kafka-go sends no
	// heartbeats while draining. FranzGo heartbeats during drains: there a
	// revoke's drain is bounded by DrainTimeout alone (and RebalanceTimeout
	// less that reserve), Stop's by RebalanceTimeout less that reserve.
	// Default min(10 s, RebalanceTimeout/3, drain bound) = 5 s.
	DrainTimeout time.Duration
	// SessionTimeout is the group session timeout; consumption pauses about
	// this long after a coordinator restart. Under ConsumerProtocol it is
	// the broker's (New rejects a value). A network fault shorter than it
	// costs no rebalance on either transport: on FranzGo a group error
	// inside it (a heartbeat lost to a dropped or refused connection)
	// leaves the session valid, so the member's partitions are at most
	// revoked (drained and committed) and its handlers are not cancelled;
	// only a session known to be gone (the coordinator says so, or
	// SessionTimeout passed since its last answered heartbeat) loses them.
	// On KafkaGo a heartbeat or commit that fails on the network is tried
	// again on a fresh connection, and the member keeps its generation
	// until no heartbeat was answered for this long.
	// Default 10 s.
	SessionTimeout time.Duration
	// RebalanceTimeout is how long the group waits for members to rejoin.
	// Default 30 s.
	RebalanceTimeout time.Duration
	// HeartbeatInterval is how often the member heartbeats. Under
	// ConsumerProtocol it is the broker's (New rejects a value).
	// Default min(3 s, SessionTimeout/3) = 3 s.
	HeartbeatInterval time.Duration
	// SkipUnknownTypes skips (and commits) records whose msg_type no
	// registered type has, as the Python kavari does, instead of
	// dead-lettering them.
	// Default false: dead-letter them.
	SkipUnknownTypes bool
	// RetryTopics turns on non-blocking retries through retry topics, one
	// tier per delay: a record whose handler still fails after Retry's
	// in-place attempts is written to tier 1's topic (see
	// TopicConfig.RetrySuffix) and its offset may then be committed; the
	// same Client consumes the tier topics and runs the handlers that
	// failed once the record is due (RetryTopics[n-1] after it entered tier
	// n), one attempt per tier; a failure there moves it to the next tier,
	// and after the last tier to the dead-letter topic. Permanent errors
	// and poison records go to the dead-letter topic at once. A record that
	// leaves for a tier leaves its key's order: later records of the key
	// are handled before it. A batch handler's failures (RegisterBatch) are
	// dead-lettered as without it. Each delay must be positive; at most
	// 16 tiers.
	// Default none: in-place retries only.
	RetryTopics []time.Duration
}

// maxRetryTiers bounds Consume.RetryTopics, and with it the history a
// retried record carries in its headers.
const maxRetryTiers = 16

// TopicConfig is Config.Topics: topic names and their creation.
type TopicConfig struct {
	// Create makes Start create every registered topic and its dead-letter
	// topic.
	// Default false.
	Create bool
	// Partitions is the partition count of created topics.
	// Default 3.
	Partitions int
	// ReplicationFactor is the replication factor of created topics; 0 or -1
	// is the broker's default.replication.factor.
	// Default the broker's default.replication.factor.
	ReplicationFactor int
	// DeadLetterSuffix names dead-letter topics: the dead letters of real
	// topic T go to T + DeadLetterSuffix.
	// Default ".dlq".
	DeadLetterSuffix string
	// RetrySuffix names retry topics (Consume.RetryTopics): tier n (from 1)
	// of real topic T is T + RetrySuffix + "." + n, e.g. "orders.retry.1".
	// They are created and checked with the dead-letter topics, with the
	// same Partitions and ReplicationFactor.
	// Default ".retry".
	RetrySuffix string
	// Name maps a tag's topic to the real topic name (a prefix per
	// environment, say) for publishing, subscribing, dead letters (real
	// topic + DeadLetterSuffix), Create and EnsureTopics. It is called once
	// per tag topic and client, never per message: at New for the types
	// registered then, at first use for later ones. An empty or invalid
	// result is an error from New (types registered by then), otherwise
	// from Start and Publish. Two types with the same logical name that it
	// puts on one topic make Start fail with ErrDuplicate. Start logs the
	// mapping; Health.TopicNames shows it.
	// Default nil: the tag's topic.
	Name func(topic string) string
}

func (c *Config) setDefaults() {
	if c.ClientID == "" {
		c.ClientID = "kavari"
	}
	if c.CloudEventsSource == "" {
		c.CloudEventsSource, _ = os.Hostname()
		if c.CloudEventsSource == "" {
			c.CloudEventsSource = "kavari"
		}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Registry == nil {
		c.Registry = DefaultRegistry
	}
	if c.Publish.BatchTimeout == 0 {
		c.Publish.BatchTimeout = 2 * time.Millisecond
	}
	if c.Publish.BatchSize == 0 {
		c.Publish.BatchSize = 1000
	}
	if c.Publish.BatchBytes == 0 {
		c.Publish.BatchBytes = 1 << 20
	}
	if c.Publish.MaxMessageBytes == 0 {
		c.Publish.MaxMessageBytes = 1_000_000
	}
	if c.Publish.AsyncQueue == 0 {
		c.Publish.AsyncQueue = 10_000
	}
	if c.Publish.AsyncWorkers == 0 {
		c.Publish.AsyncWorkers = 4
	}
	if c.Consume.MaxInFlight == 0 {
		c.Consume.MaxInFlight = 256
	}
	if c.Consume.MaxBuffered == 0 {
		c.Consume.MaxBuffered = 4 * c.Consume.MaxInFlight
	}
	if c.Consume.MaxBatchRecords == 0 {
		c.Consume.MaxBatchRecords = 100
	}
	if c.Consume.MaxBatchBytes == 0 {
		c.Consume.MaxBatchBytes = 1 << 20
	}
	if c.Consume.MaxBatchWait == 0 {
		c.Consume.MaxBatchWait = 10 * time.Millisecond
	}
	if c.Consume.Retry.MaxAttempts == 0 {
		// Per field, as for every zero field of a policy: setting BaseDelay
		// alone must not change the attempt count.
		c.Consume.Retry.MaxAttempts = defaultConsumerAttempts
	}
	if c.Consume.CommitInterval == 0 {
		c.Consume.CommitInterval = time.Second
	}
	if c.Consume.SessionTimeout == 0 {
		// kafka-go forgets its member id when the coordinator fails, so after
		// a broker restart the group waits for the old member to expire:
		// consumption pauses for about one session timeout.
		c.Consume.SessionTimeout = 10 * time.Second
	}
	if c.Consume.RebalanceTimeout == 0 {
		c.Consume.RebalanceTimeout = 30 * time.Second
	}
	if c.Consume.HeartbeatInterval == 0 {
		c.Consume.HeartbeatInterval = min(3*time.Second, c.Consume.SessionTimeout/3)
	}
	if c.Consume.DrainTimeout == 0 && c.Consume.HeartbeatInterval < c.Consume.SessionTimeout {
		c.Consume.DrainTimeout = min(10*time.Second, c.Consume.RebalanceTimeout/3, c.protocolDrain())
	}
	if c.Consume.ExactlyOnce.enabled() {
		if c.Consume.ExactlyOnce.Interval == 0 {
			c.Consume.ExactlyOnce.Interval = 100 * time.Millisecond
		}
		if c.Consume.ExactlyOnce.TransactionTimeout == 0 {
			c.Consume.ExactlyOnce.TransactionTimeout = c.Consume.SessionTimeout / 2
			if c.Consume.SessionTimeout == 0 { // ConsumerProtocol: the broker's session
				c.Consume.ExactlyOnce.TransactionTimeout = 10 * time.Second
			}
		}
	}
	if c.Topics.DeadLetterSuffix == "" {
		c.Topics.DeadLetterSuffix = ".dlq"
	}
	if c.Topics.RetrySuffix == "" {
		c.Topics.RetrySuffix = ".retry"
	}
	if c.Topics.Partitions == 0 {
		c.Topics.Partitions = 3
	}
	if c.Topics.ReplicationFactor == 0 {
		c.Topics.ReplicationFactor = -1 // the broker's default.replication.factor
	}
}

func (c *Config) validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("Brokers is empty"))
	}
	for _, b := range c.Brokers {
		if b == "" {
			errs = append(errs, errors.New("Brokers has an empty address"))
		}
	}
	if err := c.Publish.Retry.validate(); err != nil {
		errs = append(errs, fmt.Errorf("Publish.Retry: %w", err))
	}
	if err := c.Consume.Retry.validate(); err != nil {
		errs = append(errs, fmt.Errorf("Consume.Retry: %w", err))
	}
	if c.Consume.Ordering < PerKey || c.Consume.Ordering > Unordered {
		errs = append(errs, fmt.Errorf("unknown Consume.Ordering %d", c.Consume.Ordering))
	}
	if c.Consume.Isolation < ReadUncommitted || c.Consume.Isolation > ReadCommitted {
		errs = append(errs, fmt.Errorf("unknown Consume.Isolation %d", c.Consume.Isolation))
	}
	if c.Publish.Partitioner < Murmur2 || c.Publish.Partitioner > CRC32 {
		errs = append(errs, fmt.Errorf("unknown Publish.Partitioner %d", c.Publish.Partitioner))
	}
	if c.Consume.AutoOffsetReset < Earliest || c.Consume.AutoOffsetReset > Latest {
		errs = append(errs, fmt.Errorf("unknown Consume.AutoOffsetReset %d", c.Consume.AutoOffsetReset))
	}
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"Publish.BatchSize", int64(c.Publish.BatchSize)}, {"Publish.BatchBytes", c.Publish.BatchBytes}, {"Publish.MaxMessageBytes", int64(c.Publish.MaxMessageBytes)},
		{"Publish.AsyncQueue", int64(c.Publish.AsyncQueue)}, {"Publish.AsyncWorkers", int64(c.Publish.AsyncWorkers)}, {"Consume.MaxInFlight", int64(c.Consume.MaxInFlight)}, {"Consume.MaxBuffered", int64(c.Consume.MaxBuffered)},
		{"Consume.MaxBatchRecords", int64(c.Consume.MaxBatchRecords)}, {"Consume.MaxBatchBytes", int64(c.Consume.MaxBatchBytes)},
		{"Topics.Partitions", int64(c.Topics.Partitions)},
	} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("%s is negative", f.name))
		}
	}
	if c.Consume.HandlerTimeout < 0 || c.Consume.CommitInterval < 0 || c.Consume.DrainTimeout < 0 || c.Publish.BatchTimeout < 0 {
		errs = append(errs, errors.New("a timeout or interval (Consume.HandlerTimeout, Consume.CommitInterval, Consume.DrainTimeout, Publish.BatchTimeout) is negative"))
	}
	if c.Consume.MaxBatchWait < 0 {
		errs = append(errs, errors.New("Consume.MaxBatchWait is negative"))
	}
	if c.Publish.BatchBytes > 0 && int64(c.Publish.MaxMessageBytes) > c.Publish.BatchBytes {
		errs = append(errs, fmt.Errorf("Publish.MaxMessageBytes (%d) is larger than Publish.BatchBytes (%d): a message between the two passes the size check but never fits in a batch request; raise Publish.BatchBytes or lower Publish.MaxMessageBytes", c.Publish.MaxMessageBytes, c.Publish.BatchBytes))
	}
	if c.Consume.MaxBuffered > 0 && c.Consume.MaxBuffered < c.Consume.MaxInFlight {
		errs = append(errs, errors.New("Consume.MaxBuffered must be at least Consume.MaxInFlight"))
	}
	if c.Consume.HeartbeatInterval >= c.Consume.SessionTimeout {
		errs = append(errs, errors.New("Consume.HeartbeatInterval must be shorter than Consume.SessionTimeout"))
	}
	if c.Consume.DrainTimeout >= c.Consume.RebalanceTimeout {
		errs = append(errs, errors.New("Consume.DrainTimeout must be shorter than Consume.RebalanceTimeout, or a slow drain costs the group its members"))
	}
	if c.Consume.DrainTimeout >= c.Consume.SessionTimeout {
		errs = append(errs, errors.New("Consume.DrainTimeout must be shorter than Consume.SessionTimeout: on KafkaGo no heartbeats are sent during a drain, so a longer one gets the member expelled and its final commit refused"))
	}
	if err := c.validateRetryTopics(); err != nil {
		errs = append(errs, err)
	}
	if eo := c.Consume.ExactlyOnce; eo.enabled() {
		if eo.Interval < 0 || eo.TransactionTimeout < 0 {
			errs = append(errs, errors.New("Consume.ExactlyOnce: Interval or TransactionTimeout is negative"))
		}
		if eo.TransactionTimeout >= c.Consume.SessionTimeout && c.Consume.SessionTimeout > 0 {
			errs = append(errs, errors.New("Consume.ExactlyOnce.TransactionTimeout must be shorter than Consume.SessionTimeout: a crashed member's open transaction would hold back the partitions' next owner longer than its session"))
		}
		if eo.TransactionTimeout > 0 && eo.Interval >= eo.TransactionTimeout {
			errs = append(errs, errors.New("Consume.ExactlyOnce.Interval must be shorter than its TransactionTimeout"))
		}
		if len(c.Consume.RetryTopics) > 0 {
			errs = append(errs, errors.New("Consume.ExactlyOnce and Consume.RetryTopics cannot be combined yet: a record's move to a retry tier is not part of the window's transaction"))
		}
	}
	if c.Consume.GroupProtocol < ClassicProtocol || c.Consume.GroupProtocol > ConsumerProtocol {
		errs = append(errs, fmt.Errorf("unknown Consume.GroupProtocol %d", int(c.Consume.GroupProtocol)))
	}
	if _, ok := transports[c.Transport]; !ok {
		errs = append(errs, fmt.Errorf("unknown Transport %d", int(c.Transport)))
	}
	if c.SASL != nil {
		switch c.SASL.Mechanism {
		case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
		default:
			errs = append(errs, fmt.Errorf("SASL.Mechanism %q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", c.SASL.Mechanism))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("kavari: invalid Config: %w", errors.Join(errs...))
	}
	return nil
}

// protocolDrain is the longest drain the group protocol allows. kafka-go
// stops heartbeating when a generation ends (on a rebalance or at Stop), so
// the drain, the final commit and leaving the group must all fit in the
// session timeout counted from the last heartbeat, which may have been one
// HeartbeatInterval earlier; drainReserve of it is kept for the commit.
func (c *Config) protocolDrain() time.Duration {
	return c.Consume.SessionTimeout - c.Consume.HeartbeatInterval - c.drainReserve()
}

// drainBound is the longest drain the group protocol allows on a transport
// that heartbeats while draining (heartbeats: Capabilities.HeartbeatsDuringDrain)
// or not: with heartbeats the rebalance timeout less drainReserve, without
// them protocolDrain.
func (c *Config) drainBound(heartbeats bool) time.Duration {
	if heartbeats {
		return c.Consume.RebalanceTimeout - c.drainReserve()
	}
	return c.protocolDrain()
}

// drainReserve is the part of the session budget kept after the drain for
// handlers that were cancelled to return (half of it) and for the final
// commit.
func (c *Config) drainReserve() time.Duration {
	return min(2*time.Second, (c.Consume.SessionTimeout-c.Consume.HeartbeatInterval)/3)
}

// ExactlyOnceConfig is Config.Consume.ExactlyOnce.
type ExactlyOnceConfig struct {
	// TransactionalIDPrefix turns exactly-once on: each member produces in
	// transactions under the id TransactionalIDPrefix + "-" +
	// Consume.InstanceID (a static member, whose restart fences the
	// transactions of its previous run), or + "-" + a random suffix. The
	// group generation fences a member whose partitions moved (KIP-447).
	// FranzGo only: New rejects it on KafkaGo, which has no transactional
	// producer. It implies Consume.Isolation ReadCommitted. Batch handlers
	// are not supported in this mode: Start rejects them.
	// Default "": off (at-least-once).
	TransactionalIDPrefix string
	// Interval is how long a window stays open before its transaction
	// commits (Kafka Streams commits every 100 ms under exactly-once). A
	// record's outputs become visible to read_committed consumers at the
	// end of its window; a longer interval means fewer, larger
	// transactions and a later visibility.
	// Default 100 ms.
	Interval time.Duration
	// TransactionTimeout is how long the broker lets a transaction stay
	// open before aborting it (transaction.timeout.ms). It bounds how long a
	// crashed member's open transaction holds back read_committed readers
	// of its outputs and the partitions' next owner. It must be shorter
	// than Consume.SessionTimeout, and longer than a window: Interval plus
	// the longest handler attempt and its retries in place.
	// Default SessionTimeout/2 (5 s); 10 s under ConsumerProtocol, whose
	// session timeout is the broker's.
	TransactionTimeout time.Duration
}

// enabled reports whether exactly-once is on.
func (c ExactlyOnceConfig) enabled() bool { return c.TransactionalIDPrefix != "" }
