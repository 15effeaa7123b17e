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
	assert.Equal(t, host, c.Source)
	assert.NotNil(t, c.Logger)
	assert.Same(t, kavari.DefaultRegistry, c.Registry)
	assert.Equal(t, kavari.Murmur2, c.Partitioner)
	assert.Equal(t, 2*time.Millisecond, c.BatchTimeout)
	assert.Equal(t, 1000, c.BatchSize)
	assert.Equal(t, int64(1<<20), c.BatchBytes)
	assert.Equal(t, 1_000_000, c.MaxMessageBytes)
	assert.Equal(t, 10_000, c.AsyncQueue)
	assert.Equal(t, 4, c.AsyncWorkers)
	assert.False(t, c.AllowAutoCreate)
	assert.Equal(t, kavari.Earliest, c.AutoOffsetReset)
	assert.Equal(t, kavari.PerKey, c.Ordering)
	assert.Equal(t, 256, c.MaxInFlight)
	assert.Equal(t, 1024, c.MaxBuffered)
	assert.Equal(t, time.Duration(0), c.HandlerTimeout)
	assert.Equal(t, time.Second, c.CommitInterval)
	assert.Equal(t, 5*time.Second, c.DrainTimeout) // SessionTimeout − Heartbeat − 2 s: no heartbeats while draining
	assert.Equal(t, 10*time.Second, c.SessionTimeout)
	assert.Equal(t, 30*time.Second, c.RebalanceTimeout)
	assert.Equal(t, 3*time.Second, c.Heartbeat)
	assert.Equal(t, ".dlq", c.DeadLetterSuffix)
	assert.False(t, c.Relaxed)
	assert.False(t, c.CreateTopics)
	assert.Equal(t, 3, c.TopicPartitions)
	assert.Equal(t, -1, c.ReplicationFactor, "the broker's default.replication.factor, not a single replica")

	ms := func(ns ...int) []time.Duration {
		out := make([]time.Duration, len(ns))
		for i, n := range ns {
			out[i] = time.Duration(n) * time.Millisecond
		}
		return out
	}
	// Publish: Fibonacci from 100 ms, 10 attempts; consume: 5 attempts.
	assert.Equal(t, ms(100, 200, 300, 500, 800, 1300, 2100, 3400, 5500), c.PublishRetry.Delays(100))
	assert.Equal(t, ms(100, 200, 300, 500), c.ConsumerRetry.Delays(100))
}

func TestConfigExplicitValuesKept(t *testing.T) {
	reg := kavari.NewRegistry()
	logger := slog.New(slog.DiscardHandler)
	in := kavari.Config{
		Brokers: []string{"a:1", "b:2"}, ClientID: "cid", Source: "src", Logger: logger, Registry: reg,
		PublishRetry: kavari.ConstantRetry(time.Second, 2), Partitioner: kavari.CRC32,
		BatchTimeout: time.Millisecond, BatchSize: 7, BatchBytes: 4096, MaxMessageBytes: 999,
		AsyncQueue: 3, AsyncWorkers: 2, AllowAutoCreate: true,
		AutoOffsetReset: kavari.Latest, Ordering: kavari.Unordered, MaxInFlight: 9, MaxBuffered: 11,
		ConsumerRetry: kavari.NoRetry(), HandlerTimeout: time.Minute, CommitInterval: 3 * time.Second,
		DrainTimeout: 4 * time.Second, SessionTimeout: 45 * time.Second, RebalanceTimeout: 50 * time.Second,
		Heartbeat: 5 * time.Second, DeadLetterSuffix: "-dead", Relaxed: true, CreateTopics: true,
		TopicPartitions: 12, ReplicationFactor: -1,
	}
	out, err := kavari.ConfigWithDefaults(in)
	require.NoError(t, err)
	assert.Equal(t, in, out)
}

func TestConfigValidationJoinsEveryProblem(t *testing.T) {
	_, err := kavari.New(kavari.Config{
		PublishRetry:     kavari.RetryPolicy{Strategy: 7},
		ConsumerRetry:    kavari.RetryPolicy{BaseDelay: -time.Second},
		Ordering:         kavari.Ordering(9),
		Partitioner:      kavari.Partitioner(5),
		AutoOffsetReset:  kavari.OffsetReset(7),
		BatchSize:        -1,
		AsyncQueue:       -2,
		HandlerTimeout:   -time.Second,
		Heartbeat:        40 * time.Second, // longer than the default session
		RebalanceTimeout: 5 * time.Second,  // shorter than the drain
		DrainTimeout:     10 * time.Second,
		SASL:             &kavari.SASL{Mechanism: "GSSAPI"},
	})
	require.Error(t, err)
	msg := err.Error()
	assert.True(t, strings.HasPrefix(msg, "kavari: invalid Config: "), msg)
	for _, want := range []string{
		"Brokers is empty",
		"PublishRetry: ",
		"unknown strategy 7",
		"ConsumerRetry: ",
		"negative BaseDelay",
		"unknown Ordering 9",
		"unknown Partitioner 5",
		"unknown AutoOffsetReset 7",
		"BatchSize is negative",
		"AsyncQueue is negative",
		"a timeout or interval is negative",
		"Heartbeat must be shorter than SessionTimeout",
		"DrainTimeout must be shorter than RebalanceTimeout",
		"DrainTimeout must be shorter than SessionTimeout",
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
		{"negative BatchBytes", func(c *kavari.Config) { c.BatchBytes = -1 }, "BatchBytes is negative"},
		{"negative MaxMessageBytes", func(c *kavari.Config) { c.MaxMessageBytes = -1 }, "MaxMessageBytes is negative"},
		{"negative AsyncWorkers", func(c *kavari.Config) { c.AsyncWorkers = -1 }, "AsyncWorkers is negative"},
		{"MaxBuffered below MaxInFlight", func(c *kavari.Config) { c.MaxInFlight, c.MaxBuffered = 10, 5 }, "MaxBuffered must be at least MaxInFlight"},
		{"negative MaxInFlight", func(c *kavari.Config) { c.MaxInFlight = -1 }, "MaxInFlight is negative"},
		{"unknown Transport", func(c *kavari.Config) { c.Transport = 7 }, "unknown Transport 7"},
		{"negative TopicPartitions", func(c *kavari.Config) { c.TopicPartitions = -1 }, "TopicPartitions is negative"},
		{"negative CommitInterval", func(c *kavari.Config) { c.CommitInterval = -1 }, "negative"},
		{"negative DrainTimeout", func(c *kavari.Config) { c.DrainTimeout = -1 }, "negative"},
		{"negative BatchTimeout", func(c *kavari.Config) { c.BatchTimeout = -1 }, "negative"},
		{"Heartbeat equal to SessionTimeout", func(c *kavari.Config) { c.Heartbeat, c.SessionTimeout = 10*time.Second, 10*time.Second }, "Heartbeat"},
		{"DrainTimeout equal to RebalanceTimeout", func(c *kavari.Config) { c.DrainTimeout, c.RebalanceTimeout = 20*time.Second, 20*time.Second }, "DrainTimeout"},
		{"DrainTimeout equal to SessionTimeout", func(c *kavari.Config) { c.DrainTimeout, c.SessionTimeout = 10*time.Second, 10*time.Second }, "DrainTimeout must be shorter than SessionTimeout"},
		{"bad strategy", func(c *kavari.Config) { c.PublishRetry = kavari.RetryPolicy{Strategy: kavari.Strategy(9)} }, "unknown strategy"},
		{"MaxDelay below BaseDelay", func(c *kavari.Config) {
			c.ConsumerRetry = kavari.RetryPolicy{BaseDelay: time.Second, MaxDelay: time.Millisecond}
		}, "MaxDelay"},
		{"empty SASL mechanism", func(c *kavari.Config) { c.SASL = &kavari.SASL{} }, "SASL.Mechanism"},
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

	k2, err := kavari.New(kavari.Config{Brokers: ktAbsentBroker(t), Registry: kavari.NewRegistry(), Logger: ktLogger(), Partitioner: kavari.CRC32, AllowAutoCreate: true})
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

	k2, err := kavari.New(kavari.Config{Brokers: ktAbsentBroker(t), Registry: reg, Logger: ktLogger(), GroupID: "g"})
	require.NoError(t, err)
	defer func() { _ = k2.Stop(context.Background()) }()
	err = k2.Start(context.Background())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no handlers")
}
