package kavari

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/kavari-go/kavari/internal/transport"
)

// Hook is a value installed with Config.Hooks to observe kavari: it
// implements one or more of the HookXxx interfaces below, which kavari finds
// by type assertion when New runs. A value that implements none of them is
// an error. Hooks cost nothing when none is installed.
//
// Hooks run synchronously on kavari's goroutines (a publisher's, a
// handler's worker, the consumer's), so they must be fast, must not block
// and must not call Stop; a hook that panics crashes the process like any
// other goroutine. Several hooks of a kind run in the order installed. They
// must be safe for concurrent use: hooks of one kind run concurrently for
// different records.
type Hook any

// HookPublishBefore is called by Publish, PublishBatch, PublishAsync and
// TryPublishAsync for each message once it is encoded and valid, before it
// is sent; a message refused as invalid is not reported, nor are the valid
// messages of a PublishBatch refused because another one is invalid, so
// every call is followed by one HookPublishAfter call. The headers it returns are appended
// to the record's (nil adds none); kavari's own headers are not replaced.
// ctx is the one given to Publish, PublishBatch or PublishAsync.
type HookPublishBefore interface {
	OnPublishBefore(ctx context.Context, msg Msg) []Header
}

// HookPublishAfter is called once per message a publish wrote or gave up
// on, after its retries, for sync, batch and async publishes alike: with the
// record as acknowledged (its partition and offset set) and a nil err, or
// with the error the caller gets (partition and offset -1, as in Receipt).
// start is when the first attempt began.
// Messages refused before sending (invalid, too large) are not reported.
// For PublishAsync it runs on the async writer, before the callback, with
// the PublishAsync call's ctx; a message never sent is reported with the
// error its callback or TryPublishAsync gets (its ctx ended while queued or
// while PublishAsync waited for room, the queue was full, or Stop closed
// it), on the writer or the caller's goroutine.
type HookPublishAfter interface {
	OnPublishAfter(ctx context.Context, r *Record, start time.Time, err error)
}

// HookAssigned is called when the consumer was assigned partitions
// (topic → partitions), before their records are handled.
type HookAssigned interface {
	OnAssigned(partitions map[string][]int)
}

// HookRevoked is called after partitions were revoked (drained and
// committed) or, when lost is true, lost (abandoned without a commit).
type HookRevoked interface {
	OnRevoked(partitions map[string][]int, lost bool)
}

// HookCommitted is called after each offset commit: offsets are the next
// offsets committed, topic → partition → offset; took is how long the commit
// took; err is nil when it succeeded.
type HookCommitted interface {
	OnCommitted(offsets map[string]map[int]int64, took time.Duration, err error)
}

// HookRetryScheduled is called when a handler attempt failed and will be
// retried after wait. r.Attempt is the attempt that failed, r.Handler the
// handler that failed it.
type HookRetryScheduled interface {
	OnRetryScheduled(r *Record, wait time.Duration, err error)
}

// HookDeadLettered is called once a record's dead letter was written: kind
// says why, r.Handler names the handler that gave up (empty for poison
// records), err is the cause written into the dead letter.
type HookDeadLettered interface {
	OnDeadLettered(r *Record, kind ErrorKind, err error)
}

// HookFetched is called when the consumer received records of a partition:
// count records, the last of them at offset last, and the partition's high
// watermark (the offset after its last record) as the broker reported it,
// or -1 when unknown. Lag is highWatermark − the committed offset.
type HookFetched interface {
	OnFetched(topic string, partition int, count int, last, highWatermark int64)
}

// HookBatchAttempt is called after each call of a batch handler
// (BatchHandler): a batch's attempt, a half of a failed batch while kavari
// bisects it, or a record retried alone. It runs on the handler's worker,
// after the handler returned.
type HookBatchAttempt interface {
	OnBatchAttempt(a BatchAttempt)
}

// BatchAttempt describes one call of a batch handler, for
// HookBatchAttempt. Fields may be added.
type BatchAttempt struct {
	// Handler names the handler, as Record.Handler does.
	Handler   string
	Topic     string
	Partition int
	// Offsets are the offsets of the records handed over, in the batch's
	// order (offset order per key); len(Offsets) is the batch's size.
	Offsets []int64
	// Attempt is 1 for a batch's first call, 2 for its first retry, ...;
	// a half of a failed batch is called once, as attempt 1; a record
	// retried alone counts the failed batch as its attempt 1.
	Attempt int
	// Start is when the call began, Took how long it ran.
	Start time.Time
	Took  time.Duration
	// Err is what the handler returned (a panic as *PanicError); nil when
	// it succeeded.
	Err error
}

// hooks holds the installed hooks by capability; a nil *hooks means none.
type hooks struct {
	pubBefore []HookPublishBefore
	pubAfter  []HookPublishAfter
	assigned  []HookAssigned
	revoked   []HookRevoked
	committed []HookCommitted
	retry     []HookRetryScheduled
	dead      []HookDeadLettered
	fetched   []HookFetched
	batch     []HookBatchAttempt
	finished  []func(*transport.Record) // kavaritest's, through internal/testlink (testlink.go)
	// batchAttempt are kavaritest's too: called for each record of a batch
	// handler's attempt.
	batchAttempt []func(*transport.Record)
}

// newHooks sorts hs by capability; nil when hs is empty.
func newHooks(hs []Hook) (*hooks, error) {
	if len(hs) == 0 {
		return nil, nil
	}
	h := &hooks{}
	for i, x := range hs {
		any := false
		if v, ok := x.(HookPublishBefore); ok {
			h.pubBefore, any = append(h.pubBefore, v), true
		}
		if v, ok := x.(HookPublishAfter); ok {
			h.pubAfter, any = append(h.pubAfter, v), true
		}
		if v, ok := x.(HookAssigned); ok {
			h.assigned, any = append(h.assigned, v), true
		}
		if v, ok := x.(HookRevoked); ok {
			h.revoked, any = append(h.revoked, v), true
		}
		if v, ok := x.(HookCommitted); ok {
			h.committed, any = append(h.committed, v), true
		}
		if v, ok := x.(HookRetryScheduled); ok {
			h.retry, any = append(h.retry, v), true
		}
		if v, ok := x.(HookDeadLettered); ok {
			h.dead, any = append(h.dead, v), true
		}
		if v, ok := x.(HookFetched); ok {
			h.fetched, any = append(h.fetched, v), true
		}
		if v, ok := x.(HookBatchAttempt); ok {
			h.batch, any = append(h.batch, v), true
		}
		if _, ok := x.(HookTransaction); ok {
			any = true // the exactly-once windows find it in Config.Hooks (eos.go)
		}
		if !any {
			return nil, fmt.Errorf("kavari: Config.Hooks[%d] (%T) implements no HookXxx interface", i, x)
		}
		if err := checkHookMethods(x); err != nil {
			return nil, fmt.Errorf("kavari: Config.Hooks[%d]: %w", i, err)
		}
	}
	return h, nil
}

// hookInterfaces names the interface of each hook method.
var hookInterfaces = map[string]reflect.Type{
	"OnPublishBefore":  reflect.TypeFor[HookPublishBefore](),
	"OnPublishAfter":   reflect.TypeFor[HookPublishAfter](),
	"OnAssigned":       reflect.TypeFor[HookAssigned](),
	"OnRevoked":        reflect.TypeFor[HookRevoked](),
	"OnCommitted":      reflect.TypeFor[HookCommitted](),
	"OnRetryScheduled": reflect.TypeFor[HookRetryScheduled](),
	"OnDeadLettered":   reflect.TypeFor[HookDeadLettered](),
	"OnFetched":        reflect.TypeFor[HookFetched](),
	"OnBatchAttempt":   reflect.TypeFor[HookBatchAttempt](),
	"OnTransaction":    reflect.TypeFor[HookTransaction](),
}

// checkHookMethods refuses a hook with a method named as a hook method but
// with another signature: it would never be called.
func checkHookMethods(x Hook) error {
	t := reflect.TypeOf(x)
	for name, iface := range hookInterfaces {
		if m, ok := t.MethodByName(name); ok && !t.Implements(iface) {
			return fmt.Errorf("%T has %s%s, which is not %s's %s: it would never be called", x, name, strings.TrimPrefix(m.Type.String(), "func"), iface, name)
		}
	}
	return nil
}

// publishBefore appends to hs the headers the hooks add to msg.
func (h *hooks) publishBefore(ctx context.Context, msg Msg, hs []transport.Header) []transport.Header {
	for _, x := range h.pubBefore {
		for _, a := range x.OnPublishBefore(ctx, msg) {
			hs = append(hs, transport.Header{Key: a.Key, Value: a.Value})
		}
	}
	return hs
}

// publishAfter reports the outcome of recs (errs nil: all acknowledged),
// each with its context, ctxs[i], or ctx when ctxs is nil.
func (h *hooks) publishAfter(ctx context.Context, ctxs []context.Context, recs []*transport.Record, start time.Time, errs []error) {
	if h == nil || len(h.pubAfter) == 0 {
		return
	}
	for i, rec := range recs {
		var err error
		if errs != nil {
			err = errs[i]
		}
		r := recordOf(rec, 0, "")
		if err != nil {
			r.Partition, r.Offset = -1, -1 // not stored (or not known to be)
		}
		c := ctx
		if ctxs != nil {
			c = ctxs[i]
		}
		for _, x := range h.pubAfter {
			x.OnPublishAfter(c, r, start, err)
		}
	}
}

func (h *hooks) onAssigned(m map[string][]int) {
	if h == nil {
		return
	}
	for _, x := range h.assigned {
		x.OnAssigned(m)
	}
}

func (h *hooks) onRevoked(ps []*partition, lost bool) {
	if h == nil || len(h.revoked) == 0 || len(ps) == 0 {
		return
	}
	m := map[string][]int{}
	for _, p := range ps {
		m[p.topic] = append(m[p.topic], p.id)
	}
	for _, x := range h.revoked {
		x.OnRevoked(m, lost)
	}
}

func (h *hooks) onCommitted(offsets []transport.Offset, took time.Duration, err error) {
	if h == nil || len(h.committed) == 0 {
		return
	}
	m := map[string]map[int]int64{}
	for _, o := range offsets {
		if m[o.Topic] == nil {
			m[o.Topic] = map[int]int64{}
		}
		m[o.Topic][int(o.Partition)] = o.Offset
	}
	for _, x := range h.committed {
		x.OnCommitted(m, took, err)
	}
}

func (h *hooks) onRetry(rec *transport.Record, attempt int, handler string, wait time.Duration, err error) {
	if h == nil || len(h.retry) == 0 {
		return
	}
	r := recordOf(rec, attempt, handler)
	for _, x := range h.retry {
		x.OnRetryScheduled(r, wait, err)
	}
}

// onRetryTier is onRetry for a move to retry tier tier.
func (h *hooks) onRetryTier(rec *transport.Record, attempt int, handler string, tier int, wait time.Duration, err error) {
	if h == nil || len(h.retry) == 0 {
		return
	}
	r := recordOf(rec, attempt, handler)
	r.RetryTier = tier
	for _, x := range h.retry {
		x.OnRetryScheduled(r, wait, err)
	}
}

func (h *hooks) onDeadLettered(rec *transport.Record, attempts int, kind ErrorKind, handler string, err error) {
	if h == nil || len(h.dead) == 0 {
		return
	}
	r := recordOf(rec, attempts, handler)
	for _, x := range h.dead {
		x.OnDeadLettered(r, kind, err)
	}
}

// batchObserved reports whether a HookBatchAttempt is installed.
func (h *hooks) batchObserved() bool { return h != nil && len(h.batch) > 0 }

func (h *hooks) onBatchAttempt(a BatchAttempt) {
	for _, x := range h.batch {
		x.OnBatchAttempt(a)
	}
}

func (h *hooks) onFetched(tp transport.TopicPartition, recs []*transport.Record, hw int64) {
	if h == nil || len(h.fetched) == 0 || len(recs) == 0 {
		return
	}
	for _, x := range h.fetched {
		x.OnFetched(tp.Topic, int(tp.Partition), len(recs), recs[len(recs)-1].Offset, hw)
	}
}

// TransactionEvent is what a HookTransaction hears at the end of each
// exactly-once transaction.
type TransactionEvent struct {
	Committed bool // false: aborted (Err says why)
	// Offsets are the offsets the transaction committed (or would have),
	// by topic and partition.
	Offsets  map[string]map[int]int64
	Duration time.Duration // from the window's close to the transaction's end
	Err      error
}

// HookTransaction hears the end of each exactly-once transaction, committed
// or aborted. It runs on the engine's window goroutine: keep it short.
type HookTransaction interface {
	OnTransaction(TransactionEvent)
}
