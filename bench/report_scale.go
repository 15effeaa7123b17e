package main

import (
	"fmt"
	"strings"
)

// Targets of the scaling and I/O workloads.
const (
	// scaleTarget: the rate at 300 partitions, or with every record its
	// own key, ÷ the rate at 3 partitions and 100 keys.
	scaleTarget = 0.8
	// ioTarget: the 1 ms I/O handler's rate ÷ MaxInFlight ÷ 1 ms.
	ioTarget = 0.9
)

// scaleRef is the shape the other scaling rows are divided by.
var scaleRef = scaleCases[0]

func (r *report) scaleRatio(c scaleCase, impl string) (float64, bool) {
	return r.ratio(scaleID(c, impl), scaleID(scaleRef, impl))
}

// evaluateScale adds the targets of the scaling and I/O workloads.
func (r *report) evaluateScale(add func(name, measured, status string)) {
	for _, impl := range scaleImpls {
		for _, c := range scaleCases {
			if c == scaleRef || (c.partitions != 300 && !c.allKeys) {
				continue
			}
			name := fmt.Sprintf("%s consume rate at %s ≥ %.1f× the rate at %s", implName(impl), r.scaleDesc(c), scaleTarget, r.scaleDesc(scaleRef))
			q, ok := r.scaleRatio(c, impl)
			if !ok {
				add(name, "", notMeasured)
				continue
			}
			a, _ := r.rate(scaleID(c, impl))
			b, _ := r.rate(scaleID(scaleRef, impl))
			add(name, fmt.Sprintf("%s ÷ %s msg/s = %.2f×", fmtRate(a, true), fmtRate(b, true), q), status(q >= scaleTarget))
		}
	}
	for _, impl := range scaleImpls {
		name := fmt.Sprintf("%s with a 1 ms handler (10,000 keys, 3 partitions) ≥ %.1f× MaxInFlight ÷ 1 ms", implName(impl), ioTarget)
		x := r.res["io1ms/"+impl]
		if x == nil || x.IO == nil || x.IO.Ceiling <= 0 || x.Seconds <= 0 {
			add(name, "", notMeasured)
			continue
		}
		q := x.MsgsPerSec / x.IO.Ceiling
		add(name, fmt.Sprintf("%s ÷ %s msg/s = %.2f× (÷ ceiling of the measured sleeps: %.2f×)", fmtRate(x.MsgsPerSec, true),
			fmtRate(x.IO.Ceiling, true), q, x.MsgsPerSec/x.IO.SleptCeiling), status(q >= ioTarget))
	}
}

// scaleDesc describes a shape for the report.
func (r *report) scaleDesc(c scaleCase) string {
	if c.allKeys {
		return fmt.Sprintf("%d partitions, %s keys (every record its own)", c.partitions, thousands(r.o.consumeN))
	}
	return fmt.Sprintf("%d partitions, %s keys", c.partitions, thousands(c.keys))
}

// writeScale writes the scaling, idle-goroutine and 1 ms I/O sections.
func (r *report) writeScale(w func(string, ...any)) {
	seen := false
	for _, c := range scaleCases {
		for _, impl := range scaleImpls {
			seen = seen || r.res[scaleID(c, impl)] != nil
		}
	}
	if seen {
		w("## How consuming scales with partitions and keys (kavari, no-op handler)\n\n")
		w("| shape |")
		for _, impl := range scaleImpls {
			w(" %s msg/s | ÷ %d partitions, %d keys | peak RSS |", implName(impl), scaleRef.partitions, scaleRef.keys)
		}
		w("\n| --- |%s\n", strings.Repeat(" ---: | ---: | ---: |", len(scaleImpls)))
		for _, c := range scaleCases {
			var cells []string
			for _, impl := range scaleImpls {
				x := r.res[scaleID(c, impl)]
				v, ok := r.rate(scaleID(c, impl))
				rss := "–"
				if x != nil {
					rss = fmt.Sprintf("%.1f MiB", x.PeakRSSMiB)
				}
				cells = append(cells, fmtRate(v, ok), fmtRatio(r.scaleRatio(c, impl)), rss)
			}
			w("| %s | %s |\n", r.scaleDesc(c), strings.Join(cells, " | "))
		}
		w("\n")
		for _, impl := range scaleImpls {
			ref := r.res[scaleID(scaleRef, impl)]
			if ref == nil {
				continue
			}
			var parts []string
			for _, c := range scaleCases {
				x := r.res[scaleID(c, impl)]
				if x == nil || c == scaleRef {
					continue
				}
				d := (x.PeakRSSMiB - ref.PeakRSSMiB) * (1 << 20)
				if c.allKeys {
					parts = append(parts, fmt.Sprintf("%.0f bytes per distinct key (%s keys vs %d)", d/float64(r.o.consumeN-scaleRef.keys), thousands(r.o.consumeN), scaleRef.keys))
				} else {
					parts = append(parts, fmt.Sprintf("%.1f KiB per partition (%d vs %d partitions)", d/1024/float64(c.partitions-scaleRef.partitions), c.partitions, scaleRef.partitions))
				}
			}
			if len(parts) > 0 {
				w("- %s, peak RSS growth over the reference row: %s.\n", implName(impl), strings.Join(parts, "; "))
			}
		}
		w("\n%s records of 100 B per run, pre-filled once per shape (keys `k-<i mod keys>`, or `m-<i>` when every record has its\n", thousands(r.o.consumeN))
		w("own key); kavari's defaults (PerKey, MaxInFlight 256), a new group per run. Rate = records ÷ (last handled − first handled);\n")
		w("the ratio divides it by the same client's rate at %s. RSS per partition or per key is the\n", r.scaleDesc(scaleRef))
		w("difference of the peak RSS (VmHWM) of the two runs divided by the difference in partitions or keys: a slope, noisy at this size.\n\n")
	}

	var idle []*result
	for _, parts := range idlePartitions {
		for _, impl := range scaleImpls {
			if x := r.res[fmt.Sprintf("idle/%dpart/%s", parts, impl)]; x != nil && x.Idle != nil {
				idle = append(idle, x)
			}
		}
	}
	if len(idle) > 0 {
		w("## Idle goroutines per assigned partition\n\n")
		w("| partitions | client | goroutines before `New` | goroutines idle, all assigned | per partition | more than at %d partitions, per added partition | RSS idle | assigned after |\n", idlePartitions[0])
		w("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		for _, x := range idle {
			i := x.Idle
			marginal := "–"
			if ref := r.res[fmt.Sprintf("idle/%dpart/%s", idlePartitions[0], x.Impl)]; ref != nil && ref.Idle != nil && i.Partitions > ref.Idle.Partitions {
				marginal = fmt.Sprintf("%.2f", float64(i.Goroutines-ref.Idle.Goroutines)/float64(i.Partitions-ref.Idle.Partitions))
			}
			w("| %d | %s | %d | %d | %.2f | %s | %.1f MiB | %.2f s |\n", i.Partitions, implName(x.Impl), i.Baseline, i.Goroutines, i.PerPart, marginal, i.RSSMiB, x.FirstSeconds)
		}
		w("\nkavari (defaults, no-op handler) on a freshly created, empty topic. Goroutines idle is the lowest `runtime.NumGoroutine()`\n")
		w("sampled every 100 ms for 2 s once `Health` shows every partition assigned; per partition = (idle − before `New`) ÷ partitions,\n")
		w("so the client's fixed goroutines are spread over the partitions; the next column divides the difference from the %d-partition\n", idlePartitions[0])
		w("row by the partitions added, the cost of one more partition.\n\n")
	}

	var io []*result
	for _, impl := range scaleImpls {
		if x := r.res["io1ms/"+impl]; x != nil && x.IO != nil {
			io = append(io, x)
		}
	}
	if len(io) > 0 {
		w("## Handler with 1 ms of simulated I/O\n\n")
		w("| client | msg/s | MaxInFlight | ceiling = MaxInFlight ÷ 1 ms | ÷ ceiling | mean measured sleep | ÷ ceiling of the measured sleeps | peak concurrency | peak RSS | target ≥ %.1f× met? |\n", ioTarget)
		w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n")
		for _, x := range io {
			q := x.MsgsPerSec / x.IO.Ceiling
			w("| %s | %s | %d | %s | %.2f× | %.3f ms | %.2f× | %d | %.1f MiB | %s |\n", implName(x.Impl), fmtRate(x.MsgsPerSec, x.Seconds > 0), x.IO.MaxInFlight,
				fmtRate(x.IO.Ceiling, true), q, x.IO.MeanSleptMs, x.MsgsPerSec/x.IO.SleptCeiling, x.IO.MaxConcurrent, x.PeakRSSMiB, metCell(q, x.Seconds > 0, ioTarget))
		}
		w("\n%s records of 100 B, 10,000 keys (`k-<i mod 10000>`), 3 partitions; every handler calls `time.Sleep(1 * time.Millisecond)`.\n", thousands(r.o.ioN))
		w("kavari's defaults but MaxInFlight %d (`-io-max-in-flight`). The ceiling is the rate if all MaxInFlight slots slept without pause:\n", r.o.ioInFlight)
		w("MaxInFlight ÷ 1 ms. Go's timers overshoot a 1 ms sleep (see the parallel-consumer section), so the ceiling of the measured\n")
		w("sleeps, MaxInFlight ÷ the mean time spent in `time.Sleep`, is the one kavari can reach; the target uses the first.\n\n")
	}
}
