package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/kavari-go/kavari"
)

// Batch handlers (issue 18): the consume workload with a no-op batch
// handler, and with one record in 10,000 that the handler fails (a plain
// error: kavari retries the batch, bisects it and dead-letters the record);
// and bulk2ms, a batch handler doing one 2 ms bulk write per call.

const (
	batchSuffix  = "+batch"
	poisonSuffix = "+batch+poison"
	// poisonEvery: one record in poisonEvery fails in the poison workload.
	poisonEvery = 10_000
	// bulkWrite is the simulated bulk write of the bulk2ms workload.
	bulkWrite = 2 * time.Millisecond
	// batchRecords and batchWait are the batch bounds the workloads set:
	// kavari's defaults, set explicitly so that the report names them.
	batchRecords = 100
	batchWait    = 10 * time.Millisecond
)

// batchImpls are kavari on each transport with a batch handler.
var batchImpls = []string{"kavari" + batchSuffix, implKavariFranz + batchSuffix, "kavari" + poisonSuffix, implKavariFranz + poisonSuffix}

// kavariBase is the kavari client an impl runs on ("kavari" or
// implKavariFranz), without its workload suffix.
func kavariBase(impl string) string {
	if strings.HasPrefix(impl, implKavariFranz) {
		return implKavariFranz
	}
	return "kavari"
}

// isPoison says whether the handler of the poison workload fails msg.
func isPoison(m *BenchMessage) bool { return m.Seq%poisonEvery == poisonEvery/2 }

var errPoison = errors.New("bench: poison record")

// runBatchConsume is runConsume's part for the batch handlers.
func runBatchConsume(ctx context.Context, s *spec, c *counter) (stop func(), err error) {
	plain := *s
	plain.Impl = kavariBase(s.Impl)
	if strings.HasSuffix(s.Impl, poisonSuffix) {
		return kavariConsumeBatch(ctx, &plain, func(_ context.Context, msgs []*BenchMessage) error {
			for _, m := range msgs {
				if isPoison(m) {
					return errPoison
				}
			}
			c.hitN(len(msgs))
			return nil
		}, func(cfg *kavari.Config) { cfg.Hooks = append(cfg.Hooks, deadCounter{c}) })
	}
	return kavariConsumeBatch(ctx, &plain, func(_ context.Context, msgs []*BenchMessage) error {
		c.hitN(len(msgs))
		return nil
	}, nil)
}

// deadCounter counts a dead-lettered record as done: the poison workload
// ends when every record was handled or dead-lettered.
type deadCounter struct{ c *counter }

var _ kavari.HookDeadLettered = deadCounter{}

func (d deadCounter) OnDeadLettered(*kavari.Record, kavari.ErrorKind, error) { d.c.hit() }

// kavariConsumeBatch is kavariConsume with a batch handler.
func kavariConsumeBatch(ctx context.Context, s *spec, fn func(context.Context, []*BenchMessage) error, tune func(*kavari.Config)) (stop func(), err error) {
	reg := kavari.NewRegistry()
	if err := kavari.RegisterBatchFuncOn(reg, &BenchMessage{}, fn); err != nil {
		return nil, err
	}
	cfg := kavariConfig(s, reg)
	cfg.Consume.MaxBatchRecords, cfg.Consume.MaxBatchWait = batchRecords, batchWait
	if tune != nil {
		tune(&cfg)
	}
	k, err := kavari.New(cfg)
	if err != nil {
		return nil, err
	}
	if err := k.Start(ctx); err != nil {
		return nil, err
	}
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_ = k.Stop(sctx)
	}, nil
}

// bulk runs the bulk2ms workload: 10,000 keys, 3 partitions, a batch
// handler sleeping bulkWrite per call, kavari's default batch bounds.
func (b *bench) bulk() { b.keyed("bulk2ms", "bulk", nil) }

// bulkStats is what the bulk2ms workload measured beside the rate.
type bulkStats struct {
	Calls         int     `json:"calls"`
	MeanBatch     float64 `json:"mean_batch"`
	MaxBatch      int     `json:"max_batch"`
	MeanSleptMs   float64 `json:"mean_slept_ms"`
	MaxConcurrent int     `json:"max_concurrent"`
	Partitions    int     `json:"partitions"`
}

// runBulk is the worker's part of bulk2ms.
func runBulk(ctx context.Context, s *spec) (*result, error) {
	c := newCounter(s.Count)
	var calls, slept, cur, peak, biggest atomic.Int64
	begin := time.Now()
	stop, err := kavariConsumeBatch(ctx, s, func(_ context.Context, msgs []*BenchMessage) error {
		atomicMax(&peak, cur.Add(1))
		atomicMax(&biggest, int64(len(msgs)))
		t0 := time.Now()
		time.Sleep(bulkWrite)
		slept.Add(int64(time.Since(t0)))
		cur.Add(-1)
		calls.Add(1)
		c.hitN(len(msgs))
		return nil
	}, nil)
	if err != nil {
		return nil, err
	}
	err = c.wait(ctx)
	stop()
	if err != nil {
		return nil, err
	}
	res := c.result(begin)
	n := max(calls.Load(), 1)
	res.Bulk = &bulkStats{
		Calls:         int(calls.Load()),
		MeanBatch:     float64(s.Count) / float64(n),
		MaxBatch:      int(biggest.Load()),
		MeanSleptMs:   float64(slept.Load()) / float64(n) / 1e6,
		MaxConcurrent: int(peak.Load()),
		Partitions:    s.Partitions,
	}
	return res, nil
}

// bulkCeiling is MaxBatchRecords ÷ the write × partitions (one batch call
// in flight per partition), for a write of d.
func bulkCeiling(d time.Duration, partitions int) float64 {
	return float64(batchRecords) / d.Seconds() * float64(partitions)
}

// evaluateBatch adds the batch handlers' targets.
func (r *report) evaluateBatch(add func(name, measured, st string)) {
	for _, size := range sizes {
		for _, t := range transportPairs {
			batch := conID(size, t.kavari+batchSuffix)
			name := fmt.Sprintf("%s consume with a no-op batch handler ≥ 1.0× raw %s doing the same JSON decode (%s)", implName(t.kavari), t.raw, sizeName(size))
			if q, ok := r.ratio(batch, conID(size, t.raw+"+json")); ok {
				m := fmt.Sprintf("%.2f×", q)
				if qv, ok := r.ratio(batch, conID(size, t.raw+"+json+validate")); ok {
					m += fmt.Sprintf(" (÷ raw + JSON decode + validate: %.2f×)", qv)
				}
				add(name, m, status(q >= 1))
			} else {
				add(name, "", notMeasured)
			}
			name = fmt.Sprintf("%s consume with a no-op batch handler ≥ 2× its single-record handler (%s)", implName(t.kavari), sizeName(size))
			if q, ok := r.ratio(batch, conID(size, t.kavari)); ok {
				add(name, fmt.Sprintf("%.2f×", q), status(q >= 2))
			} else {
				add(name, "", notMeasured)
			}
			name = fmt.Sprintf("%s batch handler, one failing record in %s: ≥ 0.95× the clean run (%s)", implName(t.kavari), thousands(poisonEvery), sizeName(size))
			if q, ok := r.ratio(conID(size, t.kavari+poisonSuffix), batch); ok {
				add(name, fmt.Sprintf("%.2f×", q), status(q >= 0.95))
			} else {
				add(name, "", notMeasured)
			}
		}
	}
	for _, impl := range scaleImpls {
		name := fmt.Sprintf("%s with a batch handler doing a 2 ms bulk write per call (10,000 keys, 3 partitions) ≥ 0.9× MaxBatchRecords ÷ 2 ms × 3 partitions", implName(impl))
		x := r.res["bulk2ms/"+impl]
		if x == nil || x.Bulk == nil || x.MsgsPerSec <= 0 {
			add(name, "", notMeasured)
			continue
		}
		ceil := bulkCeiling(bulkWrite, x.Bulk.Partitions)
		q := x.MsgsPerSec / ceil
		m := fmt.Sprintf("%s ÷ %s msg/s = %.2f×", thousands(int(x.MsgsPerSec)), thousands(int(ceil)), q)
		if x.Bulk.MeanSleptMs > 0 {
			m += fmt.Sprintf(" (÷ ceiling of the measured writes: %.2f×)", x.MsgsPerSec/bulkCeiling(time.Duration(x.Bulk.MeanSleptMs*1e6), x.Bulk.Partitions))
		}
		add(name, m, status(q >= 0.9))
	}
}

// writeBatch writes the batch handlers' section.
func (r *report) writeBatch(w func(string, ...any)) {
	var rows []string
	for _, size := range sizes {
		for _, t := range transportPairs {
			single, ok1 := r.rate(conID(size, t.kavari))
			batch, ok2 := r.rate(conID(size, t.kavari+batchSuffix))
			poison, ok3 := r.rate(conID(size, t.kavari+poisonSuffix))
			raw, ok4 := r.rate(conID(size, t.raw+"+json"))
			if !ok2 {
				continue
			}
			ratio := func(a float64, aok bool, b float64, bok bool) string {
				if !aok || !bok || b == 0 {
					return "–"
				}
				return fmt.Sprintf("%.2f×", a/b)
			}
			rows = append(rows, fmt.Sprintf("| %s | %s | %s | %s | %s | %s | %s | %s |", sizeName(size), implName(t.kavari),
				fmtRate(single, ok1), fmtRate(batch, ok2), fmtRate(poison, ok3),
				ratio(batch, ok2, single, ok1), ratio(batch, ok2, raw, ok4), ratio(poison, ok3, batch, ok2)))
		}
	}
	var bulk []string
	for _, impl := range scaleImpls {
		x := r.res["bulk2ms/"+impl]
		if x == nil || x.Bulk == nil {
			continue
		}
		b := x.Bulk
		bulk = append(bulk, fmt.Sprintf("| %s | %s | %s | %s | %.1f (max %d) | %.2f ms | %d | %.1f MiB |", implName(impl), thousands(int(x.MsgsPerSec)),
			thousands(int(bulkCeiling(bulkWrite, b.Partitions))), thousands(b.Calls), b.MeanBatch, b.MaxBatch, b.MeanSleptMs, b.MaxConcurrent, x.PeakRSSMiB))
	}
	if len(rows) == 0 && len(bulk) == 0 {
		return
	}
	w("## Batch handlers (msg/s)\n\n")
	if len(rows) > 0 {
		w("| size | client | single-record handler | batch handler | batch, one failing record in %s | batch ÷ single | batch ÷ raw + JSON decode | with failing records ÷ clean |\n", thousands(poisonEvery))
		w("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		for _, l := range rows {
			w("%s\n", l)
		}
		w("\nThe consume workload's records (every record its own key) with `RegisterBatchFunc` and kavari's default batch bounds\n")
		w("(MaxBatchRecords %d, MaxBatchBytes 1 MiB, MaxBatchWait %s). With failing records, the handler returns a plain error for\n", batchRecords, batchWait)
		w("any batch holding one: kavari retries the batch (Consume.Retry, default), bisects it, retries the record alone and\n")
		w("dead-letters it; the run ends when every record was handled or dead-lettered.\n\n")
	}
	if len(bulk) > 0 {
		w("| client | msg/s | ceiling = MaxBatchRecords ÷ 2 ms × 3 partitions | calls | records per call | mean measured write | peak concurrent calls | peak RSS |\n")
		w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		for _, l := range bulk {
			w("%s\n", l)
		}
		w("\nbulk2ms: %s records of 100 B over 10,000 keys and 3 partitions; the batch handler sleeps 2 ms per call (a bulk write).\n\n", thousands(r.o.ioN))
	}
}
