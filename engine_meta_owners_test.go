package kavari_test

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/transport"
)

// Three successive owners of one partition: A completes every record but the
// first four, whose handlers are still running when it stops, so its commit
// is offset 0 with the 1,996 completed records listed in the metadata. B
// handles record 0, is still handling 1 and 2 when it stops (MaxBuffered 2:
// its feeder never reaches the offsets A completed), and commits offset 1.
// That commit must carry the list B inherited: C then handles only 1, 2 and
// 3, the records nobody completed. Before, B's commit wrote only what its
// own feeder had reached (nothing beyond offset 2), and C handled 1,999
// records again.
func TestEngineCommitMetadataSurvivesThreeOwners(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 2000
		b := engBroker(1)
		for i := range n {
			b.Append(engRecord(0, "k"+string(rune('a'+i%20)), i))
		}
		caps := transport.Capabilities{CommitMetadata: true}
		tp := transport.TopicPartition{Topic: engTopic, Partition: 0}
		stop := func(k *kavari.Client) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = k.Stop(ctx) // the hanging handlers are abandoned
		}
		hang := func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }

		// Owner A.
		var mu sync.Mutex
		doneA := 0
		a := memKavari(t, b, caps, "g", func(ctx context.Context, m *engMsg) error {
			if m.N < 4 {
				return hang(ctx)
			}
			mu.Lock()
			doneA++
			mu.Unlock()
			return nil
		}, withUnordered, func(c *kavari.Config) { c.Consume.MaxBuffered = 4096 }) // room behind the slow head
		require.NoError(t, a.Start(context.Background()))
		fakeWait(t, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return doneA == n-4
		}, func() string {
			mu.Lock()
			defer mu.Unlock()
			return fmt.Sprintf("owner A completed %d of %d", doneA, n-4)
		})
		time.Sleep(time.Second) // a few commit intervals
		stop(a)
		afterA, ok := b.Committed("g", tp)
		require.True(t, ok)
		require.Equal(t, int64(0), afterA.Offset)
		require.NotEmpty(t, afterA.Metadata)

		// Owner B: completes 0, hangs on 1 and 2; its feeder waits with 3.
		var running sync.WaitGroup
		running.Add(2)
		bOwner := memKavari(t, b, caps, "g", func(ctx context.Context, m *engMsg) error {
			switch m.N {
			case 0:
				return nil
			case 1, 2:
				running.Done()
				return hang(ctx)
			}
			t.Errorf("owner B handled record %d, which A completed", m.N)
			return nil
		}, withUnordered, func(c *kavari.Config) { c.Consume.MaxInFlight, c.Consume.MaxBuffered = 2, 2 })
		require.NoError(t, bOwner.Start(context.Background()))
		running.Wait()
		fakeWait(t, func() bool { return memCommitted(b, "g", 0) >= 1 }, func() string { return "owner B committed nothing" })
		stop(bOwner)
		afterB, _ := b.Committed("g", tp)
		t.Logf("metadata after A: %d bytes (offset %d), after B: %d bytes (offset %d)", len(afterA.Metadata), afterA.Offset, len(afterB.Metadata), afterB.Offset)
		assert.Equal(t, int64(1), afterB.Offset)

		// Owner C handles what nobody completed.
		var handledC []int
		c := memKavari(t, b, caps, "g", func(ctx context.Context, m *engMsg) error {
			mu.Lock()
			handledC = append(handledC, m.N)
			mu.Unlock()
			return nil
		}, withUnordered)
		require.NoError(t, c.Start(context.Background()))
		fakeWait(t, func() bool { return memCommitted(b, "g", 0) >= n }, func() string { return fmt.Sprintf("owner C committed only up to %d", memCommitted(b, "g", 0)) })
		require.NoError(t, stopNow(t, c))
		mu.Lock()
		defer mu.Unlock()
		sort.Ints(handledC)
		if len(handledC) != 3 {
			t.Fatalf("owner C handled %d records again; want 3 (1, 2, 3), the records nobody completed", len(handledC))
		}
		assert.Equal(t, []int{1, 2, 3}, handledC, "owner C handles only the records nobody completed")
	})
}

// fakeWait polls cond every 100 ms of a synctest bubble's fake time and
// fails the test when it is still false after ten fake minutes.
func fakeWait(t *testing.T, cond func() bool, msg func() string) {
	t.Helper()
	if !fakeTry(t, cond, msg) {
		t.FailNow()
	}
}

// fakeTry is fakeWait that lets the test go on (to stop its Client) when
// cond is still false: it reports the failure and returns false.
func fakeTry(t *testing.T, cond func() bool, msg func() string) bool {
	t.Helper()
	for end := time.Now().Add(10 * time.Minute); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(end) {
			t.Error(msg())
			return false
		}
	}
	return true
}
