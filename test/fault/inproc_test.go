package fault

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/test/fault/faultmsg"
	"github.com/kavari-go/kavari/test/fault/ledger"
)

// stream is an in-process Client that publishes and consumes one message type
// while a test breaks its brokers.
type stream struct {
	k   *kavari.Client
	led *ledger.Ledger
	run string
	mk  func(faultmsg.Body) kavari.Msg

	mu   sync.Mutex
	acks []time.Time // when each acknowledgement arrived
	done chan struct{}
}

// outagePolicy retries a publish for as long as a broker outage of these tests
// can last: every 250 ms, for up to two minutes.
var outagePolicy = kavari.RetryPolicy{Strategy: kavari.Constant, BaseDelay: 250 * time.Millisecond, MaxAttempts: -1, MaxElapsed: 2 * time.Minute}

// startPublishing publishes p in the background.
func (s *stream) startPublishing(ctx context.Context, p plan) {
	s.done = make(chan struct{})
	go func() {
		defer close(s.done)
		publishAll(ctx, s.k, s.led, s.run, s.mk, p, func() {
			s.mu.Lock()
			s.acks = append(s.acks, time.Now())
			s.mu.Unlock()
		})
	}()
}

func (s *stream) acked() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.acks)
}

// firstAckAfter returns the first acknowledgement after t.
func (s *stream) firstAckAfter(t time.Time) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.acks {
		if a.After(t) {
			return a, true
		}
	}
	return time.Time{}, false
}

// waitPublished waits for the publishers to return.
func (s *stream) waitPublished(t *testing.T, guard time.Duration) {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(guard):
		t.Fatalf("publishers still running after %s", guard)
	}
}

// finish waits until every acknowledged message was handled (guard: a hang
// limit), then asserts the ledger.
func (s *stream) finish(t *testing.T, guard time.Duration) ledger.Row {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	begin := time.Now()
	if !s.led.WaitAllHandled(ctx) {
		_, _, _, pending := s.led.Counts()
		t.Errorf("%d acknowledged message(s) still not handled %s after publishing ended", pending, guard)
	} else {
		s.led.Set("drain_after_publish", time.Since(begin))
	}
	return s.led.Assert(t)
}
