package kavari

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Strategy selects how the waits between attempts grow.
type Strategy int

const (
	// Fibonacci waits 1, 2, 3, 5, 8, 13, … × BaseDelay: the Python kavari's
	// policy, and the default.
	Fibonacci Strategy = iota
	// Exponential waits BaseDelay × 2^n before the (n+2)th attempt, each
	// wait randomised by ±50% (never beyond MaxDelay), so that many clients
	// that failed together do not retry in lockstep.
	Exponential
	// Constant waits BaseDelay every time.
	Constant
)

// Defaults applied to the zero fields of a RetryPolicy.
const (
	defaultBaseDelay   = 100 * time.Millisecond
	defaultMaxDelay    = 30 * time.Second
	defaultMaxAttempts = 10
	// defaultConsumerAttempts is Config.Consume.Retry's MaxAttempts when 0.
	defaultConsumerAttempts = 5
	// jitter is Exponential's randomisation factor: ±50%.
	jitter = 0.5
)

// RetryPolicy says how often and how long an operation is retried: the
// waits grow by Strategy from BaseDelay, each at most MaxDelay, for at most
// MaxAttempts attempts and MaxElapsed in all.
//
// The zero value means Fibonacci, BaseDelay 100 ms, MaxDelay 30 s,
// MaxAttempts 10, no MaxElapsed. Each zero field takes its default on its
// own: a policy that sets only BaseDelay or MaxElapsed still makes at most
// the default number of attempts (10; 5 for Config.Consume.Retry); set
// MaxAttempts to -1 to bound retries by time alone. New reports invalid
// fields. A RetryPolicy is a comparable value, never modified by kavari.
type RetryPolicy struct {
	// Strategy selects how waits grow; the zero value is Fibonacci.
	Strategy Strategy
	// BaseDelay is the first wait, for every strategy. 0 means 100 ms.
	BaseDelay time.Duration
	// MaxDelay caps one wait. 0 means 30 s, or BaseDelay when that is
	// longer (so ConstantRetry(time.Minute, n) waits a minute).
	MaxDelay time.Duration
	// MaxAttempts counts attempts in total, the first included: 1 means no
	// retry. 0 means 10; a negative value means unlimited, until
	// MaxElapsed runs out or the context ends.
	MaxAttempts int
	// MaxElapsed bounds the time spent, measured from the start of the
	// first attempt: no wait is started that would end past it. 0 means
	// no limit.
	MaxElapsed time.Duration
}

// FibonacciRetry returns a Fibonacci policy: waits of 1, 2, 3, 5, 8, … ×
// base, capped at 30 s, for at most maxAttempts attempts in total (0 means
// 10, negative unlimited).
func FibonacciRetry(base time.Duration, maxAttempts int) RetryPolicy {
	return RetryPolicy{Strategy: Fibonacci, BaseDelay: base, MaxAttempts: maxAttempts}
}

// ExponentialRetry returns an Exponential policy: waits of base × 2^n with
// ±50% jitter, capped at 30 s, for at most maxAttempts attempts in total (0
// means 10, negative unlimited).
func ExponentialRetry(base time.Duration, maxAttempts int) RetryPolicy {
	return RetryPolicy{Strategy: Exponential, BaseDelay: base, MaxAttempts: maxAttempts}
}

// ConstantRetry returns a Constant policy: a wait of delay between
// attempts, for at most maxAttempts attempts in total (0 means 10, negative
// unlimited).
func ConstantRetry(delay time.Duration, maxAttempts int) RetryPolicy {
	return RetryPolicy{Strategy: Constant, BaseDelay: delay, MaxAttempts: maxAttempts}
}

// NoRetry returns a policy of exactly one attempt.
func NoRetry() RetryPolicy {
	return RetryPolicy{MaxAttempts: 1}
}

// Delays returns the first n waits the policy would use, fewer when
// MaxAttempts allows fewer retries (none for NoRetry). Exponential's are
// shown before jitter. MaxElapsed is not applied: it depends on how long
// the attempts take.
func (p RetryPolicy) Delays(n int) []time.Duration {
	p = p.withDefaults()
	if p.MaxAttempts > 0 {
		n = min(n, p.MaxAttempts-1)
	}
	if n <= 0 {
		return nil
	}
	b := p.backOff(0)
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = p.nextWait(b)
	}
	return out
}

// validate reports a misconfigured policy: an unknown Strategy, a negative
// BaseDelay, MaxDelay or MaxElapsed, or a MaxDelay shorter than BaseDelay.
// It joins one error per problem; the zero value is valid.
func (p RetryPolicy) validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("kavari: retry policy: "+format, args...))
	}
	if p.Strategy < Fibonacci || p.Strategy > Constant {
		bad("unknown strategy %d", p.Strategy)
	}
	if p.BaseDelay < 0 {
		bad("negative BaseDelay %v", p.BaseDelay)
	}
	if p.MaxDelay < 0 {
		bad("negative MaxDelay %v", p.MaxDelay)
	}
	if p.MaxDelay > 0 && p.BaseDelay > p.MaxDelay {
		bad("MaxDelay %v is shorter than BaseDelay %v", p.MaxDelay, p.BaseDelay)
	}
	if p.MaxElapsed < 0 {
		bad("negative MaxElapsed %v", p.MaxElapsed)
	}
	return errors.Join(errs...)
}

// withDefaults returns p with its zero fields set to their defaults. Fields
// validate rejects are replaced by defaults too, so a policy never makes
// retry misbehave; Config validation is where they are reported.
func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.Strategy < Fibonacci || p.Strategy > Constant {
		p.Strategy = Fibonacci
	}
	if p.BaseDelay <= 0 {
		p.BaseDelay = defaultBaseDelay
	}
	if p.MaxDelay <= 0 {
		p.MaxDelay = max(defaultMaxDelay, p.BaseDelay)
	}
	if p.MaxAttempts == 0 {
		p.MaxAttempts = defaultMaxAttempts
	}
	p.MaxElapsed = max(p.MaxElapsed, 0)
	return p
}

// backOff returns a fresh wait sequence for p, which must have its defaults
// set; random is Exponential's randomisation factor.
func (p RetryPolicy) backOff(random float64) backoff.BackOff {
	var b backoff.BackOff
	switch p.Strategy {
	case Exponential:
		b = &backoff.ExponentialBackOff{
			InitialInterval:     p.BaseDelay,
			RandomizationFactor: random,
			Multiplier:          2,
			MaxInterval:         p.MaxDelay,
			MaxElapsedTime:      0, // retry enforces MaxElapsed itself
			Stop:                backoff.Stop,
			Clock:               backoff.SystemClock,
		}
	case Constant:
		b = &backoff.ConstantBackOff{Interval: p.BaseDelay}
	default:
		b = &fibonacciBackOff{base: p.BaseDelay, max: p.MaxDelay}
	}
	b.Reset()
	return b
}

// nextWait returns b's next wait capped at p.MaxDelay. A negative wait can
// only come from overflow of a huge MaxDelay and is read as the cap.
func (p RetryPolicy) nextWait(b backoff.BackOff) time.Duration {
	d := b.NextBackOff()
	if d < 0 || d > p.MaxDelay {
		d = p.MaxDelay
	}
	return d
}

// fibonacciBackOff is a backoff.BackOff waiting 1, 2, 3, 5, 8, … × base,
// capped at max. It is not safe for concurrent use; retry makes one per
// call.
type fibonacciBackOff struct {
	base, max time.Duration
	cur, next time.Duration
}

func (b *fibonacciBackOff) Reset() {
	b.cur, b.next = b.base, addSat(b.base, b.base)
}

func (b *fibonacciBackOff) NextBackOff() time.Duration {
	if b.cur >= b.max {
		return b.max // saturated: stop adding, so nothing overflows
	}
	d := b.cur
	b.cur, b.next = b.next, addSat(b.cur, b.next)
	return d
}

// addSat adds two non-negative durations, saturating instead of overflowing.
func addSat(a, b time.Duration) time.Duration {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// retry is retrySince from now: op(1) is the first attempt.
func (p RetryPolicy) retry(ctx context.Context, op func(attempt int) error, retriable func(error) bool, onRetry func(attempt int, err error, wait time.Duration)) error {
	return p.retrySince(ctx, time.Now(), op, retriable, onRetry)
}

// retrySince calls op(attempt), attempt counting from 1, until it returns
// nil, or an error for which retriable is false (returned at once, exactly
// as op returned it), or MaxAttempts or MaxElapsed are exhausted, or ctx
// ends. A nil retriable retries every error. op is always called at least
// once, whatever the state of ctx; op is expected to honour ctx itself.
// start is when the first attempt began: a caller that made it itself (a
// fast path) passes its start, so that Elapsed and MaxElapsed count it, and
// has op(1) return its error.
//
// onRetry, if non-nil, is called before each wait with the attempt that
// failed, its error and the wait.
//
// When attempts or time run out it returns a *RetryError with a nil Cause;
// when ctx ends first, a *RetryError whose Err is the last error of op and
// whose Cause is context.Cause(ctx).
func (p RetryPolicy) retrySince(ctx context.Context, start time.Time, op func(attempt int) error, retriable func(error) bool, onRetry func(attempt int, err error, wait time.Duration)) error {
	p = p.withDefaults()
	var b backoff.BackOff // created on the first failure: success needs none
	for attempt := 1; ; attempt++ {
		err := op(attempt)
		if err == nil {
			return nil
		}
		if retriable != nil && !retriable(err) {
			return err
		}
		giveUp := &RetryError{Attempts: attempt, Elapsed: time.Since(start), Err: err}
		if p.MaxAttempts > 0 && attempt >= p.MaxAttempts {
			return giveUp
		}
		if ctx.Err() != nil {
			return giveUp.stopped(ctx, start)
		}
		if b == nil {
			b = p.backOff(jitter)
		}
		wait := p.nextWait(b)
		if p.MaxElapsed > 0 && wait > p.MaxElapsed-giveUp.Elapsed { // elapsed+wait, without overflow
			return giveUp
		}
		if onRetry != nil {
			onRetry(attempt, err, wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return giveUp.stopped(ctx, start)
		case <-t.C:
		}
		if ctx.Err() != nil { // both were ready and select chose the timer
			return giveUp.stopped(ctx, start)
		}
	}
}

// RetryError is returned when retries stop without success: attempts or
// time ran out (Cause is nil), or the context ended (Cause is its cause).
// errors.Is and errors.As see through it to both Err and Cause; when the
// context ended, errors.Is(err, context.Canceled) or
// errors.Is(err, context.DeadlineExceeded) holds even if the context was
// given a cause of its own (context.WithCancelCause and friends).
type RetryError struct {
	// Attempts is how many times the operation was called.
	Attempts int
	// Elapsed is the time from the start of the first attempt until retry
	// gave up.
	Elapsed time.Duration
	// Err is the last attempt's error.
	Err error
	// Cause is nil when attempts or MaxElapsed ran out, and
	// context.Cause of the context when it ended.
	Cause error

	ctxErr error // the context's Err when it ended, for Unwrap
}

// stopped records that ctx ended, and when, and returns e.
func (e *RetryError) stopped(ctx context.Context, start time.Time) *RetryError {
	e.Elapsed = time.Since(start)
	e.Cause, e.ctxErr = context.Cause(ctx), ctx.Err()
	return e
}

// Error returns, e.g., "kavari: gave up after 3 attempts in 1.2s: <err>" or
// "kavari: stopped retrying after 2 attempts: context canceled: <err>".
func (e *RetryError) Error() string {
	attempts := "attempts"
	if e.Attempts == 1 {
		attempts = "attempt"
	}
	var s string
	if e.Cause == nil {
		s = fmt.Sprintf("kavari: gave up after %d %s in %v", e.Attempts, attempts, roundDuration(e.Elapsed))
	} else {
		s = fmt.Sprintf("kavari: stopped retrying after %d %s: %v", e.Attempts, attempts, e.Cause)
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns Err and Cause, those that are not nil, so that both
// errors.Is(err, context.DeadlineExceeded) and errors.Is(err, underlying)
// work. When the context's cause is not its Err, the Err is added too.
func (e *RetryError) Unwrap() []error {
	errs := make([]error, 0, 3)
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	if e.Cause != nil {
		errs = append(errs, e.Cause)
	}
	if e.ctxErr != nil && !errors.Is(e.Cause, e.ctxErr) {
		errs = append(errs, e.ctxErr)
	}
	return errs
}

// roundDuration keeps error messages readable: milliseconds from 1 ms up,
// microseconds below.
func roundDuration(d time.Duration) time.Duration {
	if d >= time.Millisecond {
		return d.Round(time.Millisecond)
	}
	return d.Round(time.Microsecond)
}
