package outbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/kavari-go/kavari/internal/testkit"
	kavariotel "github.com/kavari-go/kavari/otel"
	"github.com/kavari-go/kavari/outbox"
)

// The relay's backlog reaches OpenTelemetry through kavariotel: rows and
// the age of the oldest while they wait, none once the relay published them.
func TestObserveOutbox(t *testing.T) {
	dialects(t, func(t *testing.T, d outbox.Dialect, db *sql.DB) {
		e := newEnv(t, d, db, nil)
		for i := 0; i < 5; i++ {
			e.write(false, &OrderPlaced{OrderID: fmt.Sprintf("o-%d", i), Seq: i, Amount: 1})
		}
		reader := sdkmetric.NewManualReader()
		inst := kavariotel.New(kavariotel.Config{MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))})
		r := e.relay(outbox.RelayConfig{})
		reg, err := inst.ObserveOutbox(r)
		require.NoError(t, err)
		defer reg.Unregister()

		got := collect(t, reader)
		require.Equal(t, float64(5), got[kavariotel.MetricOutboxBacklog])
		require.Positive(t, got[kavariotel.MetricOutboxOldestAge])
		require.Equal(t, float64(0), got[kavariotel.MetricOutboxDead])
		require.Equal(t, float64(0), got[kavariotel.MetricOutboxPublished])
		require.Equal(t, float64(0), got[kavariotel.MetricOutboxKafkaDown])

		e.run(r)
		e.drained(r)
		// The relay counts rows as published once their deletion
		// committed, so just after the backlog reached 0.
		testkit.Eventually(t, 10*time.Second, func() bool {
			got = collect(t, reader)
			return got[kavariotel.MetricOutboxPublished] == 5
		}, "the published rows counted")
		require.Equal(t, float64(0), got[kavariotel.MetricOutboxBacklog])
		require.Equal(t, float64(0), got[kavariotel.MetricOutboxOldestAge])
		require.Equal(t, float64(5), got[kavariotel.MetricOutboxPublished])
	})
}

// collect reads the outbox metrics of reader, checking that each carries
// the table attribute.
func collect(t *testing.T, reader *sdkmetric.ManualReader) map[string]float64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	out := map[string]float64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch data := m.Data.(type) {
			case metricdata.Gauge[int64]:
				for _, p := range data.DataPoints {
					_, ok := p.Attributes.Value(kavariotel.AttrOutboxTable)
					require.True(t, ok, m.Name)
					out[m.Name] = float64(p.Value)
				}
			case metricdata.Gauge[float64]:
				for _, p := range data.DataPoints {
					out[m.Name] = p.Value
				}
			case metricdata.Sum[int64]:
				for _, p := range data.DataPoints {
					out[m.Name] = float64(p.Value)
				}
			}
		}
	}
	return out
}
