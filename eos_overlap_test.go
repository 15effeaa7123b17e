package kavari

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari/internal/transport"
)

// slowEnd is a transport.Transactional that logs its calls, acknowledges
// every write at once, and whose first End waits until release is closed.
type slowEnd struct {
	mu      sync.Mutex
	calls   []string
	ending  chan struct{} // closed when the first End is called
	release chan struct{}
	ends    int
}

func newSlowEnd() *slowEnd {
	return &slowEnd{ending: make(chan struct{}), release: make(chan struct{})}
}

func (s *slowEnd) log(call string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, call)
}

func (s *slowEnd) sequence() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.calls, " ")
}

func (s *slowEnd) Begin() error { s.log("begin"); return nil }

func (s *slowEnd) Produce(_ context.Context, recs []*transport.Record) []error {
	s.log("produce")
	return nil
}

func (s *slowEnd) Send(_ context.Context, recs []*transport.Record, done func(int, int32, int64, error)) {
	s.log("send")
	for i := range recs {
		done(i, 0, int64(i), nil)
	}
}

func (s *slowEnd) End(context.Context, transport.Generation, []transport.Offset, bool) (bool, error) {
	s.log("end")
	s.mu.Lock()
	s.ends++
	first := s.ends == 1
	s.mu.Unlock()
	if first {
		close(s.ending)
		<-s.release
	}
	return true, nil
}

// windowEngine is an engine with no partitions whose window loop runs on
// tx, ticking every interval; stop ends the loop and waits for it.
func windowEngine(t *testing.T, tx transport.Transactional, interval time.Duration) (e *engine, stop func()) {
	t.Helper()
	hardCtx, cancel := context.WithCancel(context.Background())
	e = &engine{
		eos:     newWindow(tx, interval, nil),
		parts:   map[transport.TopicPartition]*partition{},
		runDone: make(chan struct{}),
		deps: engineDeps{
			cfg: &Config{}, log: slog.New(slog.NewTextHandler(testLogWriter{t}, nil)), health: &health{},
			hardCtx: hardCtx, stopGrace: func() time.Duration { return time.Second },
		},
	}
	done := make(chan struct{})
	go func() { defer close(done); e.windowLoop() }()
	var once sync.Once
	return e, func() {
		once.Do(func() {
			close(e.runDone)
			<-done
			cancel()
		})
	}
}

// testLogWriter writes a test client's log lines to t.Log.
type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// attemptCtx is the context of an exactly-once attempt at the record at
// offset.
func attemptCtx(ctx context.Context, offset int64) context.Context {
	j := &job{rec: &transport.Record{Topic: "t", Offset: offset}}
	return context.WithValue(ctx, ctxRecKey{}, j)
}

// waitFor fails t unless ch is closed within a minute (a bound far above
// what the step takes: it only turns a hang into a failure).
func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(time.Minute):
		t.Fatalf("still waiting for %s", what)
	}
}

// endHeld starts a window loop on a slowEnd, writes one record in the
// first window and returns once that window's End is held: the next
// window's attempts may run. cleanup releases End and stops the loop.
func endHeld(t *testing.T) (w *window, tx *slowEnd, stop func(), cleanup func()) {
	t.Helper()
	tx = newSlowEnd()
	e, stop := windowEngine(t, tx, time.Millisecond)
	w = e.eos
	ctx := context.Background()
	require.True(t, w.enter(ctx))
	require.Empty(t, w.produce(attemptCtx(ctx, 1), []*transport.Record{{Topic: "out"}}))
	w.leave()
	waitFor(t, tx.ending, "the first window's End")
	var once sync.Once
	return w, tx, stop, func() {
		once.Do(func() { close(tx.release) })
		stop()
	}
}

// attempt runs an attempt with ctx in w at the record at offset, writing
// one record: entered is closed once it started, and wrote gets what its
// write returned.
func attempt(ctx context.Context, w *window, offset int64) (entered chan struct{}, wrote chan []error) {
	entered, wrote = make(chan struct{}), make(chan []error, 1)
	go func() {
		if !w.enter(ctx) {
			return
		}
		defer w.leave()
		close(entered)
		wrote <- w.produce(attemptCtx(ctx, offset), []*transport.Record{{Topic: "out"}})
	}()
	return entered, wrote
}

// While a window's transaction ends, the next window's attempts run (they
// waited for the end before: every window left the handlers idle for its
// acks and its commit), and their writes wait until the next transaction
// begins, so they go into it and not into the one ending.
func TestNextWindowRunsWhileTheTransactionEnds(t *testing.T) {
	w, tx, stop, cleanup := endHeld(t)
	defer cleanup()

	entered, wrote := attempt(context.Background(), w, 2)
	waitFor(t, entered, "an attempt to start while the transaction ends")
	assert.Equal(t, "begin send end", tx.sequence(), "the attempt's write waits for the next transaction")

	tx.release <- struct{}{} // the first End returns
	select {
	case errs := <-wrote:
		assert.Empty(t, errs)
	case <-time.After(time.Minute):
		t.Fatal("the write did not go on once the next transaction began")
	}
	stop()
	assert.True(t, strings.HasPrefix(tx.sequence(), "begin send end begin send"), "the write went into the next transaction: %s", tx.sequence())
}

// A write waiting for the next transaction ends with its attempt's context
// (its partition revoked or lost, as after an aborted window, or Stop):
// it is refused and never written.
func TestWriteWaitingForTheNextTransactionEndsWithItsContext(t *testing.T) {
	w, tx, _, cleanup := endHeld(t)
	defer cleanup()

	ctx, cancel := context.WithCancel(context.Background())
	entered, wrote := attempt(ctx, w, 2)
	waitFor(t, entered, "an attempt to start while the transaction ends")
	cancel()
	var errs []error
	select {
	case errs = <-wrote:
	case <-time.After(time.Minute):
		t.Fatal("the waiting write did not end with its context")
	}
	require.Len(t, errs, 1)
	assert.ErrorIs(t, errs[0], context.Canceled)
	assert.Equal(t, transport.Permanent, transport.KindOf(errs[0]))
	assert.Equal(t, "begin send end", tx.sequence(), "nothing more was written")
}
