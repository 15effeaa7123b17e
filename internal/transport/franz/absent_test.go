package franz

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/kavari-go/kavari/internal/transport"
)

// TestProduceToAbsentBrokerFails: with no broker listening, Produce fails
// (Retriable, so kavari's own policy decides), also on a client whose
// metadata loads already failed (kgo's waits between them have grown; the
// timing regression is guarded by the root package's
// TestPublishAsyncBackpressure).
func TestProduceToAbsentBrokerFails(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	p, err := New().NewProducer(transport.Config{Brokers: []string{addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	// Several attempts on one client, as kavari's retry policy makes.
	for i := 0; i < 3; i++ {
		done := make(chan []error, 1)
		start := time.Now()
		go func() {
			done <- p.Produce(context.Background(), []*transport.Record{{Topic: "absent", Value: []byte("x")}})
		}()
		select {
		case errs := <-done:
			t.Logf("attempt %d: Produce returned after %v: %v", i, time.Since(start), errs)
			if len(errs) != 1 || transport.KindOf(errs[0]) != transport.Retriable {
				t.Fatalf("attempt %d: Produce = %v, want one Retriable error", i, errs)
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("attempt %d: Produce to an absent broker did not return within 60 s", i)
		}
	}
}

// TestRetryBackoffIsBounded: kgo's wait between tries grows from 100 ms and
// never exceeds maxRetryBackoff, 250 ms (kgo's default grows to 5 s).
func TestRetryBackoffIsBounded(t *testing.T) {
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 250 * time.Millisecond, 250 * time.Millisecond}
	for i, w := range want {
		if got := retryBackoff(i + 1); got != w {
			t.Errorf("retryBackoff(%d) = %v, want %v", i+1, got, w)
		}
	}
	if got := retryBackoff(1000); got != maxRetryBackoff {
		t.Errorf("retryBackoff(1000) = %v, want %v", got, maxRetryBackoff)
	}
}
