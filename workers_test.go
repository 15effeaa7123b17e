package kavari_test

import (
	"context"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/transport"
)

// Workers beyond GOMAXPROCS start once lanes wait while every worker is
// blocked in its handler: MaxInFlight handlers that wait on I/O (here, on a
// channel) all run at once.
func TestBlockedHandlersStillFillMaxInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := engBroker(1)
		const inFlight = 16
		for i := 0; i < 4*inFlight; i++ {
			b.Append(engRecord(0, "k"+strconv.Itoa(i), i))
		}
		release := make(chan struct{})
		var running, most atomic.Int64
		k := memKavari(t, b, transport.Capabilities{}, "g-blocked", func(ctx context.Context, m *engMsg) error {
			if r := running.Add(1); r > most.Load() {
				most.Store(r)
			}
			<-release
			running.Add(-1)
			return nil
		}, func(c *kavari.Config) { c.Consume.MaxInFlight = inFlight })
		require.NoError(t, k.Start(context.Background()))
		// Fake time in the bubble: a second is plenty for the pool's timer.
		for i := 0; i < 1000 && most.Load() < inFlight; i++ {
			<-timeAfterMillisecond()
		}
		require.EqualValues(t, inFlight, most.Load())
		close(release)
		for memCommitted(b, "g-blocked", 0) < 4*inFlight {
			<-timeAfterMillisecond()
		}
		require.NoError(t, stopNow(t, k))
	})
}

// Quick handlers (none blocks) run on at most GOMAXPROCS workers at once:
// a worker done with its lane takes the next one queued instead of the pool
// waking an idle worker (or starting one) for every lane. In the bubble no
// time passes while handlers run, so none counts as blocked.
func TestQuickHandlersRunOnGOMAXPROCSWorkers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := engBroker(3)
		const n = 600
		for i := 0; i < n; i++ {
			b.Append(engRecord(int32(i%3), "k"+strconv.Itoa(i), i))
		}
		var running, most, handled atomic.Int64
		k := memKavari(t, b, transport.Capabilities{}, "g-quick", func(ctx context.Context, m *engMsg) error {
			if r := running.Add(1); r > most.Load() {
				most.Store(r)
			}
			for range 3 {
				runtime.Gosched() // let the feeders and other workers run meanwhile
			}
			running.Add(-1)
			handled.Add(1)
			return nil
		})
		require.NoError(t, k.Start(context.Background()))
		for handled.Load() < n {
			<-timeAfterMillisecond()
		}
		require.NoError(t, stopNow(t, k))
		require.LessOrEqual(t, most.Load(), int64(runtime.GOMAXPROCS(0)), "handlers running at once")
		require.Positive(t, most.Load())
	})
}

func timeAfterMillisecond() <-chan time.Time { return time.After(time.Millisecond) }
