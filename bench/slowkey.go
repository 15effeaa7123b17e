package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/kavari-go/kavari"
)

// The slow-key workload: one key of one partition is slow, and the records
// of the other partitions must not wait at its pace.
const (
	// slowKeyPartitions, slowKeyKeys: the topic's partitions and the
	// other keys (`k-<i mod keys>`).
	slowKeyPartitions = 8
	slowKeyKeys       = 10_000
	// slowKeyEvery: one record in slowKeyEvery has the slow key ("slow").
	slowKeyEvery = 200
	// slowKeySleep is how long the slow key's handler takes a record.
	slowKeySleep = 20 * time.Millisecond
	// slowKeyTarget: the other partitions' rate with the slow key ÷ their
	// rate when it is not slow.
	slowKeyTarget = 0.8
)

// slowKeyModes: "clean" handles the slow key's records at once, "slow"
// takes slowKeySleep for each.
var slowKeyModes = []string{"clean", "slow"}

func slowKeyID(impl, mode string) string { return "slowkey/" + impl + "/" + mode }

// slowKeyStats is what the slow-key workload measured beside the rate.
type slowKeyStats struct {
	Partition int `json:"partition"` // the slow key's partition, left out of the rate
	// SlowDone is how many of the slow key's SlowTotal records were
	// handled when the other partitions' last record was.
	SlowDone  int `json:"slow_done"`
	SlowTotal int `json:"slow_total"`
}

// slowKeyPartition is the partition of key among n: the Java client's
// murmur2, which the fill's producer and both of kavari's transports use.
func slowKeyPartition(key string, n int) int {
	parts := make([]int, n)
	for i := range parts {
		parts[i] = i
	}
	return (&kafka.Murmur2Balancer{}).Balance(kafka.Message{Key: []byte(key)}, parts...)
}

// slowKey fills -slowkey-n records of 100 B on slowKeyPartitions partitions,
// one in slowKeyEvery of key "slow", and consumes them with kavari on both
// transports, clean and slow, -reps times alternated. The rate counts the
// records of the partitions the slow key is not on.
func (b *bench) slowKey() {
	var want bool
	for _, impl := range scaleImpls {
		for _, mode := range slowKeyModes {
			want = want || b.want(slowKeyID(impl, mode))
		}
	}
	if !want {
		return
	}
	slowPart := slowKeyPartition("slow", slowKeyPartitions)
	others, slowN := 0, 0
	partOf := map[string]int{}
	key := func(i int) string {
		if i%slowKeyEvery == 0 {
			return "slow"
		}
		return parallelKey(i, slowKeyKeys)
	}
	for i := range b.o.slowKeyN {
		k := key(i)
		p, ok := partOf[k]
		if !ok {
			p = slowKeyPartition(k, slowKeyPartitions)
			partOf[k] = p
		}
		switch {
		case k == "slow":
			slowN++
		case p != slowPart:
			others++
		}
	}
	if err := b.fill(b.o.slowKeyN, 100, slowKeyPartitions, func(i int, v *benchValue) { v.ID = key(i) }); err != nil {
		b.fail("slowkey", err)
		return
	}
	for rep := 0; rep < max(b.o.reps, 1); rep++ {
		for _, impl := range scaleImpls {
			for _, mode := range slowKeyModes {
				id := slowKeyID(impl, mode)
				if !b.want(id) {
					continue
				}
				s := b.base(id, "slowkey", impl)
				s.Mode, s.Size, s.Count, s.Partitions, s.Keys = mode, 100, others, slowKeyPartitions, slowN
				s.SlowPartition = slowPart
				b.runSpec(s, false)
			}
		}
	}
}

// runSlowKey is the worker's part of the slow-key workload: s.Count is the
// records of the partitions other than s.SlowPartition, s.Keys the slow
// key's records.
func runSlowKey(ctx context.Context, s *spec) (*result, error) {
	c := newCounter(s.Count)
	var slowDone atomic.Int64
	begin := time.Now()
	stop, err := kavariConsume(ctx, s, func(ctx context.Context, m *BenchMessage) error {
		if m.ID == "slow" {
			if s.Mode == "slow" {
				select {
				case <-time.After(slowKeySleep):
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			slowDone.Add(1)
			return nil
		}
		if rec, _ := kavari.RecordFromContext(ctx); rec.Partition != s.SlowPartition {
			c.hit()
		}
		return nil
	}, nil)
	if err != nil {
		return nil, err
	}
	err = c.wait(ctx)
	slowAtEnd := slowDone.Load() // a slow record takes 20 ms: none ends between
	stop()
	if err != nil {
		return nil, err
	}
	res := c.result(begin)
	res.SlowKey = &slowKeyStats{Partition: s.SlowPartition, SlowDone: int(slowAtEnd), SlowTotal: s.Keys}
	return res, nil
}

// evaluateSlowKey adds the slow-key targets.
func (r *report) evaluateSlowKey(add func(name, measured, status string)) {
	for _, impl := range scaleImpls {
		name := fmt.Sprintf("%s: the other partitions' rate with one slow key (20 ms a record) ≥ %.1f× their rate without", implName(impl), slowKeyTarget)
		q, ok := r.ratio(slowKeyID(impl, "slow"), slowKeyID(impl, "clean"))
		if !ok {
			add(name, "", notMeasured)
			continue
		}
		a, _ := r.rate(slowKeyID(impl, "slow"))
		b, _ := r.rate(slowKeyID(impl, "clean"))
		add(name, fmt.Sprintf("%s ÷ %s msg/s = %.2f×", fmtRate(a, true), fmtRate(b, true), q), status(q >= slowKeyTarget))
	}
}

// writeSlowKey writes the slow-key section.
func (r *report) writeSlowKey(w func(string, ...any)) {
	seen := false
	for _, impl := range scaleImpls {
		for _, mode := range slowKeyModes {
			seen = seen || r.res[slowKeyID(impl, mode)] != nil
		}
	}
	if !seen {
		return
	}
	w("## One slow key among 8 partitions\n\n")
	w("| client | the other partitions, msg/s: clean | every run | with the slow key | every run | ÷ clean | slow-key records done when the others were | target ≥ %.1f× met? |\n", slowKeyTarget)
	w("| --- | ---: | --- | ---: | --- | ---: | ---: | --- |\n")
	for _, impl := range scaleImpls {
		clean, slow := r.res[slowKeyID(impl, "clean")], r.res[slowKeyID(impl, "slow")]
		ca, cok := r.rate(slowKeyID(impl, "clean"))
		sa, sok := r.rate(slowKeyID(impl, "slow"))
		q, qok := r.ratio(slowKeyID(impl, "slow"), slowKeyID(impl, "clean"))
		done := "–"
		if slow != nil && slow.SlowKey != nil {
			done = fmt.Sprintf("%d of %d", slow.SlowKey.SlowDone, slow.SlowKey.SlowTotal)
		}
		w("| %s | %s | %s | %s | %s | %s | %s | %s |\n", implName(impl), fmtRate(ca, cok), runsOf(clean), fmtRate(sa, sok), runsOf(slow),
			fmtRatio(q, qok), done, metCell(q, qok, slowKeyTarget))
	}
	w("\n%s records of 100 B on %d partitions, one in %d of key `slow`, the others over %s keys (`k-<i mod %d>`); kavari's defaults.\n",
		thousands(r.o.slowKeyN), slowKeyPartitions, slowKeyEvery, thousands(slowKeyKeys), slowKeyKeys)
	w("With the slow key, its handler takes 20 ms a record (every other record is handled at once); clean, it takes none. The rate\n")
	w("counts the records of the 7 partitions the slow key is not on: they ÷ (last of them handled − first record handled). Clean, the\n")
	w("slow key's partition is consumed at full speed beside them, on the same cores, so the ratio can exceed 1.\n\n")
}

// runsOf is x's rates of every run, or "–".
func runsOf(x *result) string {
	if x == nil {
		return "–"
	}
	return runList(x.Runs)
}
