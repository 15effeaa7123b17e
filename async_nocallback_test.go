package kavari_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/transport"
)

// A PublishAsync message with a nil callback that fails after all its
// retries is not silently lost: it is logged at error level with its topic
// and ce_id, and counted in Health.AsyncFailedNoCallback. A message with a
// callback is not (the callback got the error), nor is one that succeeds.
func TestPublishAsyncNilCallbackFailureIsLoggedAndCounted(t *testing.T) {
	b := engBroker(1)
	var logs kavari.SyncBuffer
	var tries atomic.Int64
	b.FailProduce = func(rec *transport.Record) error {
		if string(rec.Key) == "doomed" {
			tries.Add(1)
			return errors.New("kt: broker unavailable") // retriable
		}
		return nil
	}
	k := memKavari(t, b, transport.Capabilities{}, "", func(context.Context, *engMsg) error { return nil }, func(c *kavari.Config) {
		c.Publish.Retry = kavari.ConstantRetry(time.Millisecond, 3)
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	ctx := context.Background()
	k.PublishAsync(ctx, &engMsg{Key: "doomed"}, nil)
	k.PublishAsync(ctx, &engMsg{Key: "fine"}, nil)
	seen := make(chan error, 1)
	k.PublishAsync(ctx, &engMsg{Key: "doomed"}, func(_ kavari.Receipt, err error) { seen <- err })
	require.Error(t, <-seen)
	require.NoError(t, stopNow(t, k))

	assert.Equal(t, int64(6), tries.Load(), "each doomed message was tried 3 times")
	assert.Equal(t, int64(1), k.Health().AsyncFailedNoCallback)
	var lines []string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "level=ERROR") {
			lines = append(lines, l)
		}
	}
	require.Len(t, lines, 1, "one error logged: %s", logs.String())
	assert.Contains(t, lines[0], "topic="+engTopic)
	assert.Contains(t, lines[0], "ce_id=")
	assert.NotContains(t, lines[0], "ce_id= ")
	assert.Contains(t, lines[0], "kt: broker unavailable")
	require.Len(t, b.Records(engTopic, 0), 1, "the fine message was stored")
}
