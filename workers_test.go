package kavari_test

import (
	"context"
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

func timeAfterMillisecond() <-chan time.Time { return time.After(time.Millisecond) }
