package kavari_test

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/transport"
)

// A slow record at the head of a partition holds the commit, but on a
// transport whose commits carry metadata the records completed behind it are
// listed there, and the next owner skips them: only the slow one is handled
// again. Without metadata every record after the slow one is redelivered.
func TestEngineCommitMetadataSkipsCompleted(t *testing.T) {
	for _, meta := range []bool{true, false} {
		name := map[bool]string{true: "metadata", false: "no-metadata"}[meta]
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const n = 500
				b := engBroker(1)
				for i := 0; i < n; i++ {
					b.Append(engRecord(0, "k"+string(rune('a'+i%20)), i))
				}
				caps := transport.Capabilities{CommitMetadata: meta}
				var mu sync.Mutex
				var first, second []int
				done := 0
				k1 := memKavari(t, b, caps, "g", func(ctx context.Context, m *engMsg) error {
					if m.N == 0 {
						<-ctx.Done() // slow head: still running when the member goes
						return ctx.Err()
					}
					mu.Lock()
					first = append(first, m.N)
					done++
					mu.Unlock()
					return nil
				}, withUnordered)
				require.NoError(t, k1.Start(context.Background()))
				for {
					mu.Lock()
					d := done
					mu.Unlock()
					if d == n-1 {
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
				time.Sleep(time.Second) // a few commit intervals
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_ = k1.Stop(ctx) // the slow handler is abandoned
				cancel()
				o, ok := b.Committed("g", transport.TopicPartition{Topic: engTopic, Partition: 0})
				if meta {
					require.True(t, ok)
					assert.Equal(t, int64(0), o.Offset, "the slow record is not committed")
					assert.NotEmpty(t, o.Metadata)
				} else if ok {
					assert.Empty(t, o.Metadata, "nothing is written without the capability")
				}

				k2 := memKavari(t, b, caps, "g", func(ctx context.Context, m *engMsg) error {
					mu.Lock()
					second = append(second, m.N)
					mu.Unlock()
					return nil
				}, withUnordered)
				require.NoError(t, k2.Start(context.Background()))
				for memCommitted(b, "g", 0) < n {
					time.Sleep(100 * time.Millisecond)
				}
				require.NoError(t, stopNow(t, k2))
				mu.Lock()
				defer mu.Unlock()
				if meta {
					assert.Equal(t, []int{0}, second, "only the record in flight is handled again")
				} else {
					assert.Len(t, second, n, "without metadata everything after the slow record is redelivered")
				}
			})
		})
	}
}

func withUnordered(c *kavari.Config) { c.Consume.Ordering = kavari.Unordered }
