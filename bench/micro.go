package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// microResults are the go test benchmarks of the root package that the
// report needs: encode+validate per message (bench_test.go) and dispatch
// overhead per message (dispatch_bench_test.go).
type microResults struct {
	Command string
	Err     string
	// Metrics by benchmark name (without the -GOMAXPROCS suffix), then unit
	// ("ns/op", "allocs/op", "ns/msg", ...): the median of the -count runs.
	Metrics map[string]map[string]float64
	// Count is the runs of each benchmark (go test -count).
	Count int
	// Output is go test's benchmark lines, every run, as printed.
	Output []string
}

// microCount is go test's -count for the microbenchmarks: the report shows
// the median of the runs, and every run's line.
const microCount = 5

func (m *microResults) get(name, unit string) (float64, bool) {
	if m == nil {
		return 0, false
	}
	v, ok := m.Metrics[name][unit]
	return v, ok
}

func (b *bench) microbench() {
	if !b.want("micro") || b.o.skipMicro {
		return
	}
	args := []string{"test", "-run", "^$", "-bench", "^(BenchmarkEncodeValidate|BenchmarkDecode|BenchmarkDispatch|BenchmarkDispatchMemory)$",
		"-benchmem", "-count", strconv.Itoa(microCount), "."}
	b.micro = &microResults{Command: "go " + strings.Join(args, " "), Metrics: map[string]map[string]float64{}, Count: microCount}
	logf("micro: %s", b.micro.Command)
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = b.o.root
	// The embedded broker of the dispatch benchmark, not KAVARI_BROKERS.
	cmd.Env = append(os.Environ(), "KAVARI_BROKERS=")
	if b.toolchain != "" {
		cmd.Env = append(cmd.Env, "GOTOOLCHAIN="+b.toolchain)
		b.micro.Command = "GOTOOLCHAIN=" + b.toolchain + " " + b.micro.Command
	}
	out, err := cmd.CombinedOutput()
	runs := map[string]map[string][]float64{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		name := f[0]
		if i := strings.LastIndex(name, "-"); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i]
			}
		}
		b.micro.Output = append(b.micro.Output, strings.TrimSpace(line))
		if runs[name] == nil {
			runs[name] = map[string][]float64{}
		}
		for i := 2; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				runs[name][f[i+1]] = append(runs[name][f[i+1]], v)
			}
		}
	}
	for name, units := range runs {
		ms := map[string]float64{}
		for u, vs := range units {
			ms[u] = median(vs)
		}
		b.micro.Metrics[name] = ms
	}
	if err != nil {
		b.micro.Err = fmt.Sprintf("%v: %s", err, lastLines(string(out), 15))
		b.fail("micro", fmt.Errorf("%s", b.micro.Err))
		return
	}
	logf("micro: %d benchmarks", len(b.micro.Metrics))
}

// names returns the benchmarks named base or base/..., sorted.
func (m *microResults) names(base string) []string {
	if m == nil {
		return nil
	}
	var out []string
	for n := range m.Metrics {
		if n == base || strings.HasPrefix(n, base+"/") {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// median returns the median of vs (the mean of the middle two for an even
// count).
func median(vs []float64) float64 {
	vs = slices.Clone(vs)
	slices.Sort(vs)
	n := len(vs)
	if n%2 == 1 {
		return vs[n/2]
	}
	return (vs[n/2-1] + vs[n/2]) / 2
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
