// Command bench measures kavari against raw segmentio/kafka-go, franz-go and
// the Python kavari 0.2.2.1 on one real Apache Kafka broker, and writes the
// results to docs/benchmarks.md.
//
//	go run ./bench              # default run, about 15 minutes on 2 cores
//	go run ./bench -toolchains go1.26.8,go1.27.3   # every Go workload under both, one report
//	go run ./bench -long        # also publishes+consumes 1,000,000 messages for the RSS check
//	go run ./bench -only 'publish|e2e' -out /tmp/b.md
//	go run ./bench -h           # every flag
//
// It starts one Apache Kafka broker itself through internal/kafkaproc (or
// uses KAVARI_BROKERS when set), recreates the topic before every workload,
// and runs every Go client in its own subprocess (the bench binary re-executes
// itself with -worker), so peak RSS and allocations are per client. See
// bench/README.md for the workloads and how each figure is computed.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/kavari-go/kavari/internal/kafkaproc"
	"github.com/kavari-go/kavari/internal/pgproc"
)

// options are the command's flags.
type options struct {
	brokers     string
	out         string
	only        string
	long        bool
	skipPython  bool
	skipMicro   bool
	partitions  int
	callers     int
	batch       int
	linger      time.Duration
	pubDuration time.Duration
	pySyncN     int
	consumeN    int
	pyConsumeN  int
	e2eDuration time.Duration
	pcMessages  int
	rssN        int
	rssSize     int
	heap        string
	seed        int64
	workerTO    time.Duration
	profile     string
	reps        int
	pcInFlight  int
	ioN         int
	slowKeyN    int
	eosN        int
	ioInFlight  int
	retryN      int
	retryRate   int
	toolchains  string
	pgDSN       string

	onlyRE *regexp.Regexp
	root   string // repository root (holds go.work)
}

func main() {
	worker := flag.String("worker", "", "internal: run one workload described by this JSON spec and print its result")
	var o options
	flag.StringVar(&o.brokers, "brokers", os.Getenv(kafkaproc.EnvBrokers), "bootstrap brokers host:port,...; empty starts one Apache Kafka broker (env KAVARI_BROKERS)")
	flag.StringVar(&o.out, "out", "docs/benchmarks.md", "report to write, relative to the repository root unless absolute; empty writes none")
	flag.StringVar(&o.only, "only", "", "run only workloads whose id matches this regexp (ids: publish/..., consume/... (with +batch and +batch+poison: batch handlers), scale/..., idle/..., io1ms/..., slowkey/..., bulk2ms/..., e2e/..., eos/..., eos-e2e/..., retry/..., parallel/..., outbox/..., rss, python/..., micro)")
	flag.StringVar(&o.pgDSN, "pg-dsn", os.Getenv(pgproc.EnvDSN), "PostgreSQL of the outbox/ workloads (a postgres:// DSN); empty starts one (env KAVARI_PG_DSN)")
	flag.BoolVar(&o.long, "long", false, "RSS check over 1,000,000 messages instead of -rss-n")
	flag.BoolVar(&o.skipPython, "skip-python", false, "skip the Python kavari runs (and the venv creation)")
	flag.BoolVar(&o.skipMicro, "skip-micro", false, "skip the go test microbenchmarks (encode+validate, dispatch)")
	flag.IntVar(&o.partitions, "partitions", 3, "partitions of the publish, consume, e2e and RSS topics")
	flag.IntVar(&o.callers, "callers", 64, "concurrent callers of the synchronous publish workloads")
	flag.IntVar(&o.batch, "batch", 1000, "messages per batch call, and batch size of every producer")
	flag.DurationVar(&o.linger, "linger", 2*time.Millisecond, "batch timeout / linger of every producer (kavari's default)")
	flag.DurationVar(&o.pubDuration, "pub-duration", 4*time.Second, "duration of each publish workload (the one-caller runs take half)")
	flag.IntVar(&o.pySyncN, "py-pub-n", 1000, "messages published by the Python kavari (per size)")
	flag.IntVar(&o.consumeN, "consume-n", 300_000, "messages per consume workload (100 B and 1 KiB)")
	flag.IntVar(&o.pyConsumeN, "py-consume-n", 50_000, "messages consumed by the Python kavari (per size)")
	flag.DurationVar(&o.e2eDuration, "e2e-duration", 10*time.Second, "duration of each paced end-to-end latency run")
	flag.IntVar(&o.pcMessages, "pc-n", 10_000, "messages of the parallel-consumer workload")
	flag.IntVar(&o.pcInFlight, "pc-max-in-flight", 100, "kavari MaxInFlight of the parallel-consumer workload (its concurrency; the floor divides by it)")
	flag.IntVar(&o.ioN, "io-n", 100_000, "messages of the 1 ms I/O handler workload (io1ms/...)")
	flag.IntVar(&o.slowKeyN, "slowkey-n", 400_000, "messages of the slow-key workload (slowkey/...)")
	flag.IntVar(&o.eosN, "eos-n", 300_000, "inputs of the exactly-once consume → publish workloads (eos/...)")
	flag.IntVar(&o.ioInFlight, "io-max-in-flight", 256, "kavari MaxInFlight of the 1 ms I/O handler workload (kavari's default; the ceiling is it ÷ 1 ms)")
	flag.IntVar(&o.retryN, "retry-n", 1_000_000, "messages of each retry workload's backlog (retry/...; 1 % fail once)")
	flag.IntVar(&o.retryRate, "retry-rate", 1000, "rate of each retry workload's paced phase, messages per second (for -e2e-duration)")
	flag.IntVar(&o.rssN, "rss-n", 200_000, "messages published and consumed by the RSS run without -long")
	flag.IntVar(&o.rssSize, "rss-size", 1024, "message size of the RSS run, bytes")
	flag.StringVar(&o.heap, "heap", "1g", "JVM heap of the broker the command starts")
	flag.Int64Var(&o.seed, "seed", 1, "seed of the parallel-consumer sleeps")
	flag.DurationVar(&o.workerTO, "worker-timeout", 5*time.Minute, "kill a workload that runs longer than this")
	flag.IntVar(&o.reps, "reps", 3, "repetitions of each publish and consume workload, interleaved; the fastest counts")
	flag.StringVar(&o.toolchains, "toolchains", "", "comma-separated Go toolchains (e.g. go1.26.8,go1.27.3): run every Go workload and the microbenchmarks once per toolchain, workers built with GOTOOLCHAIN set, into one report; empty runs the toolchain that built the bench")
	flag.StringVar(&o.profile, "cpuprofile", "", "write a CPU profile of every Go worker into this directory (<workload>.pprof), and a heap profile taken at its highest live heap (<workload>.heap.pprof)")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: go run ./bench [flags]\n\nRuns the kavari benchmarks against one real Apache Kafka broker and writes docs/benchmarks.md.\nSee bench/README.md.\n\nFlags:\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *worker != "" {
		os.Exit(workerMain(*worker))
	}
	if o.long {
		o.rssN = 1_000_000
	}
	var err error
	if o.onlyRE, err = regexp.Compile(o.only); err != nil {
		fmt.Fprintf(os.Stderr, "bench: -only: %v\n", err)
		os.Exit(2)
	}
	if o.root, err = repoRoot(); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(2)
	}
	// If "go run" (our parent) is killed, stop the broker too.
	kafkaproc.SetParentDeathSignal(syscall.SIGTERM)
	os.Exit(run(&o))
}

func run(o *options) int {
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	begin := time.Now()
	env := machineInfo()
	env.Command = commandLine()
	env.Revision = revision(o.root)
	env.LoadBefore = loadAvg()

	brokers, version, stop, err := startBroker(ctx, o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	defer stop()
	env.Brokers, env.BrokerVersion = brokers, version
	logf("broker: Apache Kafka %s at %s", version, strings.Join(brokers, ","))

	var reps []*report
	var failed bool
	for i, tc := range toolchainList(o.toolchains) {
		b := &bench{o: o, brokers: brokers, ctx: ctx, adm: newAdmin(brokers), toolchain: tc}
		if tc != "" {
			logf("toolchain %s: building the workers...", tc)
			exe, err := buildWith(ctx, o.root, tc)
			if err != nil {
				fmt.Fprintf(os.Stderr, "bench: toolchain %s: %v\n", tc, err)
				return 1
			}
			defer os.RemoveAll(filepath.Dir(exe))
			b.exe = exe
		}
		if i > 0 {
			b.noPython = "the Python kavari ran once, in the first toolchain's pass"
		}
		b.all()
		if ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "bench: interrupted; no report written")
			return 130
		}
		rep := buildReport(o, env, b.results, b.micro, b.py, b.failures)
		rep.toolchain = tc
		reps = append(reps, rep)
		failed = failed || len(b.failures) > 0
	}
	env.LoadAfter = loadAvg()
	env.Elapsed = time.Since(begin)
	for _, r := range reps {
		r.env.LoadAfter, r.env.Elapsed = env.LoadAfter, env.Elapsed
	}
	rep := &multiReport{env: env, reps: reps}
	fmt.Print(rep.summary())
	if o.out != "" {
		path := o.out
		if !filepath.IsAbs(path) {
			path = filepath.Join(o.root, path)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
			return 1
		}
		if err := os.WriteFile(path, []byte(rep.markdown()), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
			return 1
		}
		logf("wrote %s (%s)", path, env.Elapsed.Round(time.Second))
	}
	if failed {
		return 1
	}
	return 0
}

// toolchainList splits -toolchains; one empty name means the toolchain that
// built this binary.
func toolchainList(s string) []string {
	var out []string
	for _, tc := range strings.Split(s, ",") {
		if tc = strings.TrimSpace(tc); tc != "" {
			out = append(out, tc)
		}
	}
	if len(out) == 0 {
		return []string{""}
	}
	return out
}

// buildWith builds the bench command with toolchain tc (GOTOOLCHAIN=tc) into
// a new temporary directory and returns the binary's path.
func buildWith(ctx context.Context, root, tc string) (string, error) {
	dir, err := os.MkdirTemp("", "kavari-bench-")
	if err != nil {
		return "", err
	}
	exe := filepath.Join(dir, "bench-"+tc)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", exe, "./bench")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN="+tc)
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("go build: %v: %s", err, out)
	}
	return exe, nil
}

// startBroker returns the brokers to use: KAVARI_BROKERS / -brokers, or one
// Apache Kafka broker started here.
func startBroker(ctx context.Context, o *options) (brokers []string, version string, stop func(), err error) {
	if o.brokers != "" {
		for _, b := range strings.Split(o.brokers, ",") {
			if b = strings.TrimSpace(b); b != "" {
				brokers = append(brokers, b)
			}
		}
		version = os.Getenv(kafkaproc.EnvVersion)
		if version == "" {
			version = "unknown (external)"
		}
		return brokers, version, func() {}, nil
	}
	lib := os.Getenv(kafkaproc.EnvLib)
	if lib == "" {
		logf("fetching Apache Kafka %s (cached in .cache/kafka)...", kafkaproc.DefaultVersion)
		if lib, err = kafkaproc.Fetch(ctx, filepath.Join(o.root, ".cache", "kafka")); err != nil {
			return nil, "", nil, err
		}
	}
	begin := time.Now()
	cl, err := kafkaproc.Start(ctx, kafkaproc.Options{
		Nodes:   1,
		LibDir:  lib,
		Heap:    o.heap,
		FullJIT: true,
		// Only the bench creates topics: a stray metadata request must not
		// auto-create the topic between its deletion and re-creation.
		ServerProps: map[string]string{"auto.create.topics.enable": "false"},
	})
	if err != nil {
		return nil, "", nil, err
	}
	logf("broker started in %s", time.Since(begin).Round(100*time.Millisecond))
	return cl.Brokers(), cl.Version(), func() { _ = cl.Stop() }, nil
}

// repoRoot is the nearest directory at or above the working directory
// holding go.work (bench/ has a go.mod of its own).
func repoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.work above %s: run from the repository", wd)
		}
	}
}

func commandLine() string {
	args := []string{"go run ./bench"}
	for _, a := range os.Args[1:] {
		if strings.ContainsAny(a, " |*?'\"$") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		args = append(args, a)
	}
	return strings.Join(args, " ")
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}
