package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kavari-go/kavari/internal/kafkaproc"
)

// spec describes one workload run in a worker subprocess.
type spec struct {
	ID          string        `json:"id"`       // e.g. publish/100B/sync/kavari
	Workload    string        `json:"workload"` // publish, consume, e2e, parallel, rss, retry, ...
	Impl        string        `json:"impl"`     // kavari, kafka-go, franz-go
	Mode        string        `json:"mode"`     // publish: sync, batch, async
	Brokers     []string      `json:"brokers"`
	Topic       string        `json:"topic"`
	Partitions  int           `json:"partitions"`
	Count       int           `json:"count"`
	Size        int           `json:"size"` // JSON value bytes
	Callers     int           `json:"callers"`
	Batch       int           `json:"batch"`
	Linger      time.Duration `json:"linger"`
	Group       string        `json:"group"`
	Rate        int           `json:"rate"` // e2e: messages per second
	Duration    time.Duration `json:"duration"`
	Keys        int           `json:"keys"`          // parallel, scale, io: distinct keys
	MaxInFlight int           `json:"max_in_flight"` // parallel, io
	// SlowPartition is the slow key's partition (slowkey).
	SlowPartition int    `json:"slow_partition,omitempty"`
	Profile       string `json:"profile,omitempty"` // CPU profile file
}

// result is what a worker measured.
type result struct {
	ID       string `json:"id"`
	Workload string `json:"workload"`
	Impl     string `json:"impl"`
	Mode     string `json:"mode"`
	Size     int    `json:"size"`
	Count    int    `json:"count"`  // messages acknowledged / handled
	Errors   int    `json:"errors"` // failed publishes, missing messages
	// Seconds is the measured interval: first call to last acknowledgement
	// for publishing, first to last handled record for consuming.
	Seconds    float64 `json:"seconds"`
	MsgsPerSec float64 `json:"msgs_per_sec"`
	MiBPerSec  float64 `json:"mib_per_sec"` // values only
	// Runs are the rates of every repetition; the other fields are the
	// fastest one's.
	Runs []float64 `json:"runs,omitempty"`
	// FirstSeconds is, for consumers, the time from creating the client to
	// the first handled record (group join, assignment, first fetch).
	FirstSeconds float64 `json:"first_seconds,omitempty"`
	PeakRSSMiB   float64 `json:"peak_rss_mib"`
	AllocsPerMsg float64 `json:"allocs_per_msg"`
	BytesPerMsg  float64 `json:"bytes_per_msg"` // heap bytes allocated per message
	// CPUNsPerMsg is, for consumers, the process's CPU time (user and
	// system) from creating the client to the last handled record, ÷
	// records: fetching, decoding and what a client does before handing a
	// record over happen before the first record is handled.
	CPUNsPerMsg float64        `json:"cpu_ns_per_msg,omitempty"`
	Latency     *latencyStats  `json:"latency,omitempty"`
	Parallel    *parallelStats `json:"parallel,omitempty"`
	RSS         *rssStats      `json:"rss,omitempty"`
	Idle        *idleStats     `json:"idle,omitempty"`
	IO          *ioStats       `json:"io,omitempty"`
	Bulk        *bulkStats     `json:"bulk,omitempty"`
	Outbox      *outboxStats   `json:"outbox,omitempty"`
	Retry       *retryStats    `json:"retry,omitempty"`
	SlowKey     *slowKeyStats  `json:"slow_key,omitempty"`
	// GoVersion is runtime.Version() of the worker that measured this.
	GoVersion string `json:"go_version"`
	Note      string `json:"note,omitempty"`
}

type latencyStats struct {
	Rate         int     `json:"rate"`
	Sent         int     `json:"sent"`
	Received     int     `json:"received"`
	AchievedRate float64 `json:"achieved_rate"`
	P50, P99     float64 // milliseconds
	P999, Max    float64
}

type parallelStats struct {
	Keys         int     `json:"keys"`
	WallSeconds  float64 `json:"wall_seconds"`  // first handler start to last handler end
	TotalSeconds float64 `json:"total_seconds"` // Start to last handler end
	FloorSeconds float64 `json:"floor_seconds"`
	// SleptFloorSecs is the floor computed from the sleeps as measured
	// around time.Sleep: Go rounds timer waits up to the next millisecond
	// (epoll_wait has millisecond resolution), about +0.5 ms per sleep.
	SleptFloorSecs  float64 `json:"slept_floor_seconds"`
	SleptSeconds    float64 `json:"slept_seconds"`
	MaxKeySeconds   float64 `json:"max_key_seconds"`
	SumSleepSeconds float64 `json:"sum_sleep_seconds"`
	OrderViolations int     `json:"order_violations"`
	MaxConcurrent   int     `json:"max_concurrent"`
}

type rssSample struct {
	Seconds  float64 `json:"s"`
	Handled  int     `json:"n"`
	RSSMiB   float64 `json:"rss"`
	HeapMiB  float64 `json:"heap"`
	Routines int     `json:"g"`
}

type rssStats struct {
	Samples []rssSample `json:"samples"`
	// Reference is the highest RSS while the first half of the messages was
	// handled after a 10 % warm-up; Final the highest in the second half.
	ReferenceMiB float64 `json:"reference_mib"`
	FinalMiB     float64 `json:"final_mib"`
	Flat         bool    `json:"flat"`
}

// workerMain runs the workload of specJSON and prints its result as one
// JSON line on stdout.
func workerMain(specJSON string) int {
	var s spec
	if err := json.Unmarshal([]byte(specJSON), &s); err != nil {
		fmt.Fprintf(os.Stderr, "bench worker: %v\n", err)
		return 2
	}
	// Die with the coordinator.
	kafkaproc.SetParentDeathSignal(syscall.SIGKILL)
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	if s.Profile != "" {
		f, err := os.Create(s.Profile)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench worker: %v\n", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(os.Stderr, "bench worker: %v\n", err)
			return 1
		}
		defer pprof.StopCPUProfile()
		stop := peakHeapProfile(strings.TrimSuffix(s.Profile, ".pprof") + ".heap.pprof")
		defer stop()
	}
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	var res *result
	var err error
	switch s.Workload {
	case "publish":
		res, err = runPublish(ctx, &s)
	case "consume":
		res, err = runConsume(ctx, &s)
	case "e2e":
		res, err = runE2E(ctx, &s)
	case "parallel":
		res, err = runParallel(ctx, &s)
	case "rss":
		res, err = runRSS(ctx, &s)
	case "idle":
		res, err = runIdle(ctx, &s)
	case "io":
		res, err = runIO(ctx, &s)
	case "bulk":
		res, err = runBulk(ctx, &s)
	case "eos":
		res, err = runEOS(ctx, &s)
	case "eos-e2e":
		res, err = runEOSE2E(ctx, &s)
	case "outbox":
		res, err = runOutbox(ctx, &s)
	case "retry":
		res, err = runRetry(ctx, &s)
	case "slowkey":
		res, err = runSlowKey(ctx, &s)
	default:
		err = fmt.Errorf("unknown workload %q", s.Workload)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench worker %s: %v\n", s.ID, err)
		return 1
	}
	runtime.ReadMemStats(&m1)
	res.ID, res.Workload, res.Impl, res.Mode, res.Size = s.ID, s.Workload, s.Impl, s.Mode, s.Size
	res.GoVersion = runtime.Version()
	if res.Count > 0 {
		res.AllocsPerMsg = float64(m1.Mallocs-m0.Mallocs) / float64(res.Count)
		res.BytesPerMsg = float64(m1.TotalAlloc-m0.TotalAlloc) / float64(res.Count)
	}
	if res.Seconds > 0 {
		res.MsgsPerSec = float64(res.Count) / res.Seconds
		res.MiBPerSec = float64(res.Count) * float64(s.Size) / res.Seconds / (1 << 20)
	}
	res.PeakRSSMiB = float64(procStatusKiB("VmHWM")) / 1024
	b, _ := json.Marshal(res)
	fmt.Println(string(b))
	return 0
}

// spawn runs s in a subprocess of exe (this binary when empty: a bench
// binary built with another toolchain for -toolchains) and returns its
// result.
func spawn(ctx context.Context, exe string, s spec, timeout time.Duration) (*result, error) {
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	b, _ := json.Marshal(s)
	cmd := exec.Command(exe, "-worker", string(b))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	waited, err := kafkaproc.StartTied(cmd, syscall.SIGKILL)
	if err != nil {
		return nil, err
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err = <-waited:
	case <-t.C:
		_ = cmd.Process.Kill()
		<-waited
		return nil, fmt.Errorf("killed after %s", timeout)
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-waited
		return nil, ctx.Err()
	}
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	var res result
	sc := bufio.NewScanner(&out)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	var last string
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); strings.HasPrefix(l, "{") {
			last = l
		}
	}
	if err := json.Unmarshal([]byte(last), &res); err != nil {
		return nil, fmt.Errorf("worker output %q: %w", last, err)
	}
	return &res, nil
}

// procStatusKiB reads a "kB" field (VmHWM, VmRSS) of /proc/self/status;
// elsewhere it falls back to getrusage's maxrss.
func procStatusKiB(field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, field+":"); ok {
				n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
				return n
			}
		}
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		return ru.Maxrss
	}
	return 0
}

// peakHeapProfile samples the live heap every 20 ms and keeps the heap
// profile taken at its highest (the in-use figures of the last GC), which
// stop writes to path: what a client holds when its memory peaks.
func peakHeapProfile(path string) (stop func()) {
	done, finished := make(chan struct{}), make(chan struct{})
	var best bytes.Buffer
	go func() {
		defer close(finished)
		sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		var peak uint64
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			metrics.Read(sample)
			if live := sample[0].Value.Uint64(); live > peak+peak/10 {
				peak = live
				best.Reset()
				_ = pprof.Lookup("heap").WriteTo(&best, 0)
			}
		}
	}()
	return func() {
		close(done)
		<-finished
		_ = os.WriteFile(path, best.Bytes(), 0o644)
	}
}
