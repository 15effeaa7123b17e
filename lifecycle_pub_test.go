package kavari_test

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
)

// kafkaGoroutines counts the goroutines running kafka-go code (connection
// pools, metadata pollers, connections) and returns one of their stacks.
func kafkaGoroutines() (int, string) {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count, example := 0, ""
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "github.com/segmentio/kafka-go") {
			count++
			example = g
		}
	}
	return count, example
}

type ktCycleMsg struct {
	kavari.Message `kavari:"topic=kt-lifecycle-cycles,key=ID"`
	ID             string `json:"id"`
}

// Each New, Publish, Stop cycle must close what it created: the writer's
// transport (its metadata poller and broker connections) included.
func TestStopClosesTheTransport(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	reg := kavari.NewRegistry()
	require.NoError(t, reg.Declare(&ktCycleMsg{}))
	cycle := func() {
		k, err := kavari.New(kavari.Config{Brokers: brokers, Registry: reg, Logger: ktLogger()})
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), ktHangGuard)
		defer cancel()
		require.NoError(t, k.EnsureTopics(ctx))
		_, err = k.Publish(ctx, &ktCycleMsg{ID: "c"})
		require.NoError(t, err)
		require.NoError(t, k.Stop(ctx))
		// A closed transport must not be reopened behind Stop's back.
		require.ErrorIs(t, k.EnsureTopics(ctx), kavari.ErrClosed)
	}
	cycle() // warm-up: whatever is created once per process
	base, _ := kafkaGoroutines()
	const cycles = 10
	for i := 0; i < cycles; i++ {
		cycle()
	}
	var left int
	var example string
	deadline := time.Now().Add(ktHangGuard)
	for {
		left, example = kafkaGoroutines()
		if left <= base || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if left > base {
		t.Fatalf("%d kafka-go goroutines left after %d New/Publish/Stop cycles (baseline %d); one of them:\n%s", left-base, cycles, base, example)
	}
}
