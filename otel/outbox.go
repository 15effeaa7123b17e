package kavariotel

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/kavari-go/kavari/outbox"
)

// The transactional outbox's metrics (ObserveOutbox).
const (
	MetricOutboxBacklog   = "kavari.outbox.backlog"    // Gauge, {row}: rows waiting in the outbox table
	MetricOutboxOldestAge = "kavari.outbox.oldest_age" // Gauge, s: age of the oldest waiting row (0 when none)
	MetricOutboxDead      = "kavari.outbox.dead"       // Gauge, {row}: rows parked in the dead table
	MetricOutboxPublished = "kavari.outbox.published"  // Counter (observable), {row}: rows this relay published and deleted
	MetricOutboxKafkaDown = "kavari.outbox.kafka_down" // Gauge, 1 while the relay's last publish failed (not a refusal for good), else 0
)

// AttrOutboxTable is the outbox table a relay's metrics are about.
const AttrOutboxTable = attribute.Key("kavari.outbox.table")

// ObserveOutbox registers gauges read from r.Health at each collection: the
// outbox's backlog (rows, age of the oldest), its dead rows, whether Kafka is
// down for the relay, and the rows it published. Health counts rows in the
// database, so each collection runs two COUNT queries (the collection's
// context bounds them); a failed query leaves the backlog gauges out of that
// collection. Unregister the returned registration to stop.
func (i *Instrumentation) ObserveOutbox(r *outbox.Relay) (metric.Registration, error) {
	m := i.m.meter
	backlog, err := m.Int64ObservableGauge(MetricOutboxBacklog, metric.WithUnit("{row}"), metric.WithDescription("Rows waiting in the outbox table."))
	if err != nil {
		return nil, err
	}
	oldest, err := m.Float64ObservableGauge(MetricOutboxOldestAge, metric.WithUnit("s"), metric.WithDescription("Age of the oldest row waiting in the outbox table."))
	if err != nil {
		return nil, err
	}
	dead, err := m.Int64ObservableGauge(MetricOutboxDead, metric.WithUnit("{row}"), metric.WithDescription("Rows parked in the outbox's dead table."))
	if err != nil {
		return nil, err
	}
	down, err := m.Int64ObservableGauge(MetricOutboxKafkaDown, metric.WithUnit("1"), metric.WithDescription("1 while the relay's last publish failed for a reason other than a refusal for good."))
	if err != nil {
		return nil, err
	}
	published, err := m.Int64ObservableCounter(MetricOutboxPublished, metric.WithUnit("{row}"), metric.WithDescription("Rows the relay published and deleted."))
	if err != nil {
		return nil, err
	}
	return m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		h, err := r.Health(ctx)
		attrs := metric.WithAttributes(semconv.MessagingSystemKafka, AttrOutboxTable.String(h.Table))
		isDown := int64(0)
		if h.KafkaDown {
			isDown = 1
		}
		o.ObserveInt64(down, isDown, attrs)
		o.ObserveInt64(published, h.Published, attrs)
		if err != nil {
			return nil // the database did not answer: no backlog this time
		}
		o.ObserveInt64(backlog, h.Backlog, attrs)
		o.ObserveFloat64(oldest, h.OldestAge.Seconds(), attrs)
		o.ObserveInt64(dead, h.Dead, attrs)
		return nil
	}, backlog, oldest, dead, down, published)
}
