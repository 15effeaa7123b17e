package kavari

import (
	"context"
	"errors"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeClock records every wait retry asks for. By default its timers fire
// at once and move Now forward by their duration, so a whole retry sequence
// runs instantly and deterministically; with block set they never fire and
// each wait is announced on started instead.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waits   []time.Duration
	stopped int
	block   bool
	started chan time.Duration
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves Now forward, as an attempt that takes d would.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func (c *fakeClock) NewTimer(d time.Duration) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waits = append(c.waits, d)
	t := &fakeTimer{c: c, ch: make(chan time.Time, 1)}
	if c.block {
		c.started <- d
		return t
	}
	c.now = c.now.Add(d)
	t.ch <- c.now
	return t
}

func (c *fakeClock) Waits() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.waits...)
}

type fakeTimer struct {
	c  *fakeClock
	ch chan time.Time
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	t.c.stopped++
	return len(t.ch) == 0
}

var errBoom = errors.New("boom")

// failing returns an op that always fails with errBoom and counts its calls.
func failing(calls *int) func(int) error {
	return func(attempt int) error {
		*calls++
		return errBoom
	}
}

func ms(ds ...int) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = time.Duration(d) * time.Millisecond
	}
	return out
}

func sum(ds []time.Duration) (s time.Duration) {
	for _, d := range ds {
		s += d
	}
	return s
}

func TestRetryFibonacciWaits(t *testing.T) {
	p := FibonacciRetry(10*time.Millisecond, 8)
	p.MaxDelay = 60 * time.Millisecond
	clk := newFakeClock()
	calls := 0

	err := p.retry(context.Background(), clk, failing(&calls), nil, nil)

	assert.Equal(t, 8, calls)
	assert.Equal(t, ms(10, 20, 30, 50, 60, 60, 60), clk.Waits())
	var rerr *RetryError
	require.ErrorAs(t, err, &rerr)
	assert.Equal(t, 8, rerr.Attempts)
	assert.Equal(t, sum(clk.Waits()), rerr.Elapsed)
	assert.Same(t, errBoom, rerr.Err)
	assert.NoError(t, rerr.Cause)
	assert.ErrorIs(t, err, errBoom)
	assert.Equal(t, "kavari: gave up after 8 attempts in 290ms: boom", err.Error())

	assert.Equal(t, ms(10, 20, 30, 50, 80, 130, 210, 340), FibonacciRetry(10*time.Millisecond, 0).Delays(8))
}

func TestRetryFibonacciSaturates(t *testing.T) {
	p := RetryPolicy{BaseDelay: time.Duration(math.MaxInt64 / 3), MaxDelay: math.MaxInt64, MaxAttempts: -1}
	for _, d := range p.Delays(50) {
		assert.Positive(t, d)
	}
	p = RetryPolicy{Strategy: Exponential, BaseDelay: time.Hour, MaxDelay: math.MaxInt64, MaxAttempts: -1, Jitter: 1}
	clk := newFakeClock()
	n := 0
	_ = p.retry(context.Background(), clk, func(int) error {
		if n++; n == 80 {
			return nil
		}
		return errBoom
	}, nil, nil)
	for _, d := range clk.Waits() {
		assert.GreaterOrEqual(t, d, time.Duration(0))
	}
}

func TestRetryExponentialWithinJitter(t *testing.T) {
	for _, jitter := range []float64{0, 0.25, 1} {
		p := ExponentialRetry(100*time.Millisecond, 10)
		p.MaxDelay = 5 * time.Second
		p.Jitter = jitter
		if jitter == 0 {
			jitter = defaultJitter
		}
		base := p.Delays(9)
		require.Equal(t, ms(100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000), base)

		for range 50 {
			clk := newFakeClock()
			calls := 0
			_ = p.retry(context.Background(), clk, failing(&calls), nil, nil)
			require.Equal(t, 10, calls)
			waits := clk.Waits()
			require.Len(t, waits, 9)
			for i, w := range waits {
				lo := time.Duration(float64(base[i]) * (1 - jitter))
				hi := min(p.MaxDelay, time.Duration(float64(base[i])*(1+jitter))+1)
				assert.GreaterOrEqual(t, w, lo, "wait %d, jitter %v", i, jitter)
				assert.LessOrEqual(t, w, hi, "wait %d, jitter %v", i, jitter)
			}
		}
	}
}

func TestRetryConstant(t *testing.T) {
	clk := newFakeClock()
	calls := 0
	err := ConstantRetry(250*time.Millisecond, 4).retry(context.Background(), clk, failing(&calls), nil, nil)
	assert.Equal(t, 4, calls)
	assert.Equal(t, ms(250, 250, 250), clk.Waits())
	assert.ErrorIs(t, err, errBoom)

	// A delay beyond the default cap raises the cap rather than being cut.
	assert.Equal(t, []time.Duration{time.Minute, time.Minute}, ConstantRetry(time.Minute, 3).Delays(5))
	// An explicit cap applies (and Validate flags it).
	p := ConstantRetry(time.Minute, 3)
	p.MaxDelay = time.Second
	assert.Equal(t, []time.Duration{time.Second, time.Second}, p.Delays(5))
	assert.Error(t, p.Validate())
}

func TestRetryMaxAttempts(t *testing.T) {
	for _, tc := range []struct{ maxAttempts, calls int }{{1, 1}, {2, 2}, {5, 5}, {0, 10}} {
		clk := newFakeClock()
		calls := 0
		err := FibonacciRetry(time.Millisecond, tc.maxAttempts).retry(context.Background(), clk, failing(&calls), nil, nil)
		assert.Equal(t, tc.calls, calls, "MaxAttempts %d", tc.maxAttempts)
		assert.Len(t, clk.Waits(), tc.calls-1)
		var rerr *RetryError
		require.ErrorAs(t, err, &rerr)
		assert.Equal(t, tc.calls, rerr.Attempts)
	}

	clk := newFakeClock()
	calls := 0
	err := NoRetry().retry(context.Background(), clk, failing(&calls), nil, nil)
	assert.Equal(t, 1, calls)
	assert.Empty(t, clk.Waits())
	assert.Equal(t, "kavari: gave up after 1 attempt in 0s: boom", err.Error())
	assert.Nil(t, NoRetry().Delays(3))
}

func TestRetrySucceeds(t *testing.T) {
	clk := newFakeClock()
	calls := 0
	err := FibonacciRetry(time.Second, 5).retry(context.Background(), clk, func(attempt int) error {
		calls++
		assert.Equal(t, calls, attempt)
		if attempt < 3 {
			return errBoom
		}
		return nil
	}, nil, nil)
	assert.NoError(t, err)
	assert.Equal(t, 3, calls)
	assert.Equal(t, []time.Duration{time.Second, 2 * time.Second}, clk.Waits())
}

func TestRetryUnlimitedStoppedByMaxElapsed(t *testing.T) {
	p := ConstantRetry(time.Second, -1)
	p.MaxElapsed = 5 * time.Second
	clk := newFakeClock()
	calls := 0
	err := p.retry(context.Background(), clk, failing(&calls), nil, nil)
	assert.Equal(t, 6, calls, "attempts at 0s, 1s, … 5s")
	var rerr *RetryError
	require.ErrorAs(t, err, &rerr)
	assert.Equal(t, 5*time.Second, rerr.Elapsed)
	assert.NoError(t, rerr.Cause)

	// Attempts take time too; no wait may end past MaxElapsed.
	p.MaxElapsed = 5500 * time.Millisecond
	clk = newFakeClock()
	calls = 0
	err = p.retry(context.Background(), clk, func(int) error {
		calls++
		clk.Advance(time.Second)
		return errBoom
	}, nil, nil)
	assert.Equal(t, 3, calls, "attempts at 0s, 2s, 4s; the next wait would end at 6s")
	require.ErrorAs(t, err, &rerr)
	assert.Equal(t, 5*time.Second, rerr.Elapsed)
}

func TestRetryNonRetriable(t *testing.T) {
	permanent := errors.New("permanent")
	clk := newFakeClock()
	calls := 0
	err := FibonacciRetry(time.Millisecond, -1).retry(context.Background(), clk, func(int) error {
		calls++
		return permanent
	}, func(err error) bool { return !errors.Is(err, permanent) }, func(int, error, time.Duration) {
		t.Error("onRetry called for a non-retriable error")
	})
	assert.Same(t, permanent, err, "returned exactly as op returned it")
	assert.Equal(t, 1, calls)
	assert.Empty(t, clk.Waits())
}

func TestRetryContextCancelledDuringWait(t *testing.T) {
	clk := newFakeClock()
	clk.block = true
	clk.started = make(chan time.Duration, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	calls := 0
	done := make(chan error, 1)
	go func() {
		done <- FibonacciRetry(time.Hour, -1).retry(ctx, clk, failing(&calls), nil, nil)
	}()

	assert.Equal(t, time.Hour, <-clk.started)
	cancel()
	var err error
	select {
	case err = <-done:
	case <-time.After(10 * time.Second): // a safety net against a hang, not a sleep
		t.Fatal("retry did not return after its context was cancelled")
	}

	assert.Equal(t, 1, calls)
	assert.ErrorIs(t, err, context.Canceled)
	assert.ErrorIs(t, err, errBoom)
	var rerr *RetryError
	require.ErrorAs(t, err, &rerr)
	assert.Equal(t, 1, rerr.Attempts)
	assert.Same(t, errBoom, rerr.Err)
	assert.Equal(t, context.Canceled, rerr.Cause)
	assert.Equal(t, 1, clk.stopped, "the pending timer is stopped")
	assert.Equal(t, "kavari: stopped retrying after 1 attempt: context canceled: boom", err.Error())
}

func TestRetryContextCause(t *testing.T) {
	shutdown := errors.New("shutting down")
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(shutdown)
	clk := newFakeClock()
	calls := 0
	err := FibonacciRetry(time.Second, 5).retry(ctx, clk, failing(&calls), nil, nil)
	assert.Equal(t, 1, calls, "op runs once even with a done context; no wait starts")
	assert.Empty(t, clk.Waits())
	var rerr *RetryError
	require.ErrorAs(t, err, &rerr)
	assert.Same(t, shutdown, rerr.Cause)
	assert.ErrorIs(t, err, shutdown)
	assert.ErrorIs(t, err, context.Canceled, "the context's Err is reachable beside a custom cause")
	assert.ErrorIs(t, err, errBoom)
	assert.Equal(t, "kavari: stopped retrying after 1 attempt: shutting down: boom", err.Error())
}

func TestRetryDeadline(t *testing.T) {
	ctx, cancel := context.WithDeadline(context.Background(), time.Unix(0, 0))
	defer cancel()
	calls := 0
	err := FibonacciRetry(time.Second, 5).retry(ctx, newFakeClock(), failing(&calls), nil, nil)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.ErrorIs(t, err, errBoom)
}

func TestRetryOnRetry(t *testing.T) {
	type call struct {
		attempt int
		err     error
		wait    time.Duration
	}
	var got []call
	clk := newFakeClock()
	errs := []error{errors.New("one"), errors.New("two"), errors.New("three"), errors.New("four")}
	err := FibonacciRetry(time.Second, 4).retry(context.Background(), clk, func(attempt int) error {
		return errs[attempt-1]
	}, nil, func(attempt int, err error, wait time.Duration) {
		got = append(got, call{attempt, err, wait})
	})
	assert.Equal(t, []call{
		{1, errs[0], time.Second},
		{2, errs[1], 2 * time.Second},
		{3, errs[2], 3 * time.Second},
	}, got)
	assert.Equal(t, []time.Duration{time.Second, 2 * time.Second, 3 * time.Second}, clk.Waits())
	assert.ErrorIs(t, err, errs[3])
	assert.NotErrorIs(t, err, errs[2])
}

func TestRetryNilClock(t *testing.T) {
	calls := 0
	err := NoRetry().retry(context.Background(), nil, failing(&calls), nil, nil)
	assert.Equal(t, 1, calls)
	assert.ErrorIs(t, err, errBoom)
}

func TestRetryConcurrentUse(t *testing.T) {
	p := ExponentialRetry(time.Millisecond, 6)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			clk := newFakeClock()
			calls := 0
			err := p.retry(context.Background(), clk, failing(&calls), nil, nil)
			assert.Equal(t, 6, calls)
			assert.ErrorIs(t, err, errBoom)
		}()
	}
	wg.Wait()
}

func TestRetryPolicyValidate(t *testing.T) {
	for _, p := range []RetryPolicy{
		{}, NoRetry(), FibonacciRetry(time.Second, 3), ExponentialRetry(time.Second, -1), ConstantRetry(time.Minute, 2),
		{Strategy: Exponential, Jitter: 1}, {BaseDelay: time.Second, MaxDelay: time.Second},
	} {
		assert.NoError(t, p.Validate(), "%+v", p)
	}

	for _, tc := range []struct {
		p    RetryPolicy
		want string
	}{
		{RetryPolicy{Strategy: 7}, "unknown strategy Strategy(7)"},
		{RetryPolicy{Strategy: -1}, "unknown strategy Strategy(-1)"},
		{RetryPolicy{BaseDelay: -time.Second}, "negative BaseDelay -1s"},
		{RetryPolicy{MaxDelay: -time.Second}, "negative MaxDelay -1s"},
		{RetryPolicy{BaseDelay: time.Minute, MaxDelay: time.Second}, "MaxDelay 1s is shorter than BaseDelay 1m0s"},
		{RetryPolicy{MaxElapsed: -time.Second}, "negative MaxElapsed -1s"},
		{RetryPolicy{Jitter: 1.5}, "Jitter 1.5 is outside 0..1"},
		{RetryPolicy{Jitter: -0.1}, "Jitter -0.1 is outside 0..1"},
		{RetryPolicy{Jitter: math.NaN()}, "Jitter NaN is outside 0..1"},
	} {
		err := tc.p.Validate()
		require.Error(t, err, "%+v", tc.p)
		assert.Equal(t, "kavari: retry policy: "+tc.want, err.Error())
	}

	err := RetryPolicy{BaseDelay: -1, MaxElapsed: -1, Jitter: 2}.Validate()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "BaseDelay")
	assert.Contains(t, err.Error(), "MaxElapsed")
	assert.Contains(t, err.Error(), "Jitter")
}

func TestRetryPolicyZeroValueDefaults(t *testing.T) {
	var p RetryPolicy
	assert.Equal(t, Fibonacci, p.Strategy)
	assert.Equal(t, ms(100, 200, 300, 500, 800, 1300, 2100, 3400, 5500), p.Delays(20), "10 attempts, so 9 waits")

	clk := newFakeClock()
	calls := 0
	err := p.retry(context.Background(), clk, failing(&calls), nil, nil)
	assert.Equal(t, 10, calls)
	assert.Equal(t, p.Delays(9), clk.Waits())
	assert.ErrorIs(t, err, errBoom)

	long := FibonacciRetry(time.Second, -1).Delays(10)
	want := []time.Duration{1, 2, 3, 5, 8, 13, 21, 30, 30, 30}
	for i := range want {
		want[i] *= time.Second
	}
	assert.Equal(t, want, long, "capped at the default MaxDelay of 30s")

	// Invalid fields fall back to defaults rather than misbehave.
	assert.Equal(t, ms(100, 200), RetryPolicy{Strategy: 9, BaseDelay: -1, MaxAttempts: 3}.Delays(5))
}

func TestRetryErrorMessages(t *testing.T) {
	e := &RetryError{Attempts: 3, Elapsed: 1234567 * time.Microsecond, Err: errBoom}
	assert.Equal(t, "kavari: gave up after 3 attempts in 1.235s: boom", e.Error())
	e = &RetryError{Attempts: 2, Elapsed: time.Second, Err: errBoom, Cause: context.DeadlineExceeded}
	assert.Equal(t, "kavari: stopped retrying after 2 attempts: context deadline exceeded: boom", e.Error())
	assert.ErrorIs(t, e, context.DeadlineExceeded)
	assert.ErrorIs(t, e, errBoom)
	assert.Equal(t, "Exponential", Exponential.String())
}

func TestSystemClock(t *testing.T) {
	tm := SystemClock.NewTimer(0)
	<-tm.C()
	assert.False(t, tm.Stop())
	assert.WithinDuration(t, time.Now(), SystemClock.Now(), time.Minute)
}

// A policy that sets some fields keeps the default attempt count of the
// place it is used: setting only BaseDelay on ConsumerRetry must not turn
// its 5 attempts into 10.
func TestConsumerRetryPartialPolicyKeepsItsAttempts(t *testing.T) {
	for _, p := range []RetryPolicy{{}, {BaseDelay: 200 * time.Millisecond}, {Strategy: Exponential}, {MaxElapsed: time.Minute}} {
		c := Config{Brokers: []string{"b:9092"}, ConsumerRetry: p}
		c.setDefaults()
		assert.Equal(t, 5, c.ConsumerRetry.withDefaults().MaxAttempts, "ConsumerRetry %+v", p)
		c = Config{Brokers: []string{"b:9092"}, PublishRetry: p}
		c.setDefaults()
		assert.Equal(t, 10, c.PublishRetry.withDefaults().MaxAttempts, "PublishRetry %+v", p)
	}
	c := Config{Brokers: []string{"b:9092"}, ConsumerRetry: RetryPolicy{BaseDelay: time.Second, MaxAttempts: 7}}
	c.setDefaults()
	assert.Equal(t, 7, c.ConsumerRetry.MaxAttempts)
	assert.Equal(t, time.Second, c.ConsumerRetry.BaseDelay)
}
