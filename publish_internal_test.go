package kavari

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari/internal/transport/kafkago"
)

// fakeWriter is a kafkago.MessageWriter whose every WriteMessages call is answered by
// write, so tests can fail attempts in chosen ways without a broker.
type fakeWriter struct {
	mu    sync.Mutex
	calls int
	write func(call int, msgs []kafka.Message) error
}

func (w *fakeWriter) WriteMessages(ctx context.Context, msgs ...kafka.Message) error {
	w.mu.Lock()
	w.calls++
	call := w.calls
	w.mu.Unlock()
	return w.write(call, msgs)
}

func (w *fakeWriter) Close() error { return nil }

func (w *fakeWriter) Calls() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.calls
}

type internalMsg struct {
	Message `kavari:"topic=internal-topic,key=ID"`
	ID      string `json:"id"`
}

// newFakePublisher returns a publisher writing through w, with cfg's zero
// fields defaulted and a quiet logger.
func newFakePublisher(t *testing.T, cfg Config, w kafkago.MessageWriter) *publisher {
	t.Helper()
	cfg.Brokers = []string{"127.0.0.1:1"}
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.Registry = NewRegistry()
	cfg.setDefaults()
	require.NoError(t, cfg.validate())
	c := cfg
	p := newPublisher(&c, newEncoder("test", c.Publish.MaxMessageBytes, time.Now), kafkago.NewProducerWith(w))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = p.close(ctx)
	})
	return p
}

// Elapsed and MaxElapsed count from the start of the first attempt, which
// Publish makes before the retry loop (its fast path).
func TestPublishRetryElapsedIncludesFirstAttempt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		slow := func(int, []kafka.Message) error {
			time.Sleep(5 * time.Second) // every attempt takes 5 s, then fails
			return kafka.LeaderNotAvailable
		}
		w := &fakeWriter{write: slow}
		p := newFakePublisher(t, Config{Publish: PublishConfig{Retry: ConstantRetry(time.Second, 2)}}, w)
		_, errs := p.publish(context.Background(), []Msg{&internalMsg{ID: "a"}})
		require.Len(t, errs, 1)
		var re *RetryError
		require.ErrorAs(t, errs[0], &re)
		assert.Equal(t, 2, re.Attempts)
		assert.Equal(t, 11*time.Second, re.Elapsed, "5 s + 1 s wait + 5 s: the first attempt counts")

		// MaxElapsed 11 s: after the second attempt (at 11 s) no wait fits. Were the
		// first attempt left out, a third attempt would be made.
		w2 := &fakeWriter{write: slow}
		p2 := newFakePublisher(t, Config{Publish: PublishConfig{Retry: RetryPolicy{Strategy: Constant, BaseDelay: time.Second, MaxAttempts: -1, MaxElapsed: 11 * time.Second}}}, w2)
		_, errs = p2.publish(context.Background(), []Msg{&internalMsg{ID: "a"}})
		require.ErrorAs(t, errs[0], &re)
		assert.Equal(t, 2, w2.Calls(), "MaxElapsed counts the first attempt's 5 s")
		assert.Equal(t, 2, re.Attempts)
		assert.Equal(t, 11*time.Second, re.Elapsed)
	})
}

// kafka-go reports a topic missing from its metadata as a plain
// UnknownTopicOrPartition from WriteMessages, not as a WriteErrors entry:
// it must get the few attempts and the hint all the same.
func TestPublishUnknownTopicFromMetadataGivesUpEarly(t *testing.T) {
	w := &fakeWriter{write: func(int, []kafka.Message) error { return kafka.UnknownTopicOrPartition }}
	p := newFakePublisher(t, Config{Publish: PublishConfig{Retry: ConstantRetry(time.Millisecond, 10)}}, w)
	_, errs := p.publish(context.Background(), []Msg{&internalMsg{ID: "a"}})
	require.Len(t, errs, 1)
	err := errs[0]
	assert.Equal(t, unknownTopicAttempts, w.Calls(), "attempts: %v", err)
	assert.ErrorIs(t, err, ErrUnknownTopic)
	assert.ErrorIs(t, err, kafka.UnknownTopicOrPartition)
	assert.Contains(t, err.Error(), "EnsureTopics")
	var pe *PublishError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, "internal-topic", pe.Topic)

	// The same answer per message (WriteErrors) is classified the same way.
	w2 := &fakeWriter{write: func(_ int, msgs []kafka.Message) error {
		we := make(kafka.WriteErrors, len(msgs))
		for i := range we {
			we[i] = kafka.UnknownTopicOrPartition
		}
		return we
	}}
	p2 := newFakePublisher(t, Config{Publish: PublishConfig{Retry: ConstantRetry(time.Millisecond, 10)}}, w2)
	_, errs = p2.publish(context.Background(), []Msg{&internalMsg{ID: "a"}, &internalMsg{ID: "b"}})
	require.Len(t, errs, 2)
	assert.Equal(t, unknownTopicAttempts, w2.Calls())
	for _, err := range errs {
		assert.ErrorIs(t, err, ErrUnknownTopic)
		assert.Contains(t, err.Error(), "EnsureTopics")
	}

	// With auto-creation allowed the topic may appear: the policy decides.
	w3 := &fakeWriter{write: func(int, []kafka.Message) error { return kafka.UnknownTopicOrPartition }}
	p3 := newFakePublisher(t, Config{Publish: PublishConfig{AllowAutoCreate: true, Retry: ConstantRetry(time.Millisecond, 5)}}, w3)
	p3.publish(context.Background(), []Msg{&internalMsg{ID: "a"}})
	assert.Equal(t, 5, w3.Calls())
}

// dialRefused is what a write gets from a broker that is not listening.
var dialRefused = &net.OpError{Op: "dial", Net: "tcp", Err: &os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}}

// When one attempt fails after the request may have reached the broker and
// the later ones fail otherwise, the outcome is still unknown.
func TestPublishMayHaveBeenWrittenIsSticky(t *testing.T) {
	cases := []struct {
		name  string
		first error // the first attempt's error; the later attempts are refused
		want  bool
	}{
		{"connection cut mid-request", io.ErrUnexpectedEOF, true},
		{"connection reset", &net.OpError{Op: "read", Net: "tcp", Err: &os.SyscallError{Syscall: "read", Err: syscall.ECONNRESET}}, true},
		{"broker request timeout", kafka.RequestTimedOut, true},
		{"per-record EOF", kafka.WriteErrors{io.EOF}, true},
		{"kafka-go's own deadline", context.DeadlineExceeded, true},
		{"a failure kavari cannot place", errors.New("kafka: garbled response"), true},
		{"refused every time", dialRefused, false},
		{"not the leader", kafka.NotLeaderForPartition, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := &fakeWriter{write: func(call int, _ []kafka.Message) error {
				if call == 1 {
					return tc.first
				}
				return dialRefused
			}}
			p := newFakePublisher(t, Config{Publish: PublishConfig{Retry: ConstantRetry(time.Millisecond, 3)}}, w)
			_, errs := p.publish(context.Background(), []Msg{&internalMsg{ID: "a"}})
			require.Len(t, errs, 1)
			var pe *PublishError
			require.ErrorAs(t, errs[0], &pe)
			assert.Equal(t, 3, w.Calls(), "every attempt was made: %v", errs[0])
			assert.Equal(t, tc.want, pe.MayHaveBeenWritten, "%v", errs[0])
			if tc.want {
				assert.Contains(t, pe.Error(), "may have been written")
			}
		})
	}
}

// A PublishAsync callback runs on the async writer; when it publishes again
// to the same writer with the queue full, it must not wait for room only
// that writer could make.
func TestPublishAsyncCallbackRepublishesWithQueueFull(t *testing.T) {
	gate := make(chan struct{})
	writing := make(chan struct{}, 100)
	w := &fakeWriter{write: func(call int, _ []kafka.Message) error {
		writing <- struct{}{}
		if call == 1 {
			<-gate
		}
		return nil
	}}
	p := newFakePublisher(t, Config{Publish: PublishConfig{AsyncQueue: 1, AsyncWorkers: 1, BatchSize: 1}}, w)
	var mu sync.Mutex
	done := map[string]error{}
	finished := make(chan struct{})
	var record func(r Receipt, err error)
	record = func(r Receipt, err error) {
		id := r.Message.(*internalMsg).ID
		mu.Lock()
		done[id] = err
		n := len(done)
		mu.Unlock()
		switch id {
		case "m0":
			// The queue holds m1: full. A blocking enqueue, then more.
			p.enqueue(context.Background(), &internalMsg{ID: "m2"}, record)
			p.enqueue(context.Background(), &internalMsg{ID: "m3"}, record)
		case "m1":
			p.enqueue(context.Background(), &internalMsg{ID: "m4"}, record)
		}
		if n == 5 {
			close(finished)
		}
	}
	p.enqueue(context.Background(), &internalMsg{ID: "m0"}, record)
	<-writing // m0 is being written
	p.enqueue(context.Background(), &internalMsg{ID: "m1"}, record)
	assert.ErrorIs(t, p.tryEnqueue(context.Background(), &internalMsg{ID: "x"}, record, false), ErrQueueFull, "the queue holds m1")
	close(gate)
	select {
	case <-finished:
	case <-time.After(30 * time.Second):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("deadlock: a callback publishing to its own full queue never returned; callbacks run: %v", done)
	}
	mu.Lock()
	defer mu.Unlock()
	for id, err := range done {
		assert.NoError(t, err, id)
	}
}
