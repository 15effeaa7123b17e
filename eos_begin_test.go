package kavari

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari/internal/transport"
)

// beginFails is a transport.Transactional whose Begin fails the first n
// times.
type beginFails struct {
	mu     sync.Mutex
	n      int
	begins int
	began  chan struct{} // closed by the first Begin that succeeds
}

func (b *beginFails) Begin() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.begins++
	if b.begins <= b.n {
		return errors.New("coordinator not available")
	}
	if b.begins == b.n+1 {
		close(b.began)
	}
	return nil
}

func (b *beginFails) Produce(context.Context, []*transport.Record) []error { return nil }
func (b *beginFails) Send(context.Context, []*transport.Record, func(int, int32, int64, error)) {
}
func (b *beginFails) End(context.Context, transport.Generation, []transport.Offset, bool) (bool, error) {
	return true, nil
}

// A member whose transactions cannot begin handles nothing: the window loop
// says so in the log, with the error, and says when they begin again (it
// only noted the error in Health, so a member stuck there, holding its
// partitions, was silent).
func TestWindowLoopLogsWhenBeginFails(t *testing.T) {
	var logs SyncBuffer
	tx := &beginFails{n: 3, began: make(chan struct{})}
	hardCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := &engine{
		eos:     newWindow(tx, time.Millisecond, nil),
		parts:   map[transport.TopicPartition]*partition{},
		runDone: make(chan struct{}),
		deps: engineDeps{
			cfg: &Config{}, log: slog.New(slog.NewTextHandler(&logs, nil)), health: &health{},
			hardCtx: hardCtx, stopGrace: func() time.Duration { return time.Second },
		},
	}
	done := make(chan struct{})
	go func() { defer close(done); e.windowLoop() }()
	select {
	case <-tx.began:
	case <-time.After(30 * time.Second):
		t.Fatal("no transaction began")
	}
	close(e.runDone)
	<-done
	out := logs.String()
	require.Contains(t, out, "cannot begin a transaction", "the first failure is logged")
	assert.Contains(t, out, "coordinator not available")
	assert.Equal(t, 1, strings.Count(out, "cannot begin a transaction"), "then at most every %s: %s", beginFailedLogEvery, out)
	assert.Contains(t, out, "transactions begin again")
	assert.Contains(t, e.deps.health.h.LastError, "coordinator not available")
}
