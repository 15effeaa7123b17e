package kavari_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/transport"
)

// A handler that calls Stop (a "poison pill", an admin command) is not
// waited for by that Stop: it returns once every other handler finished,
// and the calling handler's outcome decides its record — here it returns
// nil after Stop, so its record is committed. Neither Stop reports
// ErrHandlersAbandoned. Both ways of calling it are recognised: with the
// handler's context and with an unrelated one on the handler's goroutine.
func TestStopFromHandler(t *testing.T) {
	for _, withHandlerCtx := range []bool{true, false} {
		name := map[bool]string{true: "handler-ctx", false: "background-ctx"}[withHandlerCtx]
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := engBroker(1)
				b.Append(engRecord(0, "slow", 0)) // another handler, still running when Stop is called
				b.Append(engRecord(0, "stop", 1)) // its handler calls Stop
				var k *kavari.Client
				var slowDone atomic.Bool
				var mu sync.Mutex
				var inner error
				innerReturned := false
				slowDoneAtReturn := false
				started := make(chan struct{})
				k = memKavari(t, b, transport.Capabilities{}, "g", func(ctx context.Context, m *engMsg) error {
					switch m.Key {
					case "slow":
						close(started)
						time.Sleep(3 * time.Second)
						slowDone.Store(true)
					case "stop":
						<-started
						sctx := ctx
						if !withHandlerCtx {
							sctx = context.Background()
						}
						sctx, cancel := context.WithTimeout(sctx, 20*time.Second)
						defer cancel()
						err := k.Stop(sctx)
						mu.Lock()
						inner, innerReturned, slowDoneAtReturn = err, true, slowDone.Load()
						mu.Unlock()
					}
					return nil
				}, func(c *kavari.Config) {
					c.Consume.SessionTimeout = 30 * time.Second
					c.Consume.HeartbeatInterval = 3 * time.Second
					c.Consume.RebalanceTimeout = 60 * time.Second
					c.Consume.DrainTimeout = 10 * time.Second
				})
				require.NoError(t, k.Start(context.Background()))
				for {
					mu.Lock()
					r := innerReturned
					mu.Unlock()
					if r {
						break
					}
					time.Sleep(50 * time.Millisecond)
				}
				mu.Lock()
				assert.NoError(t, inner, "Stop called from the handler")
				assert.True(t, slowDoneAtReturn, "Stop returned to the handler before the other handler finished")
				mu.Unlock()
				err := stopNow(t, k)
				assert.NoError(t, err, "Stop after the handler's")
				assert.NotErrorIs(t, err, kavari.ErrHandlersAbandoned)
				assert.Equal(t, int64(2), memCommitted(b, "g", 0), "both records committed, the calling handler's included")
			})
		})
	}
}
