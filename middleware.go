package kavari

import "context"

// AttemptFunc is one handler attempt as middleware sees it: it runs the
// handler (and the middleware after this one) on msg, a pointer to the
// decoded message, and returns its outcome. RecordFromContext(ctx) describes
// the record (topic, partition, offset, key, headers, attempt, logical
// type, and the handler in Record.Handler). For an attempt of a batch
// handler (BatchHandler), msg is the batch, a []*T, RecordFromContext
// reports no record, and BatchRecordFromContext(ctx, i) describes record i.
type AttemptFunc func(ctx context.Context, msg any) error

// Middleware wraps every handler attempt, as installed with
// Config.Middleware: it may act before and after calling next, change the
// context it passes on, or not call next at all (returning nil skips the
// handler and counts as success, as for an idempotency check on the ce_id;
// returning Permanent(err) dead-letters the record without retries). The
// first Middleware is the outermost. A panic in middleware is recovered like
// a handler's. Batch handlers' attempts go through it too, with the batch
// as msg (see AttemptFunc): returning nil without calling next marks the
// whole batch handled, and BatchFailed works as from the handler; msg must
// be passed on unchanged. Middleware runs on the handler's goroutine, once per attempt
// and handler. When none is installed, handlers are called directly.
type Middleware func(next AttemptFunc) AttemptFunc

type attemptKey struct{}

// middlewareCtx is a handler's context when middleware is installed: it
// also carries what the innermost call needs. (A separate type keeps
// handlerCtx small when there is no middleware.)
type middlewareCtx struct {
	handlerCtx
	h any // the handler instance
}

func (c *middlewareCtx) Value(key any) any {
	if _, ok := key.(attemptKey); ok {
		return c
	}
	return c.handlerCtx.Value(key)
}

// chain composes mws around the innermost call: the handler of the attempt
// ctx belongs to. nil when mws is empty.
func chain(mws []Middleware) AttemptFunc {
	if len(mws) == 0 {
		return nil
	}
	h := AttemptFunc(func(ctx context.Context, msg any) error {
		if c, ok := ctx.Value(attemptKey{}).(*middlewareCtx); ok {
			return c.b.call(ctx, c.h, msg)
		}
		c := ctx.Value(attemptKey{}).(*batchMiddlewareCtx)
		return c.b.callBatch(ctx, c.h, msg)
	})
	for i := len(mws) - 1; i >= 0; i-- {
		h = mws[i](h)
	}
	return h
}
