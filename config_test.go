package kavari_test

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
)

func TestConfigDefaults(t *testing.T) {
	c, err := kavari.ConfigWithDefaults(kavari.Config{Brokers: []string{"127.0.0.1:1"}})
	require.NoError(t, err)
	host, _ := os.Hostname()
	if host == "" {
		host = "kavari"
	}
	assert.Equal(t, "kavari", c.ClientID)
	assert.Equal(t, host, c.CloudEventsSource)
	assert.NotNil(t, c.Logger)
	assert.Same(t, kavari.DefaultRegistry, c.Registry)
	assert.Equal(t, kavari.Murmur2, c.Publish.Partitioner)
	assert.Equal(t, 2*time.Millisecond, c.Publish.BatchTimeout)
	assert.Equal(t, 1000, c.Publish.BatchSize)
	assert.Equal(t, int64(1<<20), c.Publish.BatchBytes)
	assert.Equal(t, 1_000_000, c.Publish.MaxMessageBytes)
	assert.Equal(t, 10_000, c.Publish.AsyncQueue)
	assert.Equal(t, 4, c.Publish.AsyncWorkers)
	assert.False(t, c.Publish.AllowAutoCreate)
	assert.Equal(t, kavari.Earliest, c.Consume.AutoOffsetReset)
	assert.Equal(t, kavari.PerKey, c.Consume.Ordering)
	assert.Equal(t, 256, c.Consume.MaxInFlight)
	assert.Equal(t, 1024, c.Consume.MaxBuffered)
	assert.Equal(t, 100, c.Consume.MaxBatchRecords)
	assert.Equal(t, 1<<20, c.Consume.MaxBatchBytes)
	assert.Equal(t, 10*time.Millisecond, c.Consume.MaxBatchWait)
	assert.Equal(t, time.Duration(0), c.Consume.HandlerTimeout)
	assert.Equal(t, time.Second, c.Consume.CommitInterval)
	assert.Equal(t, 5*time.Second, c.Consume.DrainTimeout) // SessionTimeout − HeartbeatInterval − 2 s: no heartbeats while draining
	assert.Equal(t, 10*time.Second, c.Consume.SessionTimeout)
	assert.Equal(t, 30*time.Second, c.Consume.RebalanceTimeout)
	assert.Equal(t, 3*time.Second, c.Consume.HeartbeatInterval)
	assert.Equal(t, ".dlq", c.Topics.DeadLetterSuffix)
	assert.False(t, c.Consume.SkipUnknownTypes)
	assert.False(t, c.Topics.Create)
	assert.Equal(t, 3, c.Topics.Partitions)
	assert.Equal(t, -1, c.Topics.ReplicationFactor, "the broker's default.replication.factor, not a single replica")

	ms := func(ns ...int) []time.Duration {
		out := make([]time.Duration, len(ns))
		for i, n := range ns {
			out[i] = time.Duration(n) * time.Millisecond
		}
		return out
	}
	// Publish: Fibonacci from 100 ms, 10 attempts; consume: 5 attempts.
	assert.Equal(t, ms(100, 200, 300, 500, 800, 1300, 2100, 3400, 5500), c.Publish.Retry.Delays(100))
	assert.Equal(t, ms(100, 200, 300, 500), c.Consume.Retry.Delays(100))
}

func TestConfigExplicitValuesKept(t *testing.T) {
	reg := kavari.NewRegistry()
	logger := slog.New(slog.DiscardHandler)
	in := kavari.Config{
		Brokers:           []string{"a:1", "b:2"},
		ClientID:          "cid",
		CloudEventsSource: "src",
		Logger:            logger,
		Registry:          reg,
		Publish: kavari.PublishConfig{
			Retry:           kavari.ConstantRetry(time.Second, 2),
			Partitioner:     kavari.CRC32,
			BatchTimeout:    time.Millisecond,
			BatchSize:       7,
			BatchBytes:      4096,
			MaxMessageBytes: 999,
			AsyncQueue:      3,
			AsyncWorkers:    2,
			AllowAutoCreate: true,
		},
		Consume: kavari.ConsumeConfig{
			AutoOffsetReset:   kavari.Latest,
			Ordering:          kavari.Unordered,
			MaxInFlight:       9,
			MaxBuffered:       11,
			MaxBatchRecords:   5,
			MaxBatchBytes:     700,
			MaxBatchWait:      time.Second,
			Retry:             kavari.NoRetry(),
			HandlerTimeout:    time.Minute,
			CommitInterval:    3 * time.Second,
			DrainTimeout:      4 * time.Second,
			SessionTimeout:    45 * time.Second,
			RebalanceTimeout:  50 * time.Second,
			HeartbeatInterval: 5 * time.Second,
			SkipUnknownTypes:  true,
			RetryTopics:       []time.Duration{time.Second},
		},
		Topics: kavari.TopicConfig{
			DeadLetterSuffix:  "-dead",
			RetrySuffix:       "-again",
			Create:            true,
			Partitions:        12,
			ReplicationFactor: -1,
		},
	}
	out, err := kavari.ConfigWithDefaults(in)
	require.NoError(t, err)
	assert.Equal(t, in, out)
}

func TestConfigValidationJoinsEveryProblem(t *testing.T) {
	_, err := kavari.New(kavari.Config{
		SASL: &kavari.SASL{Mechanism: "GSSAPI"},
		Publish: kavari.PublishConfig{
			Retry:       kavari.RetryPolicy{Strategy: 7},
			Partitioner: kavari.Partitioner(5),
			BatchSize:   -1,
			AsyncQueue:  -2,
		},
		Consume: kavari.ConsumeConfig{
			Retry:             kavari.RetryPolicy{BaseDelay: -time.Second},
			Ordering:          kavari.Ordering(9),
			AutoOffsetReset:   kavari.OffsetReset(7),
			HandlerTimeout:    -time.Second,
			HeartbeatInterval: 40 * time.Second, // longer than the default session
			RebalanceTimeout:  5 * time.Second,  // shorter than the drain
			DrainTimeout:      10 * time.Second,
		},
	})
	require.Error(t, err)
	msg := err.Error()
	assert.True(t, strings.HasPrefix(msg, "kavari: invalid Config: "), msg)
	for _, want := range []string{
		"Brokers is empty",
		"Publish.Retry: ",
		"unknown strategy 7",
		"Consume.Retry: ",
		"negative BaseDelay",
		"unknown Consume.Ordering 9",
		"unknown Publish.Partitioner 5",
		"unknown Consume.AutoOffsetReset 7",
		"Publish.BatchSize is negative",
		"Publish.AsyncQueue is negative",
		"a timeout or interval (Consume.HandlerTimeout, Consume.CommitInterval, Consume.DrainTimeout, Publish.BatchTimeout) is negative",
		"Consume.HeartbeatInterval must be shorter than Consume.SessionTimeout",
		"Consume.DrainTimeout must be shorter than Consume.RebalanceTimeout",
		"Consume.DrainTimeout must be shorter than Consume.SessionTimeout",
		`SASL.Mechanism "GSSAPI"`,
	} {
		assert.Contains(t, msg, want)
	}
	// One joined error per problem.
	var joined interface{ Unwrap() []error }
	require.True(t, errors.As(errors.Unwrap(err), &joined), "errors.Join inside: %T", errors.Unwrap(err))
	assert.Len(t, joined.Unwrap(), 13)
}

func TestConfigValidationSingleProblems(t *testing.T) {
	ok := func() kavari.Config { return kavari.Config{Brokers: []string{"127.0.0.1:1"}, Logger: ktLogger()} }
	for _, tc := range []struct {
		name   string
		mutate func(*kavari.Config)
		want   string
	}{
		{"no brokers", func(c *kavari.Config) { c.Brokers = nil }, "Brokers is empty"},
		{"empty broker address", func(c *kavari.Config) { c.Brokers = []string{"a:1", ""} }, "Brokers has an empty address"},
		{"negative BatchBytes", func(c *kavari.Config) { c.Publish.BatchBytes = -1 }, "Publish.BatchBytes is negative"},
		{"negative MaxMessageBytes", func(c *kavari.Config) { c.Publish.MaxMessageBytes = -1 }, "Publish.MaxMessageBytes is negative"},
		{"negative AsyncWorkers", func(c *kavari.Config) { c.Publish.AsyncWorkers = -1 }, "Publish.AsyncWorkers is negative"},
		{"MaxBuffered below MaxInFlight", func(c *kavari.Config) { c.Consume.MaxInFlight, c.Consume.MaxBuffered = 10, 5 }, "Consume.MaxBuffered must be at least Consume.MaxInFlight"},
		{"negative MaxInFlight", func(c *kavari.Config) { c.Consume.MaxInFlight = -1 }, "Consume.MaxInFlight is negative"},
		{"negative MaxBatchRecords", func(c *kavari.Config) { c.Consume.MaxBatchRecords = -1 }, "Consume.MaxBatchRecords is negative"},
		{"negative MaxBatchBytes", func(c *kavari.Config) { c.Consume.MaxBatchBytes = -1 }, "Consume.MaxBatchBytes is negative"},
		{"negative MaxBatchWait", func(c *kavari.Config) { c.Consume.MaxBatchWait = -1 }, "Consume.MaxBatchWait is negative"},
		{"unknown Transport", func(c *kavari.Config) { c.Transport = 7 }, "unknown Transport 7"},
		{"negative Topics.Partitions", func(c *kavari.Config) { c.Topics.Partitions = -1 }, "Topics.Partitions is negative"},
		{"negative CommitInterval", func(c *kavari.Config) { c.Consume.CommitInterval = -1 }, "negative"},
		{"negative DrainTimeout", func(c *kavari.Config) { c.Consume.DrainTimeout = -1 }, "negative"},
		{"negative BatchTimeout", func(c *kavari.Config) { c.Publish.BatchTimeout = -1 }, "negative"},
		{"HeartbeatInterval equal to SessionTimeout", func(c *kavari.Config) {
			c.Consume.HeartbeatInterval, c.Consume.SessionTimeout = 10*time.Second, 10*time.Second
		}, "Consume.HeartbeatInterval must be shorter"},
		{"DrainTimeout equal to RebalanceTimeout", func(c *kavari.Config) {
			c.Consume.DrainTimeout, c.Consume.RebalanceTimeout = 20*time.Second, 20*time.Second
		}, "Consume.DrainTimeout must be shorter than Consume.RebalanceTimeout"},
		{"DrainTimeout equal to SessionTimeout", func(c *kavari.Config) {
			c.Consume.DrainTimeout, c.Consume.SessionTimeout = 10*time.Second, 10*time.Second
		}, "Consume.DrainTimeout must be shorter than Consume.SessionTimeout"},
		{"bad strategy", func(c *kavari.Config) { c.Publish.Retry = kavari.RetryPolicy{Strategy: kavari.Strategy(9)} }, "unknown strategy"},
		{"MaxDelay below BaseDelay", func(c *kavari.Config) {
			c.Consume.Retry = kavari.RetryPolicy{BaseDelay: time.Second, MaxDelay: time.Millisecond}
		}, "MaxDelay"},
		{"empty SASL mechanism", func(c *kavari.Config) { c.SASL = &kavari.SASL{} }, "SASL.Mechanism"},
		{"MaxMessageBytes over BatchBytes", func(c *kavari.Config) {
			c.Publish.MaxMessageBytes, c.Publish.BatchBytes = 2_000_000, 1_000_000
		}, "Publish.MaxMessageBytes (2000000) is larger than Publish.BatchBytes (1000000)"},
		{"MaxMessageBytes over the default BatchBytes", func(c *kavari.Config) { c.Publish.MaxMessageBytes = 2_000_000 }, "Publish.BatchBytes (1048576)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok()
			tc.mutate(&c)
			k, err := kavari.New(c)
			require.Error(t, err)
			assert.Nil(t, k)
			assert.Contains(t, err.Error(), tc.want)
			assert.Contains(t, err.Error(), "kavari: invalid Config")
		})
	}
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		c := ok()
		c.SASL = &kavari.SASL{Mechanism: mech, Username: "u", Password: "p"}
		c.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
		_, err := kavari.ConfigWithDefaults(c)
		require.NoError(t, err, mech)
	}
}

// New does not contact the brokers, and configures its Writer on purpose
// rather than with kafka-go's defaults.
func TestNewConfiguresTheWriter(t *testing.T) {
	k, err := kavari.New(kavari.Config{Brokers: ktAbsentBroker(t), Registry: kavari.NewRegistry(), Logger: ktLogger(), ClientID: "kt-client"})
	require.NoError(t, err, "a Kafka that is down at boot does not stop New")
	defer func() { _ = k.Stop(context.Background()) }()
	w := kavari.WriterOf(k)
	assert.Equal(t, kafka.RequireAll, w.RequiredAcks)
	assert.IsType(t, &kafka.Murmur2Balancer{}, w.Balancer)
	assert.Equal(t, 2*time.Millisecond, w.BatchTimeout)
	assert.Equal(t, 1000, w.BatchSize)
	assert.Equal(t, int64(1<<20), w.BatchBytes)
	assert.Equal(t, 1, w.MaxAttempts, "kavari retries itself")
	assert.False(t, w.Async)
	assert.False(t, w.AllowAutoTopicCreation)
	tr, ok := w.Transport.(*kafka.Transport)
	require.True(t, ok, "an own Transport: %T", w.Transport)
	assert.Equal(t, "kt-client", tr.ClientID)

	k2, err := kavari.New(kavari.Config{Brokers: ktAbsentBroker(t), Registry: kavari.NewRegistry(), Logger: ktLogger(), Publish: kavari.PublishConfig{Partitioner: kavari.CRC32, AllowAutoCreate: true}})
	require.NoError(t, err)
	defer func() { _ = k2.Stop(context.Background()) }()
	assert.IsType(t, &kafka.CRC32Balancer{}, kavari.WriterOf(k2).Balancer)
	assert.True(t, kavari.WriterOf(k2).AllowAutoTopicCreation)
}

type ktCfgStartMsg struct {
	kavari.Message `kavari:"topic=kt-config-start"`
}

func TestStartNeedsGroupAndHandlers(t *testing.T) {
	reg := kavari.NewRegistry()
	require.NoError(t, reg.Declare(&ktCfgStartMsg{}))
	k, err := kavari.New(kavari.Config{Brokers: ktAbsentBroker(t), Registry: reg, Logger: ktLogger()})
	require.NoError(t, err)
	defer func() { _ = k.Stop(context.Background()) }()
	err = k.Start(context.Background())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "GroupID")

	k2, err := kavari.New(kavari.Config{Brokers: ktAbsentBroker(t), Registry: reg, Logger: ktLogger(), Consume: kavari.ConsumeConfig{GroupID: "g"}})
	require.NoError(t, err)
	defer func() { _ = k2.Stop(context.Background()) }()
	err = k2.Start(context.Background())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no handlers")
}
