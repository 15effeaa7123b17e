package main

import (
	"context"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kavari-go/kavari"
)

// Confluent parallel-consumer's published wall times for 10,000 messages on
// one partition, 0-5 ms random sleep each, concurrency 100, by key count.
var confluentFigures = map[int]float64{10: 3.3, 100: 2.18, 10_000: 2.13}

// parallelKey is the key of message i among keys distinct keys.
func parallelKey(i, keys int) string { return "k-" + strconv.Itoa(i%keys) }

// parallelSleeps returns the handler sleep of each message, uniform in
// [0, 5 ms) at microsecond resolution, from seed.
func parallelSleeps(n int, seed int64) []int64 {
	r := rand.New(rand.NewPCG(uint64(seed), 0x6b61766172690a))
	out := make([]int64, n)
	for i := range out {
		out[i] = r.Int64N(5000)
	}
	return out
}

// runParallel consumes the pre-filled single-partition topic with kavari,
// Ordering PerKey and MaxInFlight s.MaxInFlight; each handler sleeps the
// message's SleepUs. The floor is computed from the messages themselves.
func runParallel(ctx context.Context, s *spec) (*result, error) {
	var (
		mu         sync.Mutex
		lastSeq    = map[string]int64{}
		perKey     = map[string]int64{} // µs, as requested
		slept      = map[string]int64{} // ns, as measured around time.Sleep
		sum        int64
		sumSlept   int64
		violations int
		firstStart atomic.Int64
		lastEnd    atomic.Int64
		cur, peak  atomic.Int64
	)
	c := newCounter(s.Count)
	begin := time.Now()
	stop, err := kavariConsume(ctx, s, func(_ context.Context, m *BenchMessage) error {
		start := time.Now().UnixNano()
		firstStart.CompareAndSwap(0, start)
		atomicMax(&peak, cur.Add(1))
		mu.Lock()
		if prev, ok := lastSeq[m.ID]; ok && prev >= m.Seq {
			violations++
		}
		lastSeq[m.ID] = m.Seq
		perKey[m.ID] += m.SleepUs
		sum += m.SleepUs
		mu.Unlock()
		before := time.Now()
		time.Sleep(time.Duration(m.SleepUs) * time.Microsecond)
		d := int64(time.Since(before))
		cur.Add(-1)
		mu.Lock()
		slept[m.ID] += d
		sumSlept += d
		mu.Unlock()
		atomicMax(&lastEnd, time.Now().UnixNano())
		c.hit()
		return nil
	}, func(cfg *kavari.Config) {
		cfg.Consume.Ordering = kavari.PerKey
		cfg.Consume.MaxInFlight = s.MaxInFlight
	})
	if err != nil {
		return nil, err
	}
	err = c.wait(ctx)
	stop()
	if err != nil {
		return nil, err
	}
	var maxKey, maxSlept int64
	for _, v := range perKey {
		maxKey = max(maxKey, v)
	}
	for _, v := range slept {
		maxSlept = max(maxSlept, v)
	}
	conc := int64(max(s.MaxInFlight, 1))
	floorUs := max(maxKey, sum/conc)
	floorSlept := time.Duration(max(maxSlept, sumSlept/conc))
	wall := time.Duration(lastEnd.Load() - firstStart.Load())
	return &result{
		Count:        s.Count,
		Seconds:      wall.Seconds(),
		FirstSeconds: time.Duration(firstStart.Load() - begin.UnixNano()).Seconds(),
		Parallel: &parallelStats{
			Keys:            len(perKey),
			WallSeconds:     wall.Seconds(),
			TotalSeconds:    time.Duration(lastEnd.Load() - begin.UnixNano()).Seconds(),
			FloorSeconds:    float64(floorUs) / 1e6,
			SleptFloorSecs:  floorSlept.Seconds(),
			SleptSeconds:    time.Duration(sumSlept).Seconds(),
			MaxKeySeconds:   float64(maxKey) / 1e6,
			SumSleepSeconds: float64(sum) / 1e6,
			OrderViolations: violations,
			MaxConcurrent:   int(peak.Load()),
		},
	}, nil
}

// atomicMax raises a to v if v is larger.
func atomicMax(a *atomic.Int64, v int64) {
	for {
		cur := a.Load()
		if v <= cur || a.CompareAndSwap(cur, v) {
			return
		}
	}
}
