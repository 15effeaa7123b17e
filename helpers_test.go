package kavari_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/internal/testtransport"
)

// testLogger is quiet unless KAVARI_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("KAVARI_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// newKavari builds a Client on reg against the test broker, creates its topics
// and stops it when the test ends.
func newKavari(t *testing.T, reg *kavari.Registry, brokers []string, mutate ...func(*kavari.Config)) *kavari.Client {
	t.Helper()
	cfg := kavari.Config{
		Brokers:  brokers,
		Registry: reg,
		Logger:   testLogger(),
		Publish: kavari.PublishConfig{
			Retry: kavari.FibonacciRetry(50*time.Millisecond, 10),
		},
		Consume: kavari.ConsumeConfig{
			GroupID:           testenv.ID("g"),
			CommitInterval:    200 * time.Millisecond,
			HeartbeatInterval: 500 * time.Millisecond,
			SessionTimeout:    10 * time.Second,
			DrainTimeout:      5 * time.Second,
			Retry:             kavari.FibonacciRetry(5*time.Millisecond, 3),
		},
	}
	testtransport.Use(&cfg)
	for _, m := range mutate {
		m(&cfg)
	}
	k, err := kavari.New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, k.EnsureTopics(ctx))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = k.Stop(ctx)
	})
	return k
}

// eventually waits until cond holds, failing with msg after timeout. The
// timeout is a safety net against hangs, not a performance assertion.
func eventually(t *testing.T, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf(msg, args...)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
