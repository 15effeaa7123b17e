// Package testkit is what the tests of the kavari package and of the other
// modules share on top of testenv: the kavari.Transport KAVARI_TRANSPORT
// names (Transport, UseTransport), a quiet logger, a Client on the test
// broker, a hang guard for waits, and a reader of a topic's records. It is
// compiled only into tests and the programs they run (test/fault's
// faultapp).
package testkit

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
)

// Logger is quiet unless KAVARI_TEST_LOG is set.
func Logger() *slog.Logger {
	if os.Getenv("KAVARI_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// LoggerFor is Logger for the clients of test t: unless KAVARI_TEST_LOG is
// set it keeps the last logTail bytes of the log (Info and above) and
// writes them to t's log when t failed, after the test's other cleanups
// (a client's Stop) ran, so that a failure seen once in CI says what the
// client did.
func LoggerFor(t testing.TB) *slog.Logger {
	if os.Getenv("KAVARI_TEST_LOG") != "" {
		return Logger()
	}
	tl := &tailLog{}
	t.Cleanup(func() { // registered before the client's Stop: runs after it
		if text, cut := tl.close(); t.Failed() && text != "" {
			t.Logf("the client's log (the last %d bytes, %d before them left out):\n%s", len(text), cut, text)
		}
	})
	return slog.New(slog.NewTextHandler(tl, nil))
}

// logTail is how much of a test client's log LoggerFor keeps.
const logTail = 64 << 10

// tailLog keeps the last logTail bytes written to it, whole lines, until
// closed.
type tailLog struct {
	mu     sync.Mutex
	buf    []byte
	cut    int // bytes dropped from the front
	closed bool
}

func (l *tailLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return len(p), nil
	}
	l.buf = append(l.buf, p...)
	if over := len(l.buf) - logTail; over > 0 {
		if i := bytes.IndexByte(l.buf[over:], '\n'); i >= 0 {
			over += i + 1
		}
		l.cut += over
		l.buf = append(l.buf[:0], l.buf[over:]...)
	}
	return len(p), nil
}

// close stops keeping lines and returns the kept text and how many bytes
// were dropped before it.
func (l *tailLog) close() (string, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	return string(l.buf), l.cut
}

// NewClient builds a Client on reg against brokers (the transport
// KAVARI_TRANSPORT names), creates its topics and stops it when the test
// ends; mutate, if any, changes the Config last. A failed test shows the
// client's log (LoggerFor).
func NewClient(t testing.TB, reg *kavari.Registry, brokers []string, mutate ...func(*kavari.Config)) *kavari.Client {
	t.Helper()
	cfg := kavari.Config{
		Brokers:  brokers,
		Registry: reg,
		Logger:   LoggerFor(t),
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
	UseTransport(&cfg)
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

// Eventually waits until cond holds, failing with msg after timeout. The
// timeout is a safety net against hangs, not a performance assertion.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf(msg, args...)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ReadTopic reads every partition of topic from the start until want
// records that keep accepts have been seen, and returns them.
func ReadTopic(t testing.TB, brokers []string, topic string, want int, keep func(kafka.Message) bool) []kafka.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := kafka.DialContext(ctx, "tcp", brokers[0])
	require.NoError(t, err)
	parts, err := conn.ReadPartitions(topic)
	conn.Close()
	require.NoError(t, err)
	var mu sync.Mutex
	var out []kafka.Message
	ctx2, cancel2 := context.WithCancel(ctx)
	defer cancel2()
	var wg sync.WaitGroup
	for _, p := range parts {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p, MaxWait: 200 * time.Millisecond})
			defer r.Close()
			for {
				m, err := r.ReadMessage(ctx2)
				if err != nil {
					return
				}
				if keep(m) {
					mu.Lock()
					out = append(out, m)
					if len(out) >= want {
						cancel2()
					}
					mu.Unlock()
				}
			}
		}(p.ID)
	}
	wg.Wait()
	require.Len(t, out, want, "records read from %s", topic)
	return out
}

// Header returns the value of m's header key, "" when it has none.
func Header(m kafka.Message, key string) string {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// Transport returns the kavari.Transport that testenv.Transport
// (KAVARI_TRANSPORT) names: broker tests run on it. (It lives here, not in
// testenv, because testenv is imported by the transport adapters' own
// tests, and kavari imports the adapters.)
func Transport() kavari.Transport {
	if testenv.Transport() == "franz-go" {
		return kavari.FranzGo
	}
	return kavari.KafkaGo
}

// UseTransport sets cfg.Transport to Transport().
func UseTransport(cfg *kavari.Config) { cfg.Transport = Transport() }
