package kavari

//lint:file-ignore ST1005 the error strings of Config.validate begin with the Config field they name

import (
	"crypto/tls"
	"errors"
	"fmt"
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
	// Latest starts from records published after the group joined.
	Latest
)

// SASL configures SASL authentication.
type SASL struct {
	Mechanism string // "PLAIN", "SCRAM-SHA-256" or "SCRAM-SHA-512"
	Username  string
	Password  string
}

// Config configures a Client. The zero value of every field means its default;
// only Brokers is required (and GroupID to consume). New validates it.
type Config struct {
	Brokers  []string // bootstrap brokers, host:port
	GroupID  string   // consumer group; required by Start
	ClientID string   // default "kavari"
	Source   string   // ce_source header; default the host name
	Logger   *slog.Logger
	Registry *Registry // default DefaultRegistry
	// Transport is the Kafka client kavari runs on; default (zero) KafkaGo.
	Transport Transport
	// InstanceID makes the member static (KIP-345): restarted with the same
	// id within SessionTimeout it gets its partitions back without a
	// rebalance. Each member of the group needs its own. Default "" (a
	// dynamic member). FranzGo only: New rejects it on KafkaGo.
	InstanceID string
	// GroupProtocol is the consumer group protocol; default ClassicProtocol.
	// ConsumerProtocol (KIP-848) is FranzGo only.
	GroupProtocol GroupProtocol

	// Publishing.
	PublishRetry    RetryPolicy   // default Fibonacci, 100 ms base, 10 attempts; each zero field defaults on its own
	Partitioner     Partitioner   // default Murmur2
	BatchTimeout    time.Duration // how long a batch waits to fill; default 2 ms; KafkaGo only (FranzGo publishes without linger)
	BatchSize       int           // messages a PublishAsync writer hands to the client at once (on KafkaGo also the Writer's batch bound); default 1000
	BatchBytes      int64         // bytes per batch request; default 1 MiB
	MaxMessageBytes int           // encoded size limit checked before sending; default 1,000,000
	AsyncQueue      int           // PublishAsync queue length; default 10,000
	AsyncWorkers    int           // PublishAsync writers; default 4
	AllowAutoCreate bool          // let the broker auto-create topics on publish

	// Consuming.
	AutoOffsetReset OffsetReset
	Ordering        Ordering
	MaxInFlight     int // records being handled at once, all partitions; default 256
	// MaxBuffered bounds records fetched and not finished, all partitions
	// (those handled plus those queued behind a busy key); when reached,
	// fetching pauses. Default 4 × MaxInFlight; at least MaxInFlight. One of
	// n assigned partitions may have at most max(MaxBuffered/n,
	// min(MaxInFlight, MaxBuffered/2)) records open (fetched and not yet
	// committable); then only its own fetching pauses.
	MaxBuffered      int
	ConsumerRetry    RetryPolicy   // handler retries; default Fibonacci, 100 ms base, 5 attempts; each zero field defaults on its own (MaxAttempts 0 is 5)
	HandlerTimeout   time.Duration // per attempt: cancels the handler's context (one that returns nil anyway succeeded); 0 means none
	CommitInterval   time.Duration // default 1 s
	DrainTimeout     time.Duration // in-flight work allowed to finish on revoke; must be < SessionTimeout; default min(10 s, RebalanceTimeout/3, drain bound) = 5 s. Every drain (revoke and Stop) is cut at the drain bound, SessionTimeout − Heartbeat − min(2 s, a third of that): kafka-go sends no heartbeats while draining
	SessionTimeout   time.Duration // default 10 s; consumption pauses about this long after a coordinator restart; under ConsumerProtocol the broker's (New rejects a value)
	RebalanceTimeout time.Duration // default 30 s
	Heartbeat        time.Duration // default 3 s; under ConsumerProtocol the broker's (New rejects a value)
	DeadLetterSuffix string        // default ".dlq"
	// Relaxed skips (and commits) records of unknown type instead of
	// dead-lettering them, as the Python kavari does.
	Relaxed bool

	// Topics.
	CreateTopics      bool // Start creates every registered topic and its dead-letter topic
	TopicPartitions   int  // default 3
	ReplicationFactor int  // default (0 or -1): the broker's default.replication.factor, not a single replica

	// Security.
	TLS  *tls.Config
	SASL *SASL

	// Observability.
	// Hooks observe publishing and consuming; each implements one or more
	// HookXxx interfaces (see Hook). Default none, which costs nothing.
	Hooks []Hook
	// Middleware wraps every handler attempt, the first outermost (see
	// Middleware). Default none: handlers are called directly.
	Middleware []Middleware
}

func (c *Config) setDefaults() {
	if c.ClientID == "" {
		c.ClientID = "kavari"
	}
	if c.Source == "" {
		c.Source, _ = os.Hostname()
		if c.Source == "" {
			c.Source = "kavari"
		}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Registry == nil {
		c.Registry = DefaultRegistry
	}
	if c.BatchTimeout == 0 {
		c.BatchTimeout = 2 * time.Millisecond
	}
	if c.BatchSize == 0 {
		c.BatchSize = 1000
	}
	if c.BatchBytes == 0 {
		c.BatchBytes = 1 << 20
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = 1_000_000
	}
	if c.AsyncQueue == 0 {
		c.AsyncQueue = 10_000
	}
	if c.AsyncWorkers == 0 {
		c.AsyncWorkers = 4
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 256
	}
	if c.MaxBuffered == 0 {
		c.MaxBuffered = 4 * c.MaxInFlight
	}
	if c.ConsumerRetry.MaxAttempts == 0 {
		// Per field, as for every zero field of a policy: setting BaseDelay
		// alone must not change the attempt count.
		c.ConsumerRetry.MaxAttempts = defaultConsumerAttempts
	}
	if c.CommitInterval == 0 {
		c.CommitInterval = time.Second
	}
	if c.SessionTimeout == 0 {
		// kafka-go forgets its member id when the coordinator fails, so after
		// a broker restart the group waits for the old member to expire:
		// consumption pauses for about one session timeout.
		c.SessionTimeout = 10 * time.Second
	}
	if c.RebalanceTimeout == 0 {
		c.RebalanceTimeout = 30 * time.Second
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = min(3*time.Second, c.SessionTimeout/3)
	}
	if c.DrainTimeout == 0 && c.Heartbeat < c.SessionTimeout {
		c.DrainTimeout = min(10*time.Second, c.RebalanceTimeout/3, c.protocolDrain())
	}
	if c.DeadLetterSuffix == "" {
		c.DeadLetterSuffix = ".dlq"
	}
	if c.TopicPartitions == 0 {
		c.TopicPartitions = 3
	}
	if c.ReplicationFactor == 0 {
		c.ReplicationFactor = -1 // the broker's default.replication.factor
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
	if err := c.PublishRetry.validate(); err != nil {
		errs = append(errs, fmt.Errorf("PublishRetry: %w", err))
	}
	if err := c.ConsumerRetry.validate(); err != nil {
		errs = append(errs, fmt.Errorf("ConsumerRetry: %w", err))
	}
	if c.Ordering < PerKey || c.Ordering > Unordered {
		errs = append(errs, fmt.Errorf("unknown Ordering %d", c.Ordering))
	}
	if c.Partitioner < Murmur2 || c.Partitioner > CRC32 {
		errs = append(errs, fmt.Errorf("unknown Partitioner %d", c.Partitioner))
	}
	if c.AutoOffsetReset < Earliest || c.AutoOffsetReset > Latest {
		errs = append(errs, fmt.Errorf("unknown AutoOffsetReset %d", c.AutoOffsetReset))
	}
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"BatchSize", int64(c.BatchSize)}, {"BatchBytes", c.BatchBytes}, {"MaxMessageBytes", int64(c.MaxMessageBytes)},
		{"AsyncQueue", int64(c.AsyncQueue)}, {"AsyncWorkers", int64(c.AsyncWorkers)}, {"MaxInFlight", int64(c.MaxInFlight)}, {"MaxBuffered", int64(c.MaxBuffered)},
		{"TopicPartitions", int64(c.TopicPartitions)},
	} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("%s is negative", f.name))
		}
	}
	if c.HandlerTimeout < 0 || c.CommitInterval < 0 || c.DrainTimeout < 0 || c.BatchTimeout < 0 {
		errs = append(errs, errors.New("a timeout or interval is negative"))
	}
	if c.MaxBuffered > 0 && c.MaxBuffered < c.MaxInFlight {
		errs = append(errs, errors.New("MaxBuffered must be at least MaxInFlight"))
	}
	if c.Heartbeat >= c.SessionTimeout {
		errs = append(errs, errors.New("Heartbeat must be shorter than SessionTimeout"))
	}
	if c.DrainTimeout >= c.RebalanceTimeout {
		errs = append(errs, errors.New("DrainTimeout must be shorter than RebalanceTimeout, or a slow drain costs the group its members"))
	}
	if c.DrainTimeout >= c.SessionTimeout {
		errs = append(errs, errors.New("DrainTimeout must be shorter than SessionTimeout: no heartbeats are sent during a drain, so a longer one gets the member expelled and its final commit refused"))
	}
	if c.GroupProtocol < ClassicProtocol || c.GroupProtocol > ConsumerProtocol {
		errs = append(errs, fmt.Errorf("unknown GroupProtocol %d", int(c.GroupProtocol)))
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
// Heartbeat earlier; drainReserve of it is kept for the commit.
func (c *Config) protocolDrain() time.Duration {
	return c.SessionTimeout - c.Heartbeat - c.drainReserve()
}

// drainReserve is the part of the session budget kept after the drain for
// handlers that were cancelled to return (half of it) and for the final
// commit.
func (c *Config) drainReserve() time.Duration {
	return min(2*time.Second, (c.SessionTimeout-c.Heartbeat)/3)
}
