package kavari_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/transport"
)

// A second Stop with a shorter deadline waits for the first and never cuts
// what the first is still doing: the first Stop's flush of 100 queued
// PublishAsync messages (each write takes 20 ms) completes, every callback
// gets nil, and the first Stop returns nil. The second returns its deadline
// error once its ctx ends. Before, the second Stop's deadline closed the
// producer under the first one's flush: the queued messages failed with
// "producer closed" and the first Stop still returned nil.
func TestSecondStopDoesNotCutTheFirst(t *testing.T) {
	for _, started := range []bool{false, true} {
		name := map[bool]string{false: "publisher-only", true: "consuming"}[started]
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const n = 100
				b := engBroker(1)
				b.FailProduce = func(*transport.Record) error {
					time.Sleep(20 * time.Millisecond) // a slow broker: fake time
					return nil
				}
				k := memKavari(t, b, transport.Capabilities{}, "g-second-stop", func(context.Context, *engMsg) error { return nil },
					func(c *kavari.Config) { c.Publish.AsyncWorkers, c.Publish.BatchSize = 1, 1 })
				if started {
					require.NoError(t, k.Start(context.Background()))
				}
				var mu sync.Mutex
				var failed []error
				ok := 0
				for i := range n {
					k.PublishAsync(context.Background(), &engMsg{Key: "k", N: i}, func(_ kavari.Receipt, err error) {
						mu.Lock()
						defer mu.Unlock()
						if err != nil {
							failed = append(failed, err)
						} else {
							ok++
						}
					})
				}
				first := make(chan error, 1)
				go func() {
					ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
					defer cancel()
					first <- k.Stop(ctx)
				}()
				time.Sleep(50 * time.Millisecond) // the first Stop is flushing
				ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
				second := k.Stop(ctx)
				cancel()
				assert.True(t, errors.Is(second, context.DeadlineExceeded), "the second Stop returns its own deadline: %v", second)
				err := <-first
				mu.Lock()
				defer mu.Unlock()
				if !assert.Zero(t, len(failed), "queued messages failed during the first Stop's flush") {
					t.Logf("first failure: %v", failed[0])
				}
				assert.Equal(t, n, ok, "callbacks with nil")
				assert.Equal(t, n, len(b.Records(engTopic, 0)), "records written")
				assert.NoError(t, err, "the first Stop")
				// A Stop after both returns the first one's result.
				assert.NoError(t, stopNow(t, k))
			})
		})
	}
}
