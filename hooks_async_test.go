package kavari_test

import (
	"context"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/transport"
)

// Every HookPublishBefore call is followed by one HookPublishAfter call,
// also for a PublishAsync message that is never sent: its context ended
// while it was queued or while PublishAsync waited for room, or
// TryPublishAsync found the queue full. (A tracer's producer span would
// otherwise never end.)
func TestHooksPublishAsyncNotSent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := engBroker(1)
		rec := &recorder{}
		k := memKavari(t, b, transport.Capabilities{}, "", func(context.Context, *engMsg) error { return nil }, func(c *kavari.Config) {
			c.Hooks = []kavari.Hook{rec}
			c.Publish.AsyncWorkers = 1
			c.Publish.AsyncQueue = 1
		})
		release := make(chan struct{})
		// The first callback holds the only writer: what follows stays queued.
		k.PublishAsync(context.Background(), &engMsg{Key: "a"}, func(kavari.Receipt, error) { <-release })
		synctest.Wait()
		queued, cancelQueued := context.WithCancel(context.Background())
		errs := make(chan error, 2)
		k.PublishAsync(queued, &engMsg{Key: "b"}, func(_ kavari.Receipt, err error) { errs <- err })
		require.ErrorIs(t, k.TryPublishAsync(context.Background(), &engMsg{Key: "c"}, nil), kavari.ErrQueueFull)
		waiting, cancelWaiting := context.WithCancel(context.Background())
		go k.PublishAsync(waiting, &engMsg{Key: "d"}, func(_ kavari.Receipt, err error) { errs <- err })
		synctest.Wait() // d waits for room
		cancelWaiting()
		require.ErrorIs(t, <-errs, context.Canceled, "d")
		cancelQueued()
		close(release)
		require.ErrorIs(t, <-errs, context.Canceled, "b")
		require.NoError(t, stopNow(t, k))
		lines := rec.got()
		// An unsent record has no partition or offset: -1, as in a Receipt.
		assert.Len(t, only(lines, "before"), 4)
		assert.Equal(t, []string{
			"after eng/0@0 x-hook=1 err=false",
			"after eng/-1@-1 x-hook=1 err=true",
			"after eng/-1@-1 x-hook=1 err=true",
			"after eng/-1@-1 x-hook=1 err=true",
		}, only(lines, "after"))
	})
}
