package main

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"
)

// environment describes the machine and the run.
type environment struct {
	Date          time.Time
	Command       string
	CPU           string
	Cores         int
	MemGiB        float64
	Kernel        string
	GoVersion     string
	Revision      string // the kavari commit measured, and whether the tree differed from it
	Brokers       []string
	BrokerVersion string
	LoadBefore    string
	LoadAfter     string
	Elapsed       time.Duration
}

func machineInfo() environment {
	e := environment{Date: time.Now(), Cores: runtime.NumCPU(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				e.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb float64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %f kB", &kb); err == nil {
			e.MemGiB = kb / (1 << 20)
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		e.Kernel = "Linux " + strings.TrimSpace(string(b))
	}
	if e.CPU == "" {
		e.CPU = runtime.GOARCH
	}
	return e
}

// revision describes the kavari source the bench was built from: the git
// commit, and the tracked Go files that differed from it (uncommitted work).
func revision(root string) string {
	out, err := exec.Command("git", "-C", root, "log", "-1", "--format=%h %ad", "--date=format:%Y-%m-%d %H:%M").Output()
	if err != nil {
		return ""
	}
	rev := "commit " + strings.TrimSpace(string(out))
	st, err := exec.Command("git", "-C", root, "status", "--porcelain", "--untracked-files=no", "--", "*.go").Output()
	if err == nil {
		var files []string
		for _, l := range strings.Split(strings.TrimSpace(string(st)), "\n") {
			if f := strings.TrimSpace(l); len(f) > 3 {
				files = append(files, "`"+strings.TrimSpace(f[2:])+"`")
			}
		}
		if len(files) > 0 {
			rev += " with uncommitted changes to " + strings.Join(files, ", ")
		}
	}
	return rev
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "n/a"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "n/a"
	}
	return strings.Join(f[:3], " ")
}

// report turns results into docs/benchmarks.md.
type report struct {
	o        *options
	env      environment
	res      map[string]*result
	micro    *microResults
	py       *pyResults
	failures []string
	targets  []target
	// toolchain is the -toolchains entry this report's workers were built
	// with ("" for the bench's own).
	toolchain string
}

type target struct {
	Name     string
	Measured string
	Status   string // met, missed, not measured
}

func buildReport(o *options, env environment, results []*result, micro *microResults, py *pyResults, failures []string) *report {
	r := &report{o: o, env: env, res: map[string]*result{}, micro: micro, py: py, failures: failures}
	for _, x := range results {
		r.res[x.ID] = x
	}
	r.evaluate()
	return r
}

func (r *report) rate(id string) (float64, bool) {
	x := r.res[id]
	if x == nil || x.Count == 0 || x.Seconds <= 0 {
		return 0, false
	}
	return x.MsgsPerSec, true
}

func (r *report) ratio(a, b string) (float64, bool) {
	x, ok1 := r.rate(a)
	y, ok2 := r.rate(b)
	if !ok1 || !ok2 || y == 0 {
		return 0, false
	}
	return x / y, true
}

func status(ok bool) string {
	if ok {
		return "**met**"
	}
	return "**missed**"
}

const notMeasured = "not measured"

// evaluate checks every target against the measured numbers.
func (r *report) evaluate() {
	add := func(name, measured, st string) { r.targets = append(r.targets, target{name, measured, st}) }
	for _, size := range sizes {
		for _, mode := range []string{"sync", "batch", "async"} {
			for _, t := range publishPairs {
				name := fmt.Sprintf("%s publish ≥ 0.95× %s (%s, %s)", implName(t.kavari), implName(t.raw), sizeName(size), modeName(mode, r.o))
				q, ok := r.ratio(pubID(size, mode, t.kavari), pubID(size, mode, t.raw))
				if !ok {
					add(name, "", notMeasured)
					continue
				}
				add(name, fmt.Sprintf("%.2f×", q), status(q >= pubTarget))
			}
			if mode == "sync" {
				continue // a single Publish must not wait for a linger
			}
			name := fmt.Sprintf("kavari on franz-go publish ≥ 0.9× the fastest raw franz-go configuration (%s, %s)", sizeName(size), modeName(mode, r.o))
			id := func(impl string) string { return pubID(size, mode, impl) }
			fast, fastImpl, found := r.fastest(id, franzConfigs...)
			q, ok := r.ratio(id(implKavariFranz), fast)
			if !found || !ok {
				add(name, "", notMeasured)
				continue
			}
			fastName := implName(fastImpl)
			if fastImpl == "franz-go" {
				fastName += fmt.Sprintf(", linger %s, not idempotent", r.o.linger)
			}
			add(name, fmt.Sprintf("%.2f× (fastest: %s)", q, fastName), status(q >= pubFastTarget))
		}
	}
	for _, size := range sizes {
		for _, t := range transportPairs {
			name := fmt.Sprintf("%s consume ≥ 0.9× raw %s doing the same JSON decode and validation (%s)", implName(t.kavari), t.raw, sizeName(size))
			q, ok := r.ratio(conID(size, t.kavari), conID(size, t.raw+"+json+validate"))
			if !ok {
				add(name, "", notMeasured)
				continue
			}
			m := fmt.Sprintf("%.2f×", q)
			if qj, ok := r.ratio(conID(size, t.kavari), conID(size, t.raw+"+json")); ok {
				m += fmt.Sprintf(" (÷ raw + JSON decode only: %.2f×)", qj)
			}
			add(name, m, status(q >= conTarget))
		}
	}
	r.evaluateConsumeCost(add)
	r.evaluateScale(add)
	r.evaluateSlowKey(add)
	r.evaluateBatch(add)
	r.evaluateOtel(add)
	r.evaluateEOS(add)
	r.evaluateOutbox(add)
	r.evaluateRetry(add)
	for _, size := range sizes {
		name := fmt.Sprintf("single-caller synchronous Publish on franz-go: p50 < 1 ms (%s)", sizeName(size))
		x := r.res[pubID(size, "sync1", implKavariFranz)]
		if x == nil || x.Latency == nil {
			add(name, "", notMeasured)
			continue
		}
		add(name, fmt.Sprintf("p50 %.2f ms, p99 %.2f ms (%s calls)", x.Latency.P50, x.Latency.P99, thousands(x.Latency.Sent)), status(x.Latency.P50 < 1))
	}
	{
		name := "engine cost per record on the in-memory transport ≤ 1.5 µs and ≤ 10 allocs (BenchmarkDispatchMemory)"
		ns, ok1 := r.micro.get("BenchmarkDispatchMemory", "ns/msg")
		allocs, ok2 := r.micro.get("BenchmarkDispatchMemory", "allocs/msg")
		if ok1 && ok2 {
			add(name, fmt.Sprintf("%.2f µs, %.1f allocs (median of %d)", ns/1000, allocs, r.micro.Count), status(ns <= 1500 && allocs <= 10))
		} else {
			add(name, "", notMeasured)
		}
	}
	for _, keys := range []int{1, 10, 100, 10_000} {
		name := fmt.Sprintf("parallel consumer within 1.3× floor (%s)", keysName(keys))
		x := r.res[fmt.Sprintf("parallel/%d", keys)]
		if x == nil || x.Parallel == nil || x.Parallel.FloorSeconds <= 0 {
			add(name, "", notMeasured)
			continue
		}
		q := x.Parallel.WallSeconds / x.Parallel.FloorSeconds
		ok := q <= 1.3 && x.Parallel.OrderViolations == 0
		m := fmt.Sprintf("%.2f s ÷ %.2f s = %.2f× (÷ floor of the measured sleeps: %.2f×)", x.Parallel.WallSeconds, x.Parallel.FloorSeconds, q,
			x.Parallel.WallSeconds/x.Parallel.SleptFloorSecs)
		if x.Parallel.OrderViolations > 0 {
			m += fmt.Sprintf(", %d per-key order violations", x.Parallel.OrderViolations)
		}
		add(name, m, status(ok))
	}
	for _, rate := range []int{1000, 10_000} {
		for _, t := range transportPairs {
			name := fmt.Sprintf("%s end-to-end p99 ≤ %.1f× raw %s's p99 at %s msg/s", implName(t.kavari), e2eTarget, t.raw, thousands(rate))
			k, raw := r.res[fmt.Sprintf("e2e/%d/%s", rate, t.kavari)], r.res[fmt.Sprintf("e2e/%d/%s", rate, t.raw)]
			if k == nil || k.Latency == nil || k.Latency.Received == 0 || raw == nil || raw.Latency == nil || raw.Latency.P99 <= 0 {
				add(name, "", notMeasured)
				continue
			}
			q := k.Latency.P99 / raw.Latency.P99
			ok := q <= e2eTarget && k.Latency.Received == k.Latency.Sent
			m := fmt.Sprintf("%.2f ms ÷ %.2f ms = %.2f× (%d/%d received)", k.Latency.P99, raw.Latency.P99, q, k.Latency.Received, k.Latency.Sent)
			// The raw franz-go client lingers and is not idempotent; the
			// same client with kavari's producer settings tells how much
			// of a gap the settings make.
			if same := r.res[fmt.Sprintf("e2e/%d/%s", rate, implFranzIdem)]; t.raw == "franz-go" && same != nil && same.Latency != nil && same.Latency.P99 > 0 {
				m += fmt.Sprintf("; ÷ %s: %.2f ms, %.2f×", implName(implFranzIdem), same.Latency.P99, k.Latency.P99/same.Latency.P99)
			}
			add(name, m, status(ok))
		}
	}
	// BenchmarkEncodeValidate (bench_test.go) may have sub-benchmarks, one
	// per message shape; each is judged.
	encNames := r.micro.names("BenchmarkEncodeValidate")
	for _, n := range encNames {
		ns, _ := r.micro.get(n, "ns/op")
		allocs, ok := r.micro.get(n, "allocs/op")
		name := "encode+validate ≤ 2 µs and ≤ 10 allocs per message"
		if shape := strings.TrimPrefix(n, "BenchmarkEncodeValidate/"); shape != n {
			name += " (" + shape + " message)"
		}
		if !ok {
			add(name, "", notMeasured)
			continue
		}
		add(name, fmt.Sprintf("%.2f µs, %.0f allocs (%s)", ns/1000, allocs, n), status(ns <= 2000 && allocs <= 10))
	}
	if len(encNames) == 0 {
		add("encode+validate ≤ 2 µs and ≤ 10 allocs per message", "", notMeasured)
	}
	if x := r.res["rss"]; x != nil && x.RSS != nil {
		m := fmt.Sprintf("%s messages: %.1f MiB (10–50 %%) → %.1f MiB (50–100 %%)", thousands(x.Count), x.RSS.ReferenceMiB, x.RSS.FinalMiB)
		if x.Count < 1_000_000 {
			m += "; shorter than the 1,000,000 of -long"
		}
		add("RSS flat over a million messages", m, status(x.RSS.Flat))
	} else {
		add("RSS flat over a million messages", "", notMeasured)
	}
}

// pubTarget and conTarget are the publish and consume targets: kavari ÷ the
// raw client it runs on (consume: the raw client doing the same JSON decode).
const (
	pubTarget = 0.95
	conTarget = 0.9
	// pubFastTarget: kavari on franz-go ÷ the fastest raw franz-go
	// configuration, for batch and async publishing.
	pubFastTarget = 0.9
	// e2eTarget: kavari's end-to-end p99 ÷ the raw client's in the same run.
	e2eTarget = 1.1
	// rssExtraMiB: kavari's consume peak RSS may exceed the raw client's
	// (doing the same decode and validation) by this much.
	rssExtraMiB = 32
)

// evaluateConsumeCost adds the consume targets beside the rate: peak RSS
// within rssExtraMiB of the raw client doing the same work, and a
// run-to-run spread of the rate ((fastest − slowest) ÷ fastest over the
// repetitions) no wider than the raw client's.
func (r *report) evaluateConsumeCost(add func(name, measured, st string)) {
	for _, size := range sizes {
		for _, t := range transportPairs {
			k, raw := r.res[conID(size, t.kavari)], r.res[conID(size, t.raw+"+json+validate")]
			name := fmt.Sprintf("%s consume peak RSS ≤ raw %s's + %d MiB (%s)", implName(t.kavari), t.raw, rssExtraMiB, sizeName(size))
			if k == nil || raw == nil || k.PeakRSSMiB <= 0 || raw.PeakRSSMiB <= 0 {
				add(name, "", notMeasured)
			} else {
				d := k.PeakRSSMiB - raw.PeakRSSMiB
				add(name, fmt.Sprintf("%.1f MiB ÷ %.1f MiB: %+.1f MiB", k.PeakRSSMiB, raw.PeakRSSMiB, d), status(d <= rssExtraMiB))
			}
			name = fmt.Sprintf("%s consume rate's run-to-run spread ≤ raw %s's (%s)", implName(t.kavari), t.raw, sizeName(size))
			if k == nil || raw == nil || len(k.Runs) < 2 || len(raw.Runs) < 2 {
				add(name, "", notMeasured)
				continue
			}
			sk, sr := spread(k.Runs), spread(raw.Runs)
			add(name, fmt.Sprintf("%.0f %% vs %.0f %% over %d runs", 100*sk, 100*sr, len(k.Runs)), status(sk <= sr))
		}
	}
}

// spread is (fastest − slowest) ÷ fastest.
func spread(runs []float64) float64 {
	lo, hi := slices.Min(runs), slices.Max(runs)
	if hi <= 0 {
		return 0
	}
	return (hi - lo) / hi
}

// publishPairs pair kavari on each transport with the raw client configured
// as its transport configures it: for franz-go, idempotent and no linger.
var publishPairs = []struct{ kavari, raw string }{
	{"kavari", "kafka-go"},
	{implKavariFranz, implFranzIdem},
}

// franzConfigs are the raw franz-go producer configurations.
var franzConfigs = []string{"franz-go", implFranzIdem}

// transportPairs pair kavari on each transport with the raw client under it.
var transportPairs = []struct{ kavari, raw string }{
	{"kavari", "kafka-go"},
	{implKavariFranz, "franz-go"},
}

// implName is how the report names a client.
func implName(impl string) string {
	switch impl {
	case "kavari":
		return "kavari on kafka-go"
	case implKavariFranz:
		return "kavari on franz-go"
	case "kafka-go+json":
		return "raw kafka-go + JSON decode"
	case "franz-go+json":
		return "raw franz-go + JSON decode"
	case "kafka-go+json+validate":
		return "raw kafka-go + JSON decode + validate"
	case "franz-go+json+validate":
		return "raw franz-go + JSON decode + validate"
	case implFranzIdem:
		return "raw franz-go with kavari's settings (idempotent, no linger)"
	}
	return "raw " + impl
}

// fastest returns the id, among impls, with the highest rate.
func (r *report) fastest(id func(impl string) string, impls ...string) (string, string, bool) {
	best, name, found := 0.0, "", false
	for _, impl := range impls {
		if v, ok := r.rate(id(impl)); ok && v > best {
			best, name, found = v, impl, true
		}
	}
	return id(name), name, found
}

func pubID(size int, mode, impl string) string {
	return fmt.Sprintf("publish/%s/%s/%s", sizeName(size), mode, impl)
}

func conID(size int, impl string) string { return fmt.Sprintf("consume/%s/%s", sizeName(size), impl) }

func modeName(mode string, o *options) string {
	switch mode {
	case "sync":
		return fmt.Sprintf("sync, %d callers", o.callers)
	case "sync1":
		return "sync, 1 caller"
	case "batch":
		return fmt.Sprintf("batch of %d", o.batch)
	}
	return mode
}

func keysName(k int) string {
	if k == 1 {
		return "1 key"
	}
	return thousands(k) + " keys"
}

func thousands(n int) string {
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func fmtRate(v float64, ok bool) string {
	if !ok {
		return "–"
	}
	return thousands(int(math.Round(v)))
}

func fmtRatio(v float64, ok bool) string {
	if !ok {
		return "–"
	}
	return fmt.Sprintf("%.2f×", v)
}

func (r *report) summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\nTargets (%s, load %s → %s):\n", r.env.Elapsed.Round(time.Second), r.env.LoadBefore, r.env.LoadAfter)
	for _, t := range r.targets {
		fmt.Fprintf(&b, "  %-62s %-14s %s\n", t.Name, strings.Trim(t.Status, "*"), t.Measured)
	}
	return b.String()
}

func (r *report) markdown() string {
	return r.header([]*report{r}) + r.body()
}

// header writes the title, the run's environment and the common settings,
// for the reports of every toolchain in reps.
func (r *report) header(reps []*report) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	e := r.env
	w("# Benchmarks\n\n")
	w("Generated by `go run ./bench` (bench/README.md explains every workload); do not edit by hand.\n")
	w("Every number below was measured by the run described here; none is typed in.\n\n")
	w("| | |\n| --- | --- |\n")
	w("| date | %s |\n", e.Date.UTC().Format("2006-01-02 15:04 MST"))
	w("| command | `%s` |\n", e.Command)
	w("| machine | %s, %d cores, %.1f GiB memory, %s |\n", e.CPU, e.Cores, e.MemGiB, e.Kernel)
	var gos []string
	for _, x := range reps {
		gos = append(gos, x.goVersions())
	}
	w("| Go | %s (the workers' `runtime.Version()`; the coordinator ran %s) |\n", strings.Join(gos, "; "), e.GoVersion)
	if e.Revision != "" {
		w("| kavari | %s |\n", e.Revision)
	}
	w("| broker | Apache Kafka %s, one KRaft node on 127.0.0.1 (same machine, sharing the cores), replication 1 |\n", e.BrokerVersion)
	for _, x := range reps {
		if x.py != nil && x.py.Versions != "" {
			w("| Python side | %s |\n", x.py.Versions)
		}
	}
	w("| load average | %s before, %s after (1, 5, 15 min) |\n", e.LoadBefore, e.LoadAfter)
	w("| duration | %s |\n\n", e.Elapsed.Round(time.Second))
	w("Common settings: acks all, batch size %d messages / 1 MiB, linger (batch timeout) %s, no compression,\n", r.o.batch, r.o.linger)
	w("%d partitions, a freshly re-created topic for every workload, every Go client in its own process.\n", r.o.partitions)
	w("Throughput is messages per second; ratios are kavari ÷ the other side, so above 1 means kavari is faster.\n")
	w("Publish and consume workloads ran %d times each, interleaved; the tables show the fastest run (the least disturbed by\n", r.o.reps)
	w("other work on the cores), the resource table every run's rate.\n\n")
	return b.String()
}

// goVersions lists the Go versions the workers of this report ran
// (runtime.Version() of each), or the toolchain asked for when no worker
// ran.
func (r *report) goVersions() string {
	seen := map[string]bool{}
	var out []string
	for _, x := range r.res {
		if x.GoVersion != "" && !seen[x.GoVersion] {
			seen[x.GoVersion] = true
			out = append(out, x.GoVersion)
		}
	}
	sort.Strings(out)
	if len(out) == 0 {
		if r.toolchain != "" {
			return r.toolchain + " (no worker ran)"
		}
		return r.env.GoVersion
	}
	return strings.Join(out, ", ")
}

// body writes the sections of one toolchain's results.
func (r *report) body() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("## Targets\n\n| target | measured | result |\n| --- | --- | --- |\n")
	for _, t := range r.targets {
		m := t.Measured
		if m == "" {
			m = "–"
		}
		w("| %s | %s | %s |\n", t.Name, m, t.Status)
	}
	w("\n")

	w("## Publish throughput (msg/s)\n\n")
	w("| size | mode | kavari on kafka-go | kavari on franz-go | raw kafka-go | raw franz-go (linger %s, not idempotent) | raw franz-go (kavari's settings: idempotent, no linger) |", r.o.linger)
	w(" kavari ÷ raw kafka-go | kavari-franz ÷ raw franz-go, same settings | kavari-franz ÷ raw franz-go, linger | kavari-franz ÷ fastest raw franz-go | kavari ÷ fastest raw | kavari-franz ÷ fastest raw |")
	w(" targets met? (kafka-go ≥ %.2f× / franz-go same settings ≥ %.2f× / franz-go fastest ≥ %.1f×) |\n", pubTarget, pubTarget, pubFastTarget)
	w("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n")
	for _, size := range sizes {
		for _, mode := range []string{"sync", "batch", "async"} {
			id := func(impl string) string { return pubID(size, mode, impl) }
			var cells []string
			seen := false
			for _, impl := range []string{"kavari", implKavariFranz, "kafka-go", "franz-go", implFranzIdem} {
				v, ok := r.rate(id(impl))
				seen = seen || ok
				cells = append(cells, fmtRate(v, ok))
			}
			if !seen {
				continue
			}
			fast, _, _ := r.fastest(id, "kafka-go", "franz-go", implFranzIdem)
			fastFranz, _, _ := r.fastest(id, franzConfigs...)
			cells = append(cells,
				fmtRatio(r.ratio(id("kavari"), id("kafka-go"))),
				fmtRatio(r.ratio(id(implKavariFranz), id(implFranzIdem))),
				fmtRatio(r.ratio(id(implKavariFranz), id("franz-go"))),
				fmtRatio(r.ratio(id(implKavariFranz), fastFranz)),
				fmtRatio(r.ratio(id("kavari"), fast)),
				fmtRatio(r.ratio(id(implKavariFranz), fast)))
			var met []string
			for _, t := range publishPairs {
				q, ok := r.ratio(id(t.kavari), id(t.raw))
				met = append(met, metCell(q, ok, pubTarget))
			}
			if mode == "sync" {
				met = append(met, "(none)")
			} else {
				q, ok := r.ratio(id(implKavariFranz), fastFranz)
				met = append(met, metCell(q, ok, pubFastTarget))
			}
			cells = append(cells, strings.Join(met, " / "))
			w("| %s | %s | %s |\n", sizeName(size), modeName(mode, r.o), strings.Join(cells, " | "))
		}
	}
	w("\nsync: `Publish` / `WriteMessages` / `ProduceSync` with one message per call from %d goroutines.\n", r.o.callers)
	w("batch: one caller, %d messages per `PublishBatch` / `WriteMessages` / `ProduceSync` call.\n", r.o.batch)
	w("async: one caller; `PublishAsync` (bounded queue) / kafka-go `Writer{Async: true}` with `Completion` / franz-go `Produce` with a promise.\n")
	w("The raw clients build the same record (JSON value, key, and the same 7 headers kavari writes) but skip validation and reflection.\n")
	w("Raw franz-go runs twice: with linger %s and without idempotence (as raw kafka-go), and with the kgo options of kavari's\n", r.o.linger)
	w("franz-go transport (idempotent, no linger, acks all, no compression, metadata at most 250 ms old, no kgo record retries): kavari\n")
	w("on franz-go ÷ the latter shows kavari's own cost, ÷ the faster of the two also what its fixed settings cost; kgo allows one\n")
	w("produce request in flight per broker without idempotence, five with it. kavari's `PublishAsync` runs 4 writers (the default), each\n")
	w("writing a batch and waiting for its acknowledgements before the next (callbacks run in order on the writer).\n\n")

	r.writeSync1(w)

	w("## Consume throughput (msg/s, no-op handler)\n\n")
	conImpls := []string{"kavari", implKavariFranz, "kafka-go", "kafka-go+json", "kafka-go+json+validate", "franz-go", "franz-go+json", "franz-go+json+validate"}
	w("| size |")
	for _, impl := range conImpls {
		w(" %s |", implName(impl))
	}
	w(" first record after (same order) |\n| --- |%s --- |\n", strings.Repeat(" ---: |", len(conImpls)))
	for _, size := range sizes {
		var cells, firsts []string
		seen := false
		for _, impl := range conImpls {
			v, ok := r.rate(conID(size, impl))
			seen = seen || ok
			cells = append(cells, fmtRate(v, ok))
			if x := r.res[conID(size, impl)]; x != nil {
				firsts = append(firsts, fmt.Sprintf("%.2f", x.FirstSeconds))
			} else {
				firsts = append(firsts, "–")
			}
		}
		if !seen {
			continue
		}
		w("| %s | %s | %s s |\n", sizeName(size), strings.Join(cells, " | "), strings.Join(firsts, " / "))
	}
	w("\n| size | client | ÷ raw + JSON decode + validate (same work) | ÷ fastest raw + JSON decode + validate | ÷ raw + JSON decode | ÷ fastest raw + JSON decode | ÷ raw (no decode) | target ≥ %.1f× same work met? |\n", conTarget)
	w("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |\n")
	for _, size := range sizes {
		id := func(impl string) string { return conID(size, impl) }
		fastV, _, _ := r.fastest(id, "kafka-go+json+validate", "franz-go+json+validate")
		fastJ, _, _ := r.fastest(id, "kafka-go+json", "franz-go+json")
		for _, t := range transportPairs {
			if _, ok := r.rate(id(t.kavari)); !ok {
				continue
			}
			q, ok := r.ratio(id(t.kavari), id(t.raw+"+json+validate"))
			w("| %s | %s ÷ raw %s | %s | %s | %s | %s | %s | %s |\n", sizeName(size), implName(t.kavari), t.raw,
				fmtRatio(q, ok), fmtRatio(r.ratio(id(t.kavari), fastV)),
				fmtRatio(r.ratio(id(t.kavari), id(t.raw+"+json"))), fmtRatio(r.ratio(id(t.kavari), fastJ)),
				fmtRatio(r.ratio(id(t.kavari), id(t.raw))), metCell(q, ok, conTarget))
		}
	}
	w("\n%s records per run, pre-filled once per size; each consumer joins with a new group and reads from the earliest offset.\n", thousands(r.o.consumeN))
	w("Rate = records ÷ (last handled − first handled); the join and the first fetch are in the last column.\n")
	w("kavari: defaults (PerKey, MaxInFlight 256, decode + validate every record, commit every 1 s), on each transport.\n")
	w("raw kafka-go: ConsumerGroup + one partition Reader per partition (configured as kavari's), handler inline, CommitOffsets every 1 s.\n")
	w("raw franz-go: consumer group, autocommit (its default, every 5 s), FetchMaxWait 500 ms as the others.\n")
	w("+ JSON decode: the same, with `json.Unmarshal` of each value in the handler (kavari's decoding without validation and dispatch).\n")
	w("+ JSON decode + validate: `json.Unmarshal` into the struct kavari decodes (`BenchMessage`), then go-playground/validator's\n")
	w("`Struct` on it, the validator configured as kavari's (required structs enabled, JSON field names): the work kavari does\n")
	w("before its handler, without its dispatch, ordering and commit tracking. The target compares kavari with these rows.\n\n")
	r.writeScale(w)
	r.writeSlowKey(w)
	r.writeBatch(w)
	r.writeOtel(w)
	r.writeEOS(w)
	r.writeOutbox(w)

	r.writeRetry(w)
	r.writePython(w)

	w("## End-to-end latency (publish call → handler start)\n\n")
	w("| rate | client | p50 | p99 | p99.9 | max | received / sent | achieved rate |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, rate := range []int{1000, 10_000} {
		for _, impl := range []string{"kavari", implKavariFranz, "kafka-go", "franz-go", implFranzIdem} {
			x := r.res[fmt.Sprintf("e2e/%d/%s", rate, impl)]
			if x == nil || x.Latency == nil {
				continue
			}
			l := x.Latency
			name := implName(impl)
			w("| %s msg/s | %s | %.2f ms | %.2f ms | %.2f ms | %.2f ms | %s / %s | %s msg/s |\n", thousands(rate), name,
				l.P50, l.P99, l.P999, l.Max, thousands(l.Received), thousands(l.Sent), thousands(int(l.AchievedRate)))
		}
	}
	w("\nOpen loop: message i is due at start + i/rate and published from its own goroutine (synchronous `Publish` /\n")
	w("`WriteMessages` / `ProduceSync`; the raw clients decode the value in the handler), so a slow publish never delays the next; latency runs from the due time to the first line of the\n")
	w("handler in the same process (same clock). %s per rate, 100 B messages, after 30 warm-up round trips.\n", r.o.e2eDuration)
	w("Raw franz-go publishes with a %s linger and without idempotence (one request in flight per broker, so records batch behind it);\n", r.o.linger)
	w("%s is the same consumer with kavari's franz-go producer settings (idempotent, so up to 5 requests in flight per\n", implName(implFranzIdem))
	w("broker, and no linger, so that a lone `Publish` never waits): at 10,000 synchronous publishes a second it sends many more, smaller requests.\n\n")

	w("## Parallel consumer (Confluent parallel-consumer's workload)\n\n")
	w("| keys | kavari wall time | floor | kavari ÷ floor | floor of measured sleeps | kavari ÷ that floor | Confluent's figure | order violations | peak concurrency | first record after |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, keys := range []int{1, 10, 100, 10_000} {
		x := r.res[fmt.Sprintf("parallel/%d", keys)]
		if x == nil || x.Parallel == nil {
			continue
		}
		p := x.Parallel
		cf := "–"
		if v, ok := confluentFigures[keys]; ok {
			cf = fmt.Sprintf("%.2f s", v)
		}
		w("| %s | %.2f s | %.2f s | %.2f× | %.2f s | %.2f× | %s | %d | %d | %.2f s |\n", thousands(keys), p.WallSeconds, p.FloorSeconds,
			p.WallSeconds/p.FloorSeconds, p.SleptFloorSecs, p.WallSeconds/p.SleptFloorSecs, cf, p.OrderViolations, p.MaxConcurrent, x.FirstSeconds)
	}
	w("\n%s messages on one partition, each handler sleeping a uniform random 0–5 ms (seed %d, the same sleeps for every\n", thousands(r.o.pcMessages), r.o.seed)
	w("key count), kavari with `Ordering: PerKey`, `MaxInFlight: %d`. Wall time = first handler start → last handler end.\n", r.o.pcInFlight)
	w("Floor = max(largest total sleep of one key, total sleep ÷ %d), computed from the records handled.\n", r.o.pcInFlight)
	w("The floor of measured sleeps uses the time each handler really spent in `time.Sleep`: Go's timers wait in\n")
	w("`epoll_wait`, whose timeout has millisecond resolution, so a sleep overshoots by up to 1 ms (golang/go#44343);\n")
	w("here the %s sleeps took %.1f s instead of %.1f s requested in the 1-key run. That part is the platform's, not kavari's.\n", thousands(r.o.pcMessages), r.sleptTotal(1), r.sleepTotal(1))
	w("Confluent's figures are from their README (different machine, Java's `Thread.sleep`; their floor is not published).\n\n")

	w("## Peak RSS and allocations per Go side\n\n")
	w("| workload | client | msg/s | every run (msg/s) | MiB/s | peak RSS | allocs/msg | bytes/msg | CPU/msg |\n| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |\n")
	ids := make([]string, 0, len(r.res))
	for id := range r.res {
		ids = append(ids, id)
	}
	sort.SliceStable(ids, func(i, j int) bool { return order(ids[i]) < order(ids[j]) })
	for _, id := range ids {
		x := r.res[id]
		if x.Workload != "publish" && x.Workload != "consume" && x.Workload != "e2e" {
			continue
		}
		wl := strings.TrimSuffix(id, "/"+x.Impl)
		if strings.HasSuffix(wl, "/sync1") {
			wl = strings.TrimSuffix(wl, "/sync1") + "/sync, 1 caller"
		}
		mib := fmt.Sprintf("%.1f", x.MiBPerSec)
		if x.Workload == "e2e" {
			mib = "–"
		}
		var runs []string
		for _, v := range x.Runs {
			runs = append(runs, thousands(int(math.Round(v))))
		}
		cpu := "–"
		if x.CPUNsPerMsg > 0 {
			cpu = fmt.Sprintf("%.2f µs", x.CPUNsPerMsg/1000)
		}
		w("| %s | %s | %s | %s | %s | %.1f MiB | %.1f | %s | %s |\n", wl, x.Impl, fmtRate(x.MsgsPerSec, x.Seconds > 0), strings.Join(runs, ", "), mib,
			x.PeakRSSMiB, x.AllocsPerMsg, thousands(int(x.BytesPerMsg)), cpu)
	}
	w("\nPeak RSS is the worker process's VmHWM; allocations are `runtime.MemStats` Mallocs (and TotalAlloc) over the\n")
	w("whole workload, client set-up included, divided by the messages; for e2e the process both publishes and consumes.\n")
	w("CPU/msg (consumers): the process's user + system CPU time from creating the client to the last handled record ÷ records\n")
	w("(set-up and group join included: fetching and decoding start before the first record is handled).\n\n")

	r.writeRSS(w)
	r.writeMicro(w)

	if len(r.failures) > 0 {
		w("## Failures\n\n")
		for _, f := range r.failures {
			w("- %s\n", strings.ReplaceAll(f, "\n", " "))
		}
		w("\n")
	}
	return b.String()
}

func (r *report) sleptTotal(keys int) float64 {
	if x := r.res[fmt.Sprintf("parallel/%d", keys)]; x != nil && x.Parallel != nil {
		return x.Parallel.SleptSeconds
	}
	return math.NaN()
}

func (r *report) sleepTotal(keys int) float64 {
	if x := r.res[fmt.Sprintf("parallel/%d", keys)]; x != nil && x.Parallel != nil {
		return x.Parallel.SumSleepSeconds
	}
	return math.NaN()
}

// order sorts result ids in report order.
func order(id string) string {
	for i, p := range []string{"publish/100B/sync/", "publish/100B/batch", "publish/100B/async", "publish/100B/sync1",
		"publish/1KiB/sync/", "publish/1KiB/batch", "publish/1KiB/async", "publish/1KiB/sync1",
		"consume/100B", "consume/1KiB", "e2e/1000/", "e2e/10000/"} {
		if strings.HasPrefix(id, p) {
			return fmt.Sprintf("%02d %s", i, id)
		}
	}
	return "99 " + id
}

func (r *report) writePython(w func(string, ...any)) {
	w("## Python kavari 0.2.2.1\n\n")
	if r.py == nil {
		w("Not run (excluded by -only).\n\n")
		return
	}
	if r.py.Skipped != "" {
		w("Not run: %s.\n\n", r.py.Skipped)
		return
	}
	find := func(id string) *pyRun {
		for _, p := range r.py.Runs {
			if p.ID == id {
				return p
			}
		}
		return nil
	}
	w("| workload | size | kavari (Go) | Python kavari | kavari ÷ Python |\n| --- | --- | ---: | ---: | ---: |\n")
	for _, size := range sizes {
		p := find("python/publish/" + sizeName(size))
		if p == nil || p.Count == 0 {
			continue
		}
		for _, c := range []struct{ id, name string }{
			{fmt.Sprintf("publish/%s/sync1/kavari", sizeName(size)), "publish, one synchronous caller each"},
			{pubID(size, "sync", "kavari"), fmt.Sprintf("publish: kavari %d callers vs Python (its publish blocks)", r.o.callers)},
		} {
			kv, ok := r.rate(c.id)
			q := kv / p.MsgsPerSec
			w("| %s | %s | %s | %s | %s |\n", c.name, sizeName(size), fmtRate(kv, ok), fmtRate(p.MsgsPerSec, true), fmtRatio(q, ok && p.MsgsPerSec > 0))
		}
	}
	for _, size := range sizes {
		p := find("python/consume/" + sizeName(size))
		if p == nil || p.Count == 0 {
			continue
		}
		kv, ok := r.rate(conID(size, "kavari"))
		q := kv / p.MsgsPerSec
		w("| consume (Python with the bytes-header workaround) | %s | %s | %s | %s |\n", sizeName(size), fmtRate(kv, ok), fmtRate(p.MsgsPerSec, true), fmtRatio(q, ok && p.MsgsPerSec > 0))
	}
	w("\nPython: `test/interop/py/bench.py` through `KafkaManager.publish_message` (acks all, as the Go side) and kavari's own\n")
	w("consumer loop, on the same broker and topic set-up; %s messages published per size, %s consumed (records written by Go\n", thousands(r.o.pySyncN), thousands(r.o.pyConsumeN))
	w("in kavari's wire format). Python consume rate is first → last record, as for Go.\n")
	if d := r.py.Defect; d != nil {
		w("As released, the Python consumer handles none of them: `consume.py` without the workaround handled %d records and\n", r.py.DefectCount)
		w("reported `%v` (header value %v, %v): confluent-kafka hands header values over as bytes and kavari looks them up by str.\n", d["defect"], d["header_value"], d["where"])
		w("The consume figures above therefore decode the header first (`--workaround-bytes-header`); all else is kavari's code.\n")
	}
	for _, p := range r.py.Runs {
		if p.Kind == "consume" && p.Count > 0 {
			w("- %s: its consumer stopped in %.1f s", p.ID, p.StopSeconds)
			if p.StopTimedOut {
				w(" — no: it was still stopping when bench.py gave up")
			}
			if p.CommitTimeouts > 0 {
				w("; librdkafka timed out %d in-flight requests to the group coordinator (kavari commits every record asynchronously, kafka_consumer_manager.py:104)", p.CommitTimeouts)
			}
			w(".\n")
		}
		if p.Err != "" || len(p.Defects) > 0 {
			w("- %s: %s %v\n", p.ID, p.Err, p.Defects)
		}
	}
	w("\n")
}

// metCell says whether ratio q meets target, or "–" when not measured.
func metCell(q float64, ok bool, target float64) string {
	if !ok {
		return "–"
	}
	if q >= target {
		return "met"
	}
	return "**missed**"
}

// writeSync1 writes the single-caller synchronous publish: rate and the
// latency of each call.
func (r *report) writeSync1(w func(string, ...any)) {
	type row struct {
		size int
		impl string
		x    *result
	}
	var rows []row
	for _, size := range sizes {
		for _, impl := range []string{"kavari", implKavariFranz, "kafka-go", "franz-go", implFranzIdem} {
			if x := r.res[pubID(size, "sync1", impl)]; x != nil && x.Latency != nil {
				rows = append(rows, row{size, impl, x})
			}
		}
	}
	if len(rows) == 0 {
		return
	}
	w("## Single-caller synchronous publish (latency of each call)\n\n")
	w("| size | client | msg/s | p50 | p99 | p99.9 | max | calls | target |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n")
	for _, x := range rows {
		l := x.x.Latency
		t := ""
		if x.impl == implKavariFranz {
			t = "p50 < 1 ms: " + strings.Trim(status(l.P50 < 1), "*")
		}
		w("| %s | %s | %s | %.2f ms | %.2f ms | %.2f ms | %.2f ms | %s | %s |\n", sizeName(x.size), implName(x.impl),
			fmtRate(x.x.MsgsPerSec, x.x.Seconds > 0), l.P50, l.P99, l.P999, l.Max, thousands(l.Sent), t)
	}
	w("\nOne goroutine calling `Publish` / `WriteMessages` / `ProduceSync` with one message at a time for %s; latency is\n", r.o.pubDuration/2)
	w("each call's duration (acks all). kafka-go's Writer waits up to its batch timeout (%s) before sending a lone\n", r.o.linger)
	w("message; raw franz-go's `ProduceSync` is not held for its linger (see its p50), and kavari's franz-go transport does not linger.\n\n")
}

func (r *report) writeRSS(w func(string, ...any)) {
	x := r.res["rss"]
	if x == nil || x.RSS == nil {
		return
	}
	w("## RSS over %s messages (kavari publishing and consuming in one process)\n\n", thousands(x.Count))
	if x.Count < 1_000_000 {
		w("The default run uses %s messages to stay short; `go run ./bench -long` runs 1,000,000.\n\n", thousands(x.Count))
	}
	w("| elapsed | handled | RSS | Go heap in use | goroutines |\n| ---: | ---: | ---: | ---: | ---: |\n")
	ss := x.RSS.Samples
	step := max(len(ss)/12, 1)
	for i := 0; i < len(ss); i += step {
		s := ss[i]
		w("| %.1f s | %s | %.1f MiB | %.1f MiB | %d |\n", s.Seconds, thousands(s.Handled), s.RSSMiB, s.HeapMiB, s.Routines)
	}
	if last := ss[len(ss)-1]; (len(ss)-1)%step != 0 {
		w("| %.1f s | %s | %.1f MiB | %.1f MiB | %d |\n", last.Seconds, thousands(last.Handled), last.RSSMiB, last.HeapMiB, last.Routines)
	}
	w("\n%s-byte messages, `PublishAsync` from one goroutine while the consumer (defaults) handles them; RSS sampled every 250 ms.\n", thousands(r.o.rssSize))
	w("Flat means the highest RSS while the second half was handled is within 10 %% (at least 8 MiB) of the highest while\n")
	w("10–50 %% was handled: here %.1f MiB vs %.1f MiB. Throughput: %s msg/s.\n\n", x.RSS.FinalMiB, x.RSS.ReferenceMiB, fmtRate(float64(x.Count)/x.Seconds, x.Seconds > 0))
}

func (r *report) writeMicro(w func(string, ...any)) {
	if r.micro == nil {
		return
	}
	w("## Microbenchmarks (go test, no network)\n\n")
	w("`%s`: the median of the %d runs (the dispatch benchmark uses the embedded kfake broker,\n", r.micro.Command, r.micro.Count)
	w("BenchmarkDispatchMemory the in-memory transport with an empty message, so decode and validation cost next to nothing).\n\n")
	if len(r.micro.Metrics) > 0 {
		w("| benchmark | ns/op | allocs/op | B/op | ns/msg | allocs/msg |\n| --- | ---: | ---: | ---: | ---: | ---: |\n")
		names := make([]string, 0, len(r.micro.Metrics))
		for n := range r.micro.Metrics {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			m := r.micro.Metrics[n]
			cell := func(u string) string {
				if v, ok := m[u]; ok {
					if v >= 100 {
						return thousands(int(math.Round(v)))
					}
					return fmt.Sprintf("%.1f", v)
				}
				return "–"
			}
			w("| %s | %s | %s | %s | %s | %s |\n", n, cell("ns/op"), cell("allocs/op"), cell("B/op"), cell("ns/msg"), cell("allocs/msg"))
		}
		kv, ok1 := r.micro.get("BenchmarkDispatch/kavari", "ns/msg")
		kg, ok2 := r.micro.get("BenchmarkDispatch/kafka-go", "ns/msg")
		ka, ok3 := r.micro.get("BenchmarkDispatch/kavari", "allocs/msg")
		ga, ok4 := r.micro.get("BenchmarkDispatch/kafka-go", "allocs/msg")
		if ok1 && ok2 && ok3 && ok4 {
			w("\nDispatch overhead of kavari over a raw partition Reader on the same records: %.0f ns and %.1f allocations per message\n", kv-kg, ka-ga)
			w("(both include the in-process broker's own work, which cancels out in the difference).\n")
		}
	}
	if len(r.micro.Output) > 0 {
		w("\nEvery run, as go test printed it:\n\n```\n%s\n```\n", strings.Join(r.micro.Output, "\n"))
	}
	if r.micro.Err != "" {
		w("\ngo test failed: %s\n", strings.ReplaceAll(r.micro.Err, "\n", " "))
	}
	w("\n")
}
