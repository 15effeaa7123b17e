package kavariotel

import (
	"context"
	"strconv"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/kavari-go/kavari"
)

// Metric names: those of the messaging semantic conventions, and kavari's
// own under kavari.*.
const (
	MetricSent            = "messaging.client.sent.messages"      // Counter, {message}: publishes acknowledged or given up (error.type)
	MetricSendDuration    = "messaging.client.operation.duration" // Histogram, s: a publish, retries included
	MetricConsumed        = "messaging.client.consumed.messages"  // Counter (observable), {message}: records fetched
	MetricProcessDuration = "messaging.process.duration"          // Histogram, s: one handler attempt (error.type when it failed)
	MetricRetries         = "kavari.consumer.retries"             // Counter, {retry}: handler retries scheduled
	MetricDeadLetters     = "kavari.consumer.dead_letters"        // Counter, {message}: dead letters written, by kavari.error.kind
	MetricRebalances      = "kavari.consumer.rebalances"          // Counter, {rebalance}: by kavari.rebalance.type (assigned, revoked, lost)
	MetricCommitDuration  = "kavari.consumer.commit.duration"     // Histogram, s: offset commits (error.type when failed)
	MetricTransactions    = "kavari.consumer.transactions"        // Counter, {transaction}: exactly-once transactions, by kavari.transaction.outcome (committed, aborted)
	MetricInvalidContext  = "kavari.trace.context.invalid"        // Counter, {record}: records with a malformed traceparent, ignored
	MetricLag             = "kavari.consumer.lag"                 // Gauge, {message}: high watermark − committed offset, per partition
	MetricInFlight        = "kavari.consumer.in_flight"           // Gauge, {record}: records fetched and not finished
	MetricRunning         = "kavari.consumer.running"             // Gauge, {record}: records being handled
	MetricBatchSize       = "kavari.consumer.batch.size"          // Histogram, {message}: records of one batch handler attempt
	MetricAsyncQueue      = "kavari.publisher.async_queue.depth"  // Gauge, {message}: messages waiting in the PublishAsync queues
)

// AttrRebalanceType says what a rebalance did to this member's partitions.
const AttrRebalanceType = attribute.Key("kavari.rebalance.type")

// AttrTransactionOutcome says how an exactly-once transaction ended:
// committed or aborted.
const AttrTransactionOutcome = attribute.Key("kavari.transaction.outcome")

type instruments struct {
	meter                                                  metric.Meter
	sent, retries, deadLetters, rebalances, invalidContext metric.Int64Counter
	transactions                                           metric.Int64Counter
	consumed                                               metric.Int64ObservableCounter
	sendDuration, processDuration, commitDuration          metric.Float64Histogram
	batchSize                                              metric.Int64Histogram
}

// durationBuckets suit messaging latencies, in seconds (the conventions'
// advice for messaging durations).
var durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

func newInstruments(m metric.Meter) *instruments {
	in := &instruments{meter: m}
	counter := func(name, unit, desc string) metric.Int64Counter {
		c, _ := m.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		return c // on error the API returns a no-op instrument
	}
	hist := func(name, desc string) metric.Float64Histogram {
		h, _ := m.Float64Histogram(name, metric.WithUnit("s"), metric.WithDescription(desc), metric.WithExplicitBucketBoundaries(durationBuckets...))
		return h
	}
	in.sent = counter(MetricSent, "{message}", "Messages published: acknowledged, or given up on (error.type).")
	in.consumed, _ = m.Int64ObservableCounter(MetricConsumed, metric.WithUnit("{message}"), metric.WithDescription("Records fetched by the consumer."))
	in.retries = counter(MetricRetries, "{retry}", "Handler retries scheduled.")
	in.deadLetters = counter(MetricDeadLetters, "{message}", "Dead letters written, by kavari.error.kind.")
	in.rebalances = counter(MetricRebalances, "{rebalance}", "Partitions assigned, revoked or lost, by kavari.rebalance.type.")
	in.transactions = counter(MetricTransactions, "{transaction}", "Exactly-once transactions ended, by kavari.transaction.outcome.")
	in.invalidContext = counter(MetricInvalidContext, "{record}", "Records whose trace context header is malformed (ignored).")
	in.sendDuration = hist(MetricSendDuration, "Duration of a publish, retries included.")
	in.processDuration = hist(MetricProcessDuration, "Duration of one handler attempt.")
	in.commitDuration = hist(MetricCommitDuration, "Duration of an offset commit.")
	in.batchSize, _ = m.Int64Histogram(MetricBatchSize, metric.WithUnit("{message}"), metric.WithDescription("Records handed to a batch handler in one attempt."),
		metric.WithExplicitBucketBoundaries(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000))
	return in
}

func metricSet(s attribute.Set) metric.MeasurementOption { return metric.WithAttributeSet(s) }

// setKey names a cached attribute set: the consumer's of a topic (partition
// -1) or of one of its partitions (for consumed records).
type setKey struct {
	topic     string
	partition int
	retryTier int // retries: the tier a retry runs in (kavari.Record.RetryTier), partition -1
}

// consumerSet returns the cached measurement option of the consumer's
// attributes for topic (and partition, unless -1): building an attribute
// set per record would cost more than the measurement.
func (i *Instrumentation) consumerSet(topic string, partition int) metric.MeasurementOption {
	k := setKey{topic: topic, partition: partition}
	if v, ok := i.sets.Load(k); ok {
		return v.(metric.MeasurementOption)
	}
	attrs := i.consumerAttrs(topic)
	if partition >= 0 {
		attrs = append(attrs, semconv.MessagingOperationName("receive"), semconv.MessagingDestinationPartitionID(strconv.Itoa(partition)))
	}
	v, _ := i.sets.LoadOrStore(k, metricSet(attribute.NewSet(attrs...)))
	return v.(metric.MeasurementOption)
}

// retrySet returns the cached measurement option of a retry of a record of
// topic that runs in retry tier tier (0: in place).
func (i *Instrumentation) retrySet(topic string, tier int) metric.MeasurementOption {
	k := setKey{topic: topic, partition: -1, retryTier: tier + 1}
	if v, ok := i.sets.Load(k); ok {
		return v.(metric.MeasurementOption)
	}
	v, _ := i.sets.LoadOrStore(k, metricSet(attribute.NewSet(append(i.consumerAttrs(topic), AttrRetryTier.Int(tier))...)))
	return v.(metric.MeasurementOption)
}

func (i *Instrumentation) consumerAttrs(topic string) []attribute.KeyValue {
	attrs := []attribute.KeyValue{semconv.MessagingSystemKafka, semconv.MessagingDestinationName(topic)}
	if i.cfg.ConsumerGroup != "" {
		attrs = append(attrs, semconv.MessagingConsumerGroupName(i.cfg.ConsumerGroup))
	}
	return attrs
}

// fetchCount counts the records fetched from one partition. The counter is
// observed at collection: a transport may report records one at a time, and
// an atomic add costs a fraction of a synchronous measurement.
type fetchCount struct {
	n   atomic.Int64
	set metric.ObserveOption
}

// OnFetched counts consumed records. It implements kavari.HookFetched.
func (i *Instrumentation) OnFetched(topic string, partition, count int, _, _ int64) {
	k := setKey{topic: topic, partition: partition}
	v, ok := i.fetched.Load(k)
	if !ok {
		attrs := append(i.consumerAttrs(topic), semconv.MessagingOperationName("receive"), semconv.MessagingDestinationPartitionID(strconv.Itoa(partition)))
		v, _ = i.fetched.LoadOrStore(k, &fetchCount{set: metric.WithAttributeSet(attribute.NewSet(attrs...))})
	}
	v.(*fetchCount).n.Add(int64(count))
}

// observeFetched reports the records fetched per partition.
func (i *Instrumentation) observeFetched(_ context.Context, o metric.Observer) error {
	i.fetched.Range(func(_, v any) bool {
		c := v.(*fetchCount)
		o.ObserveInt64(i.m.consumed, c.n.Load(), c.set)
		return true
	})
	return nil
}

// OnAssigned counts a rebalance. It implements kavari.HookAssigned.
func (i *Instrumentation) OnAssigned(map[string][]int) {
	i.m.rebalances.Add(context.Background(), 1, metric.WithAttributes(semconv.MessagingSystemKafka, AttrRebalanceType.String("assigned")))
}

// OnRevoked counts a rebalance and ends the spans left open on the
// partitions. It implements kavari.HookRevoked.
func (i *Instrumentation) OnRevoked(m map[string][]int, lost bool) {
	t := "revoked"
	if lost {
		t = "lost"
	}
	i.m.rebalances.Add(context.Background(), 1, metric.WithAttributes(semconv.MessagingSystemKafka, AttrRebalanceType.String(t)))
	i.endFailed(m)
}

// OnCommitted measures a commit. It implements kavari.HookCommitted.
func (i *Instrumentation) OnCommitted(_ map[string]map[int]int64, took time.Duration, err error) {
	attrs := []attribute.KeyValue{semconv.MessagingSystemKafka}
	if err != nil {
		attrs = append(attrs, semconv.ErrorTypeKey.String(errorType(err)))
	}
	i.m.commitDuration.Record(context.Background(), took.Seconds(), metric.WithAttributes(attrs...))
}

// OnTransaction counts an exactly-once transaction that ended, by outcome
// (error.type when aborted). It implements kavari.HookTransaction.
func (i *Instrumentation) OnTransaction(ev kavari.TransactionEvent) {
	attrs := []attribute.KeyValue{semconv.MessagingSystemKafka, AttrTransactionOutcome.String("committed")}
	if !ev.Committed {
		attrs[1] = AttrTransactionOutcome.String("aborted")
		if ev.Err != nil {
			attrs = append(attrs, semconv.ErrorTypeKey.String(errorType(ev.Err)))
		}
	}
	i.m.transactions.Add(context.Background(), 1, metric.WithAttributes(attrs...))
}

// Observe registers the gauges read from k.Health() at each collection:
// consumer lag per partition, records in flight and running, and the async
// queue depth. Unregister the returned registration to stop.
func (i *Instrumentation) Observe(k *kavari.Client) (metric.Registration, error) {
	m := i.m.meter
	lag, err := m.Int64ObservableGauge(MetricLag, metric.WithUnit("{message}"), metric.WithDescription("High watermark minus committed offset, per assigned partition."))
	if err != nil {
		return nil, err
	}
	inFlight, err := m.Int64ObservableGauge(MetricInFlight, metric.WithUnit("{record}"), metric.WithDescription("Records fetched and not finished."))
	if err != nil {
		return nil, err
	}
	running, err := m.Int64ObservableGauge(MetricRunning, metric.WithUnit("{record}"), metric.WithDescription("Records being handled."))
	if err != nil {
		return nil, err
	}
	queue, err := m.Int64ObservableGauge(MetricAsyncQueue, metric.WithUnit("{message}"), metric.WithDescription("Messages waiting in the PublishAsync queues."))
	if err != nil {
		return nil, err
	}
	return m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		h := k.Health()
		base := []attribute.KeyValue{semconv.MessagingSystemKafka}
		if i.cfg.ConsumerGroup != "" {
			base = append(base, semconv.MessagingConsumerGroupName(i.cfg.ConsumerGroup))
		}
		o.ObserveInt64(inFlight, int64(h.InFlight), metric.WithAttributes(base...))
		o.ObserveInt64(running, int64(h.Running), metric.WithAttributes(base...))
		o.ObserveInt64(queue, int64(h.AsyncQueued), metric.WithAttributes(semconv.MessagingSystemKafka))
		for _, p := range h.Positions {
			if p.Lag < 0 {
				continue
			}
			attrs := append(append([]attribute.KeyValue(nil), base...), semconv.MessagingDestinationName(p.Topic), semconv.MessagingDestinationPartitionID(strconv.Itoa(p.Partition)))
			o.ObserveInt64(lag, p.Lag, metric.WithAttributes(attrs...))
		}
		return nil
	}, lag, inFlight, running, queue)
}
