package integration

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/internal/testkit"
)

// BenchmarkRetryTopicsHealthyRecords is issue 19's target run: 1 % of the
// records fail once. It compares, on the transport KAVARI_TRANSPORT names,
// what the healthy 99 % see in three modes:
//
//   - clean: nothing fails;
//   - tiers: a failed record moves to a 1 s retry tier at once (no
//     in-place retry);
//   - inplace: a failed record is retried in place after 1 s (its key
//     waits, the partition's commits wait behind it).
//
// Two phases per mode, each on topics of its own (Config.Topics.Name):
// throughput, a backlog of 50,000 records (100 B, 1,009 keys, 3 partitions,
// a handler taking 1 ms, MaxInFlight 256) consumed from the start, the
// healthy records' rate from the first handled to the last healthy one;
// latency, 1,000 records/s published for 10 s, each healthy record's time
// from its scheduled publish to its handler's start (p50, p99, max).
// Figures are reported and logged, never asserted. Run once:
//
//	go run ./internal/kafkaproc/cmd/kafkactl run -nodes 1 -- go test -run '^$' -bench RetryTopicsHealthy -benchtime 1x ./test/integration/
func BenchmarkRetryTopicsHealthyRecords(b *testing.B) {
	brokers, _ := testenv.Brokers(b)
	for _, mode := range []string{"clean", "tiers", "inplace"} {
		b.Run(mode, func(b *testing.B) {
			for range b.N {
				tput := rtBacklog(b, brokers, mode, 50_000)
				p50, p99, pmax := rtPaced(b, brokers, mode, 1000, 10*time.Second)
				b.ReportMetric(tput, "healthy-msg/s")
				b.ReportMetric(p99, "healthy-p99-ms")
				b.Logf("%s %s: healthy throughput %.0f msg/s; healthy e2e at 1,000 msg/s: p50 %.1f ms, p99 %.1f ms, max %.1f ms",
					testkit.Transport(), mode, tput, p50, p99, pmax)
			}
		})
	}
}

type rtBenchMsg struct {
	kavari.Message `kavari:"topic=it-rtbench,key=Key"`
	Key            string `json:"key"`
	N              int    `json:"n"`
	SentNs         int64  `json:"sent_ns"`
	Pad            string `json:"pad"`
}

// rtFails says whether record n fails its first attempt: 1 %, spread over
// the keys (record n has key n % 1009).
func rtFails(n int) bool { return n%100 == 99 }

// rtBenchClient consumes with handle in mode, on topics of its own.
func rtBenchClient(b *testing.B, brokers []string, mode string, handle func(ctx context.Context, m *rtBenchMsg) error) (*kavari.Client, string) {
	run := testenv.ID("rtb")
	reg := kavari.NewRegistry()
	require.NoError(b, kavari.RegisterFuncOn(reg, &rtBenchMsg{}, handle))
	k := testkit.NewClient(b, reg, brokers, func(c *kavari.Config) {
		c.Topics.Name = func(t string) string { return t + "-" + run }
		c.Topics.Partitions = 3
		c.Consume.MaxInFlight = 256
		switch mode {
		case "tiers":
			c.Consume.Retry = kavari.NoRetry()
			c.Consume.RetryTopics = []time.Duration{time.Second}
		case "inplace":
			c.Consume.Retry = kavari.ConstantRetry(time.Second, 2)
		default:
			c.Consume.Retry = kavari.NoRetry()
		}
	})
	return k, "it-rtbench-" + run
}

func rtFailOnce(mode string, n int, seen *sync.Map) bool {
	if mode == "clean" || !rtFails(n) {
		return false
	}
	_, again := seen.LoadOrStore(n, true)
	return !again
}

// rtBacklog publishes n records, then consumes them; it returns the healthy
// records' rate.
func rtBacklog(b *testing.B, brokers []string, mode string, n int) float64 {
	var first atomic.Int64
	var lastHealthy atomic.Int64
	var healthy atomic.Int64
	var failed sync.Map
	want := int64(n)
	if mode != "clean" {
		want = int64(n - n/100)
	}
	k, _ := rtBenchClient(b, brokers, mode, func(ctx context.Context, m *rtBenchMsg) error {
		now := time.Now().UnixNano()
		first.CompareAndSwap(0, now)
		if rtFailOnce(mode, m.N, &failed) {
			return fmt.Errorf("fails once")
		}
		time.Sleep(time.Millisecond)
		if mode == "clean" || !rtFails(m.N) {
			if healthy.Add(1) == want {
				lastHealthy.Store(time.Now().UnixNano())
			}
		}
		return nil
	})
	ctx := context.Background()
	pad := string(make([]byte, 40))
	msgs := make([]kavari.Msg, 0, 1000)
	for i := 0; i < n; i++ {
		msgs = append(msgs, &rtBenchMsg{Key: "k" + strconv.Itoa(i%1009), N: i, Pad: pad})
		if len(msgs) == cap(msgs) || i == n-1 {
			_, err := k.PublishBatch(ctx, msgs...)
			require.NoError(b, err)
			msgs = msgs[:0]
		}
	}
	require.NoError(b, k.Start(ctx))
	testkit.Eventually(b, 5*time.Minute, func() bool { return lastHealthy.Load() != 0 }, "%s: healthy records handled: %d of %d", mode, healthy.Load(), want)
	return float64(want) / (float64(lastHealthy.Load()-first.Load()) / 1e9)
}

// rtPaced publishes rate records/s for d and returns the healthy records'
// publish-to-handler latency: p50, p99 and max, in ms.
func rtPaced(b *testing.B, brokers []string, mode string, rate int, d time.Duration) (p50, p99, pmax float64) {
	n := int(int64(rate) * int64(d) / int64(time.Second))
	lat := make([]int64, n)
	var got atomic.Int64
	var failed sync.Map
	want := int64(n)
	if mode != "clean" {
		want = int64(n - n/100)
	}
	k, _ := rtBenchClient(b, brokers, mode, func(ctx context.Context, m *rtBenchMsg) error {
		start := time.Now().UnixNano()
		if m.N < 0 {
			return nil // warm-up
		}
		if rtFailOnce(mode, m.N, &failed) {
			return fmt.Errorf("fails once")
		}
		if (mode == "clean" || !rtFails(m.N)) && m.N < n && lat[m.N] == 0 {
			lat[m.N] = max(start-m.SentNs, 1)
			got.Add(1)
		}
		time.Sleep(time.Millisecond)
		return nil
	})
	ctx := context.Background()
	require.NoError(b, k.Start(ctx))
	for i := 0; i < 30; i++ { // warm up: assignment and a round trip per partition, likely
		_, err := k.Publish(ctx, &rtBenchMsg{Key: "w" + strconv.Itoa(i), N: -1})
		require.NoError(b, err)
	}
	time.Sleep(2 * time.Second)
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		at := start.Add(time.Duration(i) * interval)
		if w := time.Until(at); w > 0 {
			time.Sleep(w)
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, err := k.Publish(ctx, &rtBenchMsg{Key: "k" + strconv.Itoa(i%1009), N: i, SentNs: at.UnixNano()})
			if err != nil {
				b.Errorf("publish %d: %v", i, err)
			}
		}(i)
	}
	wg.Wait()
	testkit.Eventually(b, 2*time.Minute, func() bool { return got.Load() == want }, "%s: healthy records handled: %d of %d", mode, got.Load(), want)
	var ls []int64
	for _, l := range lat {
		if l > 0 {
			ls = append(ls, l)
		}
	}
	slices.Sort(ls)
	q := func(f float64) float64 { return float64(ls[min(int(f*float64(len(ls))), len(ls)-1)]) / 1e6 }
	return q(0.5), q(0.99), float64(ls[len(ls)-1]) / 1e6
}
