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
	// Fibonacci waits 1, 2, 3, 5, 8, 13, … × BaseDelay, each wait capped at
	// MaxDelay: the Python kavari's policy, and the default.
	Fibonacci Strategy = iota
	// Exponential waits BaseDelay × 2^n before the (n+2)th attempt,
	// randomised by ±Jitter. With d(n) = min(BaseDelay × 2^n, MaxDelay), the
	// wait is min(MaxDelay, d(n) × (1 + Jitter × r)), r uniform in [-1, 1]:
	// so between d(n) × (1 − Jitter) and d(n) × (1 + Jitter), never more than
	// MaxDelay. The randomness keeps many clients that failed together from
	// retrying in lockstep.
	Exponential
	// Constant waits BaseDelay every time.
	Constant
)

// String returns the strategy's name, e.g. "Fibonacci".
func (s Strategy) String() string {
	switch s {
	case Fibonacci:
		return "Fibonacci"
	case Exponential:
		return "Exponential"
	case Constant:
		return "Constant"
	}
	return fmt.Sprintf("Strategy(%d)", int(s))
}

// Defaults applied to the zero fields of a RetryPolicy.
const (
	defaultBaseDelay   = 100 * time.Millisecond
	defaultMaxDelay    = 30 * time.Second
	defaultMaxAttempts = 10
	// defaultConsumerAttempts is Config.ConsumerRetry's MaxAttempts when 0.
	defaultConsumerAttempts = 5
	defaultJitter           = 0.5
)

// RetryPolicy says how often and how long an operation is retried.
//
// The zero value is ready to use and means: Fibonacci, BaseDelay 100 ms,
// MaxDelay 30 s, MaxAttempts 10, no MaxElapsed. Each zero field takes its
// default independently, whatever the other fields say: a policy that sets
// only BaseDelay, or only MaxElapsed, still makes at most MaxAttempts'
// default number of attempts (10; 5 for Config.ConsumerRetry). To bound
// retries by time alone, set MaxAttempts to -1. A RetryPolicy is a plain comparable value: once
// set, it is never modified by kavari and is safe for concurrent use.
type RetryPolicy struct {
	// Strategy selects how waits grow; the zero value is Fibonacci.
	Strategy Strategy
	// BaseDelay is the unit of the waits: the first wait, for every
	// strategy. 0 means 100 ms.
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
	// Jitter is the randomisation factor of Exponential, between 0 and 1;
	// 0 means 0.5. Other strategies ignore it.
	Jitter float64
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

// Validate reports a misconfigured policy: an unknown Strategy, a negative
// BaseDelay, MaxDelay or MaxElapsed, a MaxDelay shorter than BaseDelay, or
// a Jitter outside 0..1. It joins one error per problem; the zero value is
// valid.
func (p RetryPolicy) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("kavari: retry policy: "+format, args...))
	}
	if p.Strategy < Fibonacci || p.Strategy > Constant {
		bad("unknown strategy %v", p.Strategy)
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
	if !(p.Jitter >= 0 && p.Jitter <= 1) { // NaN fails too
		bad("Jitter %v is outside 0..1", p.Jitter)
	}
	return errors.Join(errs...)
}

// Delays returns the first n waits the policy would use, fewer when
// MaxAttempts allows fewer retries (none for NoRetry). For Exponential they
// are the waits before jitter, BaseDelay × 2^n capped at MaxDelay. MaxElapsed
// is not applied: it depends on how long the attempts take.
func (p RetryPolicy) Delays(n int) []time.Duration {
	p = p.withDefaults()
	if p.MaxAttempts > 0 {
		n = min(n, p.MaxAttempts-1)
	}
	if n <= 0 {
		return nil
	}
	b := p.backOff(SystemClock, 0)
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = p.nextWait(b)
	}
	return out
}

// withDefaults returns p with its zero fields set to their defaults. Fields
// Validate rejects are replaced by defaults too, so a policy never makes
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
	if p.MaxElapsed < 0 {
		p.MaxElapsed = 0
	}
	if !(p.Jitter > 0 && p.Jitter <= 1) {
		p.Jitter = defaultJitter
	}
	return p
}

// backOff returns a fresh wait sequence for p, which must have its defaults
// set. jitter is Exponential's randomisation factor.
func (p RetryPolicy) backOff(clk Clock, jitter float64) backoff.BackOff {
	var b backoff.BackOff
	switch p.Strategy {
	case Exponential:
		b = &backoff.ExponentialBackOff{
			InitialInterval:     p.BaseDelay,
			RandomizationFactor: jitter,
			Multiplier:          2,
			MaxInterval:         p.MaxDelay,
			MaxElapsedTime:      0, // retry enforces MaxElapsed itself
			Stop:                backoff.Stop,
			Clock:               clk,
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

// retry calls op(attempt), attempt counting from 1, until it returns nil,
// or an error for which retriable is false (returned at once, exactly as op
// returned it), or MaxAttempts or MaxElapsed are exhausted, or ctx ends. A
// nil retriable retries every error. op is always called at least once,
// whatever the state of ctx; op is expected to honour ctx itself.
//
// onRetry, if non-nil, is called before each wait with the attempt that
// failed, its error and the wait. Waits and elapsed time use clk (nil
// means SystemClock).
//
// When attempts or time run out it returns a *RetryError with a nil Cause;
// when ctx ends first, a *RetryError whose Err is the last error of op and
// whose Cause is context.Cause(ctx).
func (p RetryPolicy) retry(ctx context.Context, clk Clock, op func(attempt int) error, retriable func(error) bool, onRetry func(attempt int, err error, wait time.Duration)) error {
	if clk == nil {
		clk = SystemClock
	}
	return p.retrySince(ctx, clk, clk.Now(), op, retriable, onRetry)
}

// retrySince is retry for a caller that made the first attempt itself
// before calling it (a fast path): start is when that attempt began, so
// that Elapsed and MaxElapsed count it. op(1) is still called and is
// expected to return that attempt's error.
func (p RetryPolicy) retrySince(ctx context.Context, clk Clock, start time.Time, op func(attempt int) error, retriable func(error) bool, onRetry func(attempt int, err error, wait time.Duration)) error {
	p = p.withDefaults()
	if clk == nil {
		clk = SystemClock
	}
	var b backoff.BackOff // created on the first failure: success needs none
	for attempt := 1; ; attempt++ {
		err := op(attempt)
		if err == nil {
			return nil
		}
		if retriable != nil && !retriable(err) {
			return err
		}
		elapsed := clk.Now().Sub(start)
		giveUp := &RetryError{Attempts: attempt, Elapsed: elapsed, Err: err}
		if p.MaxAttempts > 0 && attempt >= p.MaxAttempts {
			return giveUp
		}
		if ctx.Err() != nil {
			return giveUp.stopped(ctx)
		}
		if b == nil {
			b = p.backOff(clk, p.Jitter)
		}
		wait := p.nextWait(b)
		if p.MaxElapsed > 0 && wait > p.MaxElapsed-elapsed { // elapsed+wait, without overflow
			return giveUp
		}
		if onRetry != nil {
			onRetry(attempt, err, wait)
		}
		t := clk.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			giveUp.Elapsed = clk.Now().Sub(start)
			return giveUp.stopped(ctx)
		case <-t.C():
		}
		if ctx.Err() != nil { // both were ready and select chose the timer
			giveUp.Elapsed = clk.Now().Sub(start)
			return giveUp.stopped(ctx)
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

// stopped records that ctx ended and returns e.
func (e *RetryError) stopped(ctx context.Context) *RetryError {
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

// Clock is the time source retries use: real time by default, a fake one
// in tests (Config.Clock). Its Now also satisfies backoff's clock, which
// never appears in kavari's API.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// NewTimer returns a timer that sends on its channel once d has
	// passed.
	NewTimer(d time.Duration) Timer
}

// Timer is a one-shot timer made by a Clock, like *time.Timer.
type Timer interface {
	// C returns the channel the time is sent on when the timer fires.
	C() <-chan time.Time
	// Stop prevents the timer from firing; it reports whether it stopped
	// the timer before it fired.
	Stop() bool
}

// SystemClock is the real clock, on package time. It is safe for
// concurrent use.
var SystemClock Clock = systemClock{}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) NewTimer(d time.Duration) Timer { return systemTimer{time.NewTimer(d)} }

type systemTimer struct{ t *time.Timer }

func (t systemTimer) C() <-chan time.Time { return t.t.C }

func (t systemTimer) Stop() bool { return t.t.Stop() }
