package kavari_test

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
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

// A broker whose offset.metadata.max.bytes is below the metadata kavari
// writes (up to 4,000 bytes) refuses those commits
// (OFFSET_METADATA_TOO_LARGE). kavari then commits with shorter metadata,
// or none, rather than failing every commit, and says so once in the log.
func TestCommitMetadataTooLargeFallsBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n, limit = 40, 16
		b := engBroker(1)
		b.MaxMetadataBytes = limit
		// Even offsets hang until released, odd ones complete: the completed
		// offsets beyond the committed one are 20 separate runs, whose
		// metadata is far over the limit.
		for i := 0; i < n; i++ {
			b.Append(engRecord(0, "k"+strconv.Itoa(i), i))
		}
		var logs kavari.SyncBuffer
		release := make(chan struct{})
		var once sync.Once
		free := func() { once.Do(func() { close(release) }) }
		defer free() // a failed assertion does not leave handlers blocked
		var done atomic.Int64
		k := memKavari(t, b, transport.Capabilities{CommitMetadata: true}, "g", func(ctx context.Context, m *engMsg) error {
			if m.N%2 == 0 {
				<-release
			}
			done.Add(1)
			return nil
		}, withUnordered, func(c *kavari.Config) {
			c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		})
		require.NoError(t, k.Start(context.Background()))
		for i := 0; done.Load() < n/2; i++ {
			if i == 600 {
				t.Fatalf("handled %d of the %d odd records in a minute; Health %+v; log %s", done.Load(), n/2, k.Health(), logs.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
		time.Sleep(time.Second) // ten commit intervals
		o, ok := b.Committed("g", transport.TopicPartition{Topic: engTopic, Partition: 0})
		require.True(t, ok, "no commit was accepted; Health: %+v", k.Health().LastError)
		assert.LessOrEqual(t, len(o.Metadata), limit)
		assert.Empty(t, k.Health().LastError, "commits still fail")
		free()
		for done.Load() < n {
			time.Sleep(100 * time.Millisecond)
		}
		require.NoError(t, stopNow(t, k))
		assert.Equal(t, int64(n), memCommitted(b, "g", 0))
		warned := strings.Count(logs.String(), "offset.metadata.max.bytes")
		assert.Equal(t, 1, warned, "logged once: %s", logs.String())
	})
}
