package integration

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
)

type latestEvent struct {
	kavari.Message `kavari:"topic=it-latest,key=Key"`
	Run            string `json:"run"`
	Key            string `json:"key"`
	Seq            int    `json:"seq"`
}

// TestLatestStartSurvivesMove: with AutoOffsetReset Latest, member A joins
// a group with no committed offsets; records are published once A's
// Health shows the partitions; A's handler hangs, so A completes nothing,
// and A stops (its drain gives up) before it committed any progress. B
// then joins the group: it must handle every record published after A's
// assignment. Where A started is the group's start: before, B started at
// the log end of its own join and skipped them all.
func TestLatestStartSurvivesMove(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	const parts, n = 3, 12
	run, group := testenv.ID("run"), testenv.ID("it-latest")
	member := func(h func(context.Context, *latestEvent) error) *kavari.Client {
		reg := kavari.NewRegistry()
		require.NoError(t, kavari.RegisterFuncOn(reg, &latestEvent{}, h))
		return newKavari(t, reg, brokers, func(c *kavari.Config) {
			c.Consume.GroupID = group
			c.Consume.AutoOffsetReset = kavari.Latest
			c.Consume.DrainTimeout = time.Second
			c.Topics.Partitions = parts
		})
	}
	owns := func(k *kavari.Client) int {
		c := 0
		for _, ps := range k.Health().Assigned {
			c += len(ps)
		}
		return c
	}

	var mu sync.Mutex
	seenA := map[int]bool{}
	a := member(func(ctx context.Context, e *latestEvent) error {
		if e.Run == run {
			mu.Lock()
			seenA[e.Seq] = true
			mu.Unlock()
		}
		<-ctx.Done() // hangs: A completes nothing
		return ctx.Err()
	})
	require.NoError(t, a.Start(context.Background()))
	waitUntil(t, time.Minute, func() bool { return owns(a) == parts }, "A owns every partition")
	// Where A starts is committed with the assignment: A completes
	// nothing, so that is all it can commit.
	for deadline := time.Now().Add(time.Minute); a.Health().Commits == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("A did not commit where its partitions start (last error: %q)", a.Health().LastError)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range n {
		_, err := a.Publish(ctx, &latestEvent{Run: run, Key: fmt.Sprintf("k%d", i), Seq: i})
		require.NoError(t, err)
	}
	// A was given records of each partition it could (all, with the fix):
	// at least one, so it is surely past its start.
	waitUntil(t, time.Minute, func() bool { mu.Lock(); defer mu.Unlock(); return len(seenA) > 0 }, "A is handed a record")
	sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer scancel()
	_ = a.Stop(sctx) // it may report the abandoned records: they were never completed

	handledB := map[int]int{}
	b := member(func(_ context.Context, e *latestEvent) error {
		if e.Run == run {
			mu.Lock()
			handledB[e.Seq]++
			mu.Unlock()
		}
		return nil
	})
	require.NoError(t, b.Start(context.Background()))
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		mu.Lock()
		got := len(handledB)
		mu.Unlock()
		if got == n {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	var missing []int
	for i := range n {
		if handledB[i] == 0 {
			missing = append(missing, i)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("B (Latest, joining after A stopped without committing progress) never handled %d of the %d records published after A's assignment: %v",
			len(missing), n, missing)
	}
}
