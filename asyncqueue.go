package kavari

import (
	"bytes"
	"context"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
)

// asyncQueue feeds one async writer: a FIFO bounded by size for the
// application's goroutines. A publish made from a PublishAsync callback
// (which runs on an async writer) is never made to wait for room: only the
// writers make room, and a writer blocked in its own callback would wait
// forever. Such publishes are queued beyond size instead.
type asyncQueue struct {
	mu       sync.Mutex
	notEmpty sync.Cond   // an item was added, or the queue is closing
	notFull  sync.Cond   // items were taken, or the queue is closing
	items    []asyncItem // queued items are items[head:]
	head     int
	size     int
	closing  bool // no more items are accepted; the writer drains and stops
}

func newAsyncQueue(size int) *asyncQueue {
	q := &asyncQueue{size: size}
	q.notEmpty.L = &q.mu
	q.notFull.L = &q.mu
	return q
}

// pushMode says what push does when the queue is full.
type pushMode int

const (
	pushWait  pushMode = iota // wait for room (PublishAsync)
	pushTry                   // return ErrQueueFull (TryPublishAsync)
	pushForce                 // queue beyond size (a callback publishing)
)

// push appends it, or returns ErrClosed once the queue is closing, or
// ErrQueueFull in pushTry mode when it is full, or ctx's error when ctx
// ended while push waited for room. inCallback reports whether
// the caller runs on an async writer; it is asked only when the queue is
// full.
func (q *asyncQueue) push(ctx context.Context, it asyncItem, mode pushMode, inCallback func() bool) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.len() >= q.size && !q.closing {
		switch {
		case mode == pushTry:
			return ErrQueueFull
		case inCallback():
			// Never wait: the room would have to come from a writer, maybe
			// the very one running this callback.
		default:
			if ctx.Done() != nil {
				// Wake the wait below when ctx ends.
				stop := context.AfterFunc(ctx, func() {
					q.mu.Lock()
					q.notFull.Broadcast()
					q.mu.Unlock()
				})
				defer stop()
			}
			for q.len() >= q.size && !q.closing {
				if ctx.Err() != nil {
					return context.Cause(ctx)
				}
				q.notFull.Wait()
			}
		}
	}
	if q.closing {
		return ErrClosed
	}
	if q.head > 0 && q.head >= len(q.items)/2 && len(q.items) == cap(q.items) {
		// Reuse the taken prefix rather than grow.
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
	q.items = append(q.items, it)
	q.notEmpty.Signal()
	return nil
}

// take waits for items and moves up to max of them to batch, in order. It
// returns false when the queue is closing and empty.
func (q *asyncQueue) take(batch []asyncItem, max int) ([]asyncItem, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.len() == 0 && !q.closing {
		q.notEmpty.Wait()
	}
	if q.len() == 0 {
		return batch, false
	}
	n := min(max, q.len())
	batch = append(batch, q.items[q.head:q.head+n]...)
	clear(q.items[q.head : q.head+n]) // release the messages for the collector
	q.head += n
	if q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
	}
	q.notFull.Broadcast()
	return batch, true
}

func (q *asyncQueue) len() int { return len(q.items) - q.head }

// queued counts the messages waiting in p's async queues.
func (p *publisher) queued() int {
	n := 0
	for _, q := range p.queues {
		q.mu.Lock()
		n += q.len()
		q.mu.Unlock()
	}
	return n
}

// close stops accepting items: waiting pushes return ErrClosed, and take
// returns what is left, then false.
func (q *asyncQueue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closing = true
	q.notEmpty.Broadcast()
	q.notFull.Broadcast()
}

// writerIDs records the goroutine ids of a publisher's async writers.
type writerIDs struct{ ids []atomic.Int64 }

// has reports whether the calling goroutine is one of the writers. It costs
// a stack read, so it is asked only when a queue is full.
func (w *writerIDs) has() bool {
	id := goroutineID()
	for i := range w.ids {
		if w.ids[i].Load() == id {
			return true
		}
	}
	return false
}

// goroutineID returns the calling goroutine's id, read from the first line
// of its stack trace ("goroutine 42 [running]:"). Go offers no other way;
// kavari only compares it with its own writers' ids.
func goroutineID() int64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	if i := bytes.IndexByte(b, ' '); i > 0 {
		b = b[:i]
	}
	id, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return -1
	}
	return id
}
