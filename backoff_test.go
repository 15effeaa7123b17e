package kavari

import (
	"context"
	"errors"
	"math"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The retry tests run in synctest bubbles: time.Now and timers are fake
// there and move only when every goroutine of the bubble is blocked, so a
// whole retry sequence runs at once and every wait is exact.

var errBoom = errors.New("boom")

// attempts records when each attempt of an operation started.
type attempts struct {
	mu sync.Mutex
	at []time.Time
}

// failing is an op that records its call and fails with errBoom.
func (a *attempts) failing(int) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.at = append(a.at, time.Now())
	return errBoom
}

func (a *attempts) calls() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.at)
}

// waits returns the time between consecutive attempts: in a bubble, where
// attempts take no time unless they sleep, the waits retry made.
func (a *attempts) waits() []time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []time.Duration
	for i := 1; i < len(a.at); i++ {
		out = append(out, a.at[i].Sub(a.at[i-1]))
	}
	return out
}

func ms(ds ...int) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = time.Duration(d) * time.Millisecond
	}
	return out
}

func TestRetryFibonacciWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := FibonacciRetry(10*time.Millisecond, 8)
		p.MaxDelay = 60 * time.Millisecond
		var a attempts
		start := time.Now()

		err := p.retry(context.Background(), a.failing, nil, nil)

		assert.Equal(t, 8, a.calls())
		assert.Equal(t, ms(10, 20, 30, 50, 60, 60, 60), a.waits())
		var rerr *RetryError
		require.ErrorAs(t, err, &rerr)
		assert.Equal(t, 8, rerr.Attempts)
		assert.Equal(t, 290*time.Millisecond, rerr.Elapsed)
		assert.Equal(t, rerr.Elapsed, time.Since(start), "no wait after the last attempt")
		assert.Same(t, errBoom, rerr.Err)
		assert.NoError(t, rerr.Cause)
		assert.ErrorIs(t, err, errBoom)
		assert.Equal(t, "kavari: gave up after 8 attempts in 290ms: boom", err.Error())
	})
	assert.Equal(t, ms(10, 20, 30, 50, 80, 130, 210, 340), FibonacciRetry(10*time.Millisecond, 0).Delays(8))
}

func TestRetryFibonacciSaturates(t *testing.T) {
	p := RetryPolicy{BaseDelay: time.Duration(math.MaxInt64 / 3), MaxDelay: math.MaxInt64, MaxAttempts: -1}
	for _, d := range p.Delays(50) {
		assert.Positive(t, d)
	}
	// Exponential with jitter on a huge cap: the jittered wait overflows
	// and is read as the cap, never as a negative wait.
	p = RetryPolicy{Strategy: Exponential, BaseDelay: time.Hour, MaxDelay: math.MaxInt64, MaxAttempts: -1}.withDefaults()
	b := p.backOff(jitter)
	for range 80 {
		assert.GreaterOrEqual(t, p.nextWait(b), time.Duration(0))
	}
}

func TestRetryExponentialWithinJitter(t *testing.T) {
	p := ExponentialRetry(100*time.Millisecond, 10)
	p.MaxDelay = 5 * time.Second
	base := p.Delays(9)
	require.Equal(t, ms(100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000), base)
	synctest.Test(t, func(t *testing.T) {
		for range 50 {
			var a attempts
			_ = p.retry(context.Background(), a.failing, nil, nil)
			require.Equal(t, 10, a.calls())
			waits := a.waits()
			require.Len(t, waits, 9)
			for i, w := range waits {
				lo := time.Duration(float64(base[i]) * 0.5)
				hi := min(p.MaxDelay, time.Duration(float64(base[i])*1.5)+1)
				assert.GreaterOrEqual(t, w, lo, "wait %d", i)
				assert.LessOrEqual(t, w, hi, "wait %d", i)
			}
		}
	})
}

func TestRetryConstant(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var a attempts
		err := ConstantRetry(250*time.Millisecond, 4).retry(context.Background(), a.failing, nil, nil)
		assert.Equal(t, 4, a.calls())
		assert.Equal(t, ms(250, 250, 250), a.waits())
		assert.ErrorIs(t, err, errBoom)
	})

	// A delay beyond the default cap raises the cap rather than being cut.
	assert.Equal(t, []time.Duration{time.Minute, time.Minute}, ConstantRetry(time.Minute, 3).Delays(5))
	// An explicit cap applies (and validation flags it).
	p := ConstantRetry(time.Minute, 3)
	p.MaxDelay = time.Second
	assert.Equal(t, []time.Duration{time.Second, time.Second}, p.Delays(5))
	assert.Error(t, p.validate())
}

func TestRetryMaxAttempts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		for _, tc := range []struct{ maxAttempts, calls int }{{1, 1}, {2, 2}, {5, 5}, {0, 10}} {
			var a attempts
			err := FibonacciRetry(time.Millisecond, tc.maxAttempts).retry(context.Background(), a.failing, nil, nil)
			assert.Equal(t, tc.calls, a.calls(), "MaxAttempts %d", tc.maxAttempts)
			var rerr *RetryError
			require.ErrorAs(t, err, &rerr)
			assert.Equal(t, tc.calls, rerr.Attempts)
		}

		var a attempts
		start := time.Now()
		err := NoRetry().retry(context.Background(), a.failing, nil, nil)
		assert.Equal(t, 1, a.calls())
		assert.Zero(t, time.Since(start), "no wait")
		assert.Equal(t, "kavari: gave up after 1 attempt in 0s: boom", err.Error())
	})
	assert.Nil(t, NoRetry().Delays(3))
}

func TestRetrySucceeds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var a attempts
		err := FibonacciRetry(time.Second, 5).retry(context.Background(), func(attempt int) error {
			_ = a.failing(attempt)
			assert.Equal(t, a.calls(), attempt)
			if attempt < 3 {
				return errBoom
			}
			return nil
		}, nil, nil)
		assert.NoError(t, err)
		assert.Equal(t, 3, a.calls())
		assert.Equal(t, []time.Duration{time.Second, 2 * time.Second}, a.waits())
	})
}

func TestRetryUnlimitedStoppedByMaxElapsed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := ConstantRetry(time.Second, -1)
		p.MaxElapsed = 5 * time.Second
		var a attempts
		err := p.retry(context.Background(), a.failing, nil, nil)
		assert.Equal(t, 6, a.calls(), "attempts at 0s, 1s, … 5s")
		var rerr *RetryError
		require.ErrorAs(t, err, &rerr)
		assert.Equal(t, 5*time.Second, rerr.Elapsed)
		assert.NoError(t, rerr.Cause)

		// Attempts take time too; no wait may end past MaxElapsed.
		p.MaxElapsed = 5500 * time.Millisecond
		calls := 0
		err = p.retry(context.Background(), func(int) error {
			calls++
			time.Sleep(time.Second)
			return errBoom
		}, nil, nil)
		assert.Equal(t, 3, calls, "attempts at 0s, 2s, 4s; the next wait would end at 6s")
		require.ErrorAs(t, err, &rerr)
		assert.Equal(t, 5*time.Second, rerr.Elapsed)
	})
}

// retrySince counts an attempt made before it was called: Elapsed and
// MaxElapsed start with that attempt.
func TestRetrySinceCountsTheFirstAttempt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := RetryPolicy{Strategy: Constant, BaseDelay: time.Second, MaxAttempts: -1, MaxElapsed: 11 * time.Second}
		start := time.Now()
		time.Sleep(5 * time.Second) // the caller's own first attempt
		calls := 0
		err := p.retrySince(context.Background(), start, func(attempt int) error {
			if calls++; attempt > 1 {
				time.Sleep(5 * time.Second)
			}
			return errBoom
		}, nil, nil)
		var rerr *RetryError
		require.ErrorAs(t, err, &rerr)
		assert.Equal(t, 2, calls, "after 5 s + 1 s + 5 s no wait fits in 11 s")
		assert.Equal(t, 11*time.Second, rerr.Elapsed)
	})
}

func TestRetryNonRetriable(t *testing.T) {
	permanent := errors.New("permanent")
	calls := 0
	err := FibonacciRetry(time.Hour, -1).retry(context.Background(), func(int) error {
		calls++
		return permanent
	}, func(err error) bool { return !errors.Is(err, permanent) }, func(int, error, time.Duration) {
		t.Error("onRetry called for a non-retriable error")
	})
	assert.Same(t, permanent, err, "returned exactly as op returned it")
	assert.Equal(t, 1, calls)
}

func TestRetryContextCancelledDuringWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var a attempts
		var waiting time.Duration
		done := make(chan error, 1)
		start := time.Now()
		go func() {
			done <- FibonacciRetry(time.Hour, 3).retry(ctx, a.failing, nil, func(_ int, _ error, wait time.Duration) { waiting = wait })
		}()
		synctest.Wait() // retry is in its first wait
		assert.Equal(t, time.Hour, waiting)
		cancel()
		err := <-done
		assert.Zero(t, time.Since(start), "returned when cancelled, not after the wait")

		assert.Equal(t, 1, a.calls())
		assert.ErrorIs(t, err, context.Canceled)
		assert.ErrorIs(t, err, errBoom)
		var rerr *RetryError
		require.ErrorAs(t, err, &rerr)
		assert.Equal(t, 1, rerr.Attempts)
		assert.Same(t, errBoom, rerr.Err)
		assert.Equal(t, context.Canceled, rerr.Cause)
		assert.Equal(t, "kavari: stopped retrying after 1 attempt: context canceled: boom", err.Error())
	})
}

// A context deadline in the middle of a wait ends it there.
func TestRetryDeadlineDuringWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		var a attempts
		start := time.Now()
		err := ConstantRetry(time.Minute, 5).retry(ctx, a.failing, nil, nil)
		assert.Equal(t, 2, a.calls(), "attempts at 0 and 60 s")
		assert.Equal(t, 90*time.Second, time.Since(start))
		var rerr *RetryError
		require.ErrorAs(t, err, &rerr)
		assert.Equal(t, 90*time.Second, rerr.Elapsed)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.ErrorIs(t, err, errBoom)
	})
}

func TestRetryContextCause(t *testing.T) {
	shutdown := errors.New("shutting down")
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(shutdown)
	var a attempts
	err := FibonacciRetry(time.Hour, 5).retry(ctx, a.failing, nil, nil)
	assert.Equal(t, 1, a.calls(), "op runs once even with a done context; no wait starts")
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
	var a attempts
	err := FibonacciRetry(time.Hour, 5).retry(ctx, a.failing, nil, nil)
	assert.Equal(t, 1, a.calls())
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.ErrorIs(t, err, errBoom)
}

func TestRetryOnRetry(t *testing.T) {
	type call struct {
		attempt int
		err     error
		wait    time.Duration
	}
	synctest.Test(t, func(t *testing.T) {
		var got []call
		var a attempts
		errs := []error{errors.New("one"), errors.New("two"), errors.New("three"), errors.New("four")}
		err := FibonacciRetry(time.Second, 4).retry(context.Background(), func(attempt int) error {
			_ = a.failing(attempt)
			return errs[attempt-1]
		}, nil, func(attempt int, err error, wait time.Duration) {
			got = append(got, call{attempt, err, wait})
		})
		assert.Equal(t, []call{
			{1, errs[0], time.Second},
			{2, errs[1], 2 * time.Second},
			{3, errs[2], 3 * time.Second},
		}, got)
		assert.Equal(t, []time.Duration{time.Second, 2 * time.Second, 3 * time.Second}, a.waits(), "the waits announced are the waits made")
		assert.ErrorIs(t, err, errs[3])
		assert.NotErrorIs(t, err, errs[2])
	})
}

func TestRetryConcurrentUse(t *testing.T) {
	p := ExponentialRetry(time.Millisecond, 6)
	synctest.Test(t, func(t *testing.T) {
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				var a attempts
				err := p.retry(context.Background(), a.failing, nil, nil)
				assert.Equal(t, 6, a.calls())
				assert.ErrorIs(t, err, errBoom)
			})
		}
		wg.Wait()
	})
}

func TestRetryPolicyValidate(t *testing.T) {
	for _, p := range []RetryPolicy{
		{}, NoRetry(), FibonacciRetry(time.Second, 3), ExponentialRetry(time.Second, -1), ConstantRetry(time.Minute, 2),
		{Strategy: Exponential, MaxElapsed: time.Minute}, {BaseDelay: time.Second, MaxDelay: time.Second},
	} {
		assert.NoError(t, p.validate(), "%+v", p)
	}

	for _, tc := range []struct {
		p    RetryPolicy
		want string
	}{
		{RetryPolicy{Strategy: 7}, "unknown strategy 7"},
		{RetryPolicy{Strategy: -1}, "unknown strategy -1"},
		{RetryPolicy{BaseDelay: -time.Second}, "negative BaseDelay -1s"},
		{RetryPolicy{MaxDelay: -time.Second}, "negative MaxDelay -1s"},
		{RetryPolicy{BaseDelay: time.Minute, MaxDelay: time.Second}, "MaxDelay 1s is shorter than BaseDelay 1m0s"},
		{RetryPolicy{MaxElapsed: -time.Second}, "negative MaxElapsed -1s"},
	} {
		err := tc.p.validate()
		require.Error(t, err, "%+v", tc.p)
		assert.Equal(t, "kavari: retry policy: "+tc.want, err.Error())
	}

	err := RetryPolicy{Strategy: 3, BaseDelay: -1, MaxElapsed: -1}.validate()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "BaseDelay")
	assert.Contains(t, err.Error(), "MaxElapsed")
	assert.Contains(t, err.Error(), "strategy 3")
}

func TestRetryPolicyZeroValueDefaults(t *testing.T) {
	var p RetryPolicy
	assert.Equal(t, Fibonacci, p.Strategy)
	assert.Equal(t, ms(100, 200, 300, 500, 800, 1300, 2100, 3400, 5500), p.Delays(20), "10 attempts, so 9 waits")

	synctest.Test(t, func(t *testing.T) {
		var a attempts
		err := p.retry(context.Background(), a.failing, nil, nil)
		assert.Equal(t, 10, a.calls())
		assert.Equal(t, p.Delays(9), a.waits())
		assert.ErrorIs(t, err, errBoom)
	})

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
}

// A policy that sets some fields keeps the default attempt count of the
// place it is used: setting only BaseDelay on Consume.Retry must not turn
// its 5 attempts into 10.
func TestConsumerRetryPartialPolicyKeepsItsAttempts(t *testing.T) {
	for _, p := range []RetryPolicy{{}, {BaseDelay: 200 * time.Millisecond}, {Strategy: Exponential}, {MaxElapsed: time.Minute}} {
		c := Config{Brokers: []string{"b:9092"}, Consume: ConsumeConfig{Retry: p}}
		c.setDefaults()
		assert.Equal(t, 5, c.Consume.Retry.withDefaults().MaxAttempts, "Consume.Retry %+v", p)
		c = Config{Brokers: []string{"b:9092"}, Publish: PublishConfig{Retry: p}}
		c.setDefaults()
		assert.Equal(t, 10, c.Publish.Retry.withDefaults().MaxAttempts, "Publish.Retry %+v", p)
	}
	c := Config{Brokers: []string{"b:9092"}, Consume: ConsumeConfig{Retry: RetryPolicy{BaseDelay: time.Second, MaxAttempts: 7}}}
	c.setDefaults()
	assert.Equal(t, 7, c.Consume.Retry.MaxAttempts)
	assert.Equal(t, time.Second, c.Consume.Retry.BaseDelay)
}
