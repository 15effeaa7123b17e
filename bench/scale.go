package main

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/kavari-go/kavari"
)

// scaleCase is one shape of the scaling workload: the topic's partitions and
// the distinct keys of its records (allKeys: every record its own key).
type scaleCase struct {
	partitions, keys int
	allKeys          bool
}

// scaleCases are the scaling workload's shapes; the first is the reference
// the others' rates are divided by.
var scaleCases = []scaleCase{
	{partitions: 3, keys: 100},
	{partitions: 30, keys: 100},
	{partitions: 300, keys: 100},
	{partitions: 3, allKeys: true},
}

func (c scaleCase) name() string {
	if c.allKeys {
		return fmt.Sprintf("%dpart/unique-keys", c.partitions)
	}
	return fmt.Sprintf("%dpart/%dkeys", c.partitions, c.keys)
}

func scaleID(c scaleCase, impl string) string { return "scale/" + c.name() + "/" + impl }

// scaleImpls are the clients of the scaling, idle and I/O workloads.
var scaleImpls = []string{"kavari", implKavariFranz}

// idlePartitions are the partition counts of the idle-goroutine workload.
var idlePartitions = []int{3, 30, 300}

// scale consumes -consume-n pre-filled 100-byte records with a no-op handler
// for every scaleCase, kavari on both transports, -reps times interleaved.
func (b *bench) scale() {
	for _, c := range scaleCases {
		var want bool
		for _, impl := range scaleImpls {
			want = want || b.want(scaleID(c, impl))
		}
		if !want {
			continue
		}
		keys := c.keys
		if c.allKeys {
			keys = b.o.consumeN
		}
		err := b.fill(b.o.consumeN, 100, c.partitions, func(i int, v *benchValue) {
			if !c.allKeys {
				v.ID = parallelKey(i, keys)
			}
		})
		if err != nil {
			b.fail("scale/"+c.name(), err)
			continue
		}
		for rep := 0; rep < max(b.o.reps, 1); rep++ {
			for _, impl := range scaleImpls {
				id := scaleID(c, impl)
				if !b.want(id) {
					continue
				}
				s := b.base(id, "consume", impl)
				s.Size, s.Count, s.Partitions, s.Keys = 100, b.o.consumeN, c.partitions, keys
				b.runSpec(s, false)
			}
		}
	}
}

// idle starts kavari on an empty topic of 3, 30 and 300 partitions and counts
// its goroutines once every partition is assigned.
func (b *bench) idle() {
	for _, parts := range idlePartitions {
		for _, impl := range scaleImpls {
			id := fmt.Sprintf("idle/%dpart/%s", parts, impl)
			if !b.want(id) {
				continue
			}
			s := b.base(id, "idle", impl)
			s.Partitions, s.Duration = parts, 2*time.Second
			b.runSpec(s, true)
		}
	}
}

// io consumes -io-n records of 10,000 keys on 3 partitions with a handler
// that sleeps 1 ms, kavari with MaxInFlight -io-max-in-flight.
func (b *bench) io() {
	b.keyed("io1ms", "io", func(s *spec) { s.MaxInFlight = b.o.ioInFlight })
}

// keyed runs workload (ids prefix/<impl>, once per scaleImpls client and
// repetition) on -io-n records of 100 B over 10,000 keys and 3 partitions;
// set adjusts each spec.
func (b *bench) keyed(prefix, workload string, set func(*spec)) {
	const keys = 10_000
	var ids []string
	for _, impl := range scaleImpls {
		if id := prefix + "/" + impl; b.want(id) {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return
	}
	if err := b.fill(b.o.ioN, 100, 3, func(i int, v *benchValue) { v.ID = parallelKey(i, keys) }); err != nil {
		b.fail(prefix, err)
		return
	}
	for rep := 0; rep < max(b.o.reps, 1); rep++ {
		for _, impl := range scaleImpls {
			id := prefix + "/" + impl
			if !b.want(id) {
				continue
			}
			s := b.base(id, workload, impl)
			s.Size, s.Count, s.Partitions, s.Keys = 100, b.o.ioN, 3, keys
			if set != nil {
				set(&s)
			}
			b.runSpec(s, false)
		}
	}
}

// idleStats are the goroutines of a kavari consumer with every partition
// assigned and nothing to fetch.
type idleStats struct {
	Partitions int `json:"partitions"`
	// Baseline is runtime.NumGoroutine before kavari.New; Goroutines the
	// lowest count sampled every 100 ms over the idle period once every
	// partition was assigned.
	Baseline   int     `json:"baseline"`
	Goroutines int     `json:"goroutines"`
	PerPart    float64 `json:"per_partition"` // (Goroutines − Baseline) ÷ Partitions
	RSSMiB     float64 `json:"rss_mib"`       // VmRSS at the end of the idle period
}

// runIdle starts a kavari consumer on the empty topic, waits until all
// s.Partitions are assigned, then samples the goroutine count for
// s.Duration.
func runIdle(ctx context.Context, s *spec) (*result, error) {
	runtime.GC()
	baseline := runtime.NumGoroutine()
	reg := kavari.NewRegistry()
	if err := kavari.RegisterFuncOn(reg, &BenchMessage{}, func(context.Context, *BenchMessage) error { return nil }); err != nil {
		return nil, err
	}
	k, err := kavari.New(kavariConfig(s, reg))
	if err != nil {
		return nil, err
	}
	if err := k.Start(ctx); err != nil {
		return nil, err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_ = k.Stop(sctx)
	}()
	begin := time.Now()
	for len(k.Health().Assigned[s.Topic]) < s.Partitions {
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return nil, fmt.Errorf("%d of %d partitions assigned: %w", len(k.Health().Assigned[s.Topic]), s.Partitions, err)
		}
	}
	assigned := time.Since(begin)
	low := -1
	for end := time.Now().Add(s.Duration); time.Now().Before(end); {
		if n := runtime.NumGoroutine(); low < 0 || n < low {
			low = n
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return nil, err
		}
	}
	return &result{
		FirstSeconds: assigned.Seconds(),
		Idle: &idleStats{
			Partitions: s.Partitions, Baseline: baseline, Goroutines: low,
			PerPart: float64(low-baseline) / float64(s.Partitions),
			RSSMiB:  float64(procStatusKiB("VmRSS")) / 1024,
		},
	}, nil
}

// ioStats describe the 1 ms I/O workload.
type ioStats struct {
	MaxInFlight int `json:"max_in_flight"`
	// Ceiling is MaxInFlight ÷ 1 ms, the rate if every slot were always
	// sleeping; SleptCeiling uses the mean measured sleep instead of 1 ms
	// (Go's timers overshoot a 1 ms sleep).
	Ceiling       float64 `json:"ceiling"`
	SleptCeiling  float64 `json:"slept_ceiling"`
	MeanSleptMs   float64 `json:"mean_slept_ms"`
	MaxConcurrent int     `json:"max_concurrent"`
}

// runIO consumes the pre-filled topic with kavari, MaxInFlight
// s.MaxInFlight, each handler sleeping 1 ms.
func runIO(ctx context.Context, s *spec) (*result, error) {
	const sleep = time.Millisecond
	c := newCounter(s.Count)
	var slept, cur, peak atomic.Int64
	begin := time.Now()
	stop, err := kavariConsume(ctx, s, func(context.Context, *BenchMessage) error {
		atomicMax(&peak, cur.Add(1))
		t0 := time.Now()
		time.Sleep(sleep)
		slept.Add(int64(time.Since(t0)))
		cur.Add(-1)
		c.hit()
		return nil
	}, func(cfg *kavari.Config) { cfg.Consume.MaxInFlight = s.MaxInFlight })
	if err != nil {
		return nil, err
	}
	err = c.wait(ctx)
	stop()
	if err != nil {
		return nil, err
	}
	res := c.result(begin)
	mean := time.Duration(slept.Load() / int64(s.Count))
	res.IO = &ioStats{
		MaxInFlight:   s.MaxInFlight,
		Ceiling:       float64(s.MaxInFlight) / sleep.Seconds(),
		SleptCeiling:  float64(s.MaxInFlight) / mean.Seconds(),
		MeanSleptMs:   float64(mean) / 1e6,
		MaxConcurrent: int(peak.Load()),
	}
	return res, nil
}
