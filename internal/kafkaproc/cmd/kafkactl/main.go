// Command kafkactl fetches and runs real Apache Kafka brokers for tests.
//
// Usage:
//
//	kafkactl fetch [-version V] [-cache DIR]
//	kafkactl run   [-nodes 1|3] [-dir DIR] [-keep] [...] -- command [args...]
//	kafkactl start [-nodes 1|3] [-dir DIR] [...]
//
// "fetch" only materialises the Kafka jars into the cache (by default
// <repo>/.cache/kafka, where <repo> is the nearest directory above the
// working directory holding go.mod).
//
// "run" fetches, starts a cluster, runs the command with KAVARI_BROKERS,
// KAVARI_KAFKA_VERSION and KAVARI_KAFKA_LIB exported (with -secure also the
// secured listeners' addresses, the CA file and a SASL user), stops the cluster when
// the command ends (or when kafkactl gets SIGINT/SIGTERM, which is passed on
// to the command) and exits with the command's exit code. Broker logs live
// in DIR (default: a fresh directory under <cache>/runs) and are kept when
// the command fails or -keep is given.
//
// "start" fetches and starts a cluster, prints shell export lines for the
// variables above on stdout and stays in the foreground until SIGINT or
// SIGTERM, then stops the cluster.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/kavari-go/kavari/internal/kafkaproc"
)

func main() {
	// If "go run" (our parent) is killed, get SIGTERM and clean up.
	kafkaproc.SetParentDeathSignal(syscall.SIGTERM)
	os.Exit(realMain(os.Args[1:]))
}

func usage() {
	fmt.Fprint(os.Stderr, `usage:
  kafkactl fetch [-version V] [-cache DIR]
  kafkactl run   [-nodes 1|3] [-dir DIR] [-keep] [flags] -- command [args...]
  kafkactl start [-nodes 1|3] [-dir DIR] [flags]
run "kafkactl <subcommand> -h" for the flags.
`)
}

// common holds the flags shared by the subcommands.
type common struct {
	version string
	cache   string
	nodes   int
	dir     string
	heap    string
	jvmOpts string
	fullJIT bool
	secure  bool
	timeout time.Duration
	verbose bool
}

func (c *common) register(fs *flag.FlagSet, cluster, bench bool) {
	fs.StringVar(&c.version, "version", envOr("KAVARI_KAFKA_FETCH_VERSION", kafkaproc.DefaultVersion), "Kafka version to fetch (env KAVARI_KAFKA_FETCH_VERSION)")
	fs.StringVar(&c.cache, "cache", os.Getenv("KAVARI_KAFKA_CACHE"), "cache directory (default <repo>/.cache/kafka; env KAVARI_KAFKA_CACHE)")
	if cluster {
		fs.IntVar(&c.nodes, "nodes", 1, "number of nodes: 1 or 3")
		fs.StringVar(&c.dir, "dir", "", "working directory for node data and logs")
		fs.StringVar(&c.heap, "heap", "512m", "JVM max heap per node")
		fs.StringVar(&c.jvmOpts, "jvm-opts", os.Getenv("KAVARI_KAFKA_JVM_OPTS"), "extra JVM options, space-separated (env KAVARI_KAFKA_JVM_OPTS)")
		fs.DurationVar(&c.timeout, "timeout", 120*time.Second, "start-up timeout")
		fs.BoolVar(&c.verbose, "v", false, "print progress messages")
		fs.BoolVar(&c.fullJIT, "full-jit", bench, "run the JVMs with the C2 JIT (slower start, faster steady state)")
		fs.BoolVar(&c.secure, "secure", false, "add SSL, SASL_PLAINTEXT and SASL_SSL listeners and export KAVARI_TLS_CA, KAVARI_SSL_BROKERS, KAVARI_SASL_BROKERS, KAVARI_SASL_SSL_BROKERS, KAVARI_SASL_USER and KAVARI_SASL_PASSWORD")
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func realMain(args []string) int {
	if len(args) == 0 {
		usage()
		return 2
	}
	sub, args := args[0], args[1:]
	switch sub {
	case "fetch":
		return cmdFetch(args)
	case "run":
		return cmdRun(args)
	case "start":
		return cmdStart(args)
	case "-h", "-help", "--help", "help":
		usage()
		return 0
	default:
		fmt.Fprintf(os.Stderr, "kafkactl: unknown subcommand %q\n", sub)
		usage()
		return 2
	}
}

// cacheDir returns the cache directory: the flag, or <repo>/.cache/kafka.
func (c *common) cacheDir() (string, error) {
	if c.cache != "" {
		return filepath.Abs(c.cache)
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return filepath.Join(d, ".cache", "kafka"), nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod above %s; pass -cache", wd)
		}
	}
}

func (c *common) fetch(ctx context.Context) (string, error) {
	cache, err := c.cacheDir()
	if err != nil {
		return "", err
	}
	begin := time.Now()
	marker := filepath.Join(cache, c.version, ".complete")
	if _, err := os.Stat(marker); err != nil {
		fmt.Fprintf(os.Stderr, "kafkactl: fetching Kafka %s into %s (mvn)...\n", c.version, cache)
	}
	lib, err := kafkaproc.FetchVersion(ctx, cache, c.version)
	if err != nil {
		return "", err
	}
	if c.verbose {
		fmt.Fprintf(os.Stderr, "kafkactl: Kafka %s jars in %s (%s)\n", c.version, lib, time.Since(begin).Round(time.Millisecond))
	}
	return lib, nil
}

// signalContext catches SIGINT/SIGTERM. Until release is called, the first
// such signal cancels ctx (aborting a fetch or start-up); after release,
// signals are left on sigs for the caller (to forward or to stop). Call
// stop when done.
func signalContext() (ctx context.Context, sigs chan os.Signal, release, stop func()) {
	sigs = make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	ctx, cancel := context.WithCancel(context.Background())
	quit := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		select {
		case s := <-sigs:
			fmt.Fprintf(os.Stderr, "kafkactl: got %v, aborting\n", s)
			cancel()
		case <-quit:
		}
	}()
	var released bool
	release = func() {
		if !released {
			released = true
			close(quit)
			<-exited
		}
	}
	stop = func() { release(); cancel(); signal.Stop(sigs) }
	return ctx, sigs, release, stop
}

func cmdFetch(args []string) int {
	var c common
	fs := flag.NewFlagSet("fetch", flag.ContinueOnError)
	c.register(fs, false, false)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, _, _, stop := signalContext()
	defer stop()
	c.verbose = true
	lib, err := c.fetch(ctx)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kafkactl: %v\n", err)
		return 1
	}
	fmt.Println(lib)
	return 0
}

func (c *common) start(ctx context.Context, lib, dir string) (*kafkaproc.Cluster, error) {
	opts := kafkaproc.Options{
		Nodes:        c.nodes,
		Dir:          dir,
		LibDir:       lib,
		Heap:         c.heap,
		JVMOpts:      strings.Fields(c.jvmOpts),
		FullJIT:      c.fullJIT,
		StartTimeout: c.timeout,
	}
	if c.secure {
		opts.Security = &kafkaproc.Security{}
	}
	if c.verbose {
		opts.Logf = func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }
	}
	begin := time.Now()
	cl, err := kafkaproc.Start(ctx, opts)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "kafkactl: Kafka %s, %d node(s) ready in %s: %s\n",
		cl.Version(), c.nodes, time.Since(begin).Round(100*time.Millisecond), strings.Join(cl.Brokers(), ","))
	return cl, nil
}

func clusterEnv(cl *kafkaproc.Cluster, lib string) []string {
	env := []string{
		kafkaproc.EnvBrokers + "=" + strings.Join(cl.Brokers(), ","),
		kafkaproc.EnvVersion + "=" + cl.Version(),
		kafkaproc.EnvLib + "=" + lib,
	}
	if sec := cl.Security(); sec != nil {
		user, pass := sec.User()
		env = append(env,
			kafkaproc.EnvTLSCA+"="+sec.CAFile,
			kafkaproc.EnvSSLBrokers+"="+strings.Join(sec.SSL, ","),
			kafkaproc.EnvSASLBrokers+"="+strings.Join(sec.SASLPlaintext, ","),
			kafkaproc.EnvSASLSSLBrokers+"="+strings.Join(sec.SASLSSL, ","),
			kafkaproc.EnvSASLUser+"="+user,
			kafkaproc.EnvSASLPassword+"="+pass,
		)
	}
	return env
}

func cmdRun(args []string) int {
	var c common
	var keep bool
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	c.register(fs, true, false)
	fs.BoolVar(&keep, "keep", false, "keep the broker data and logs even if the command succeeds")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	command := fs.Args()
	if len(command) == 0 {
		fmt.Fprintln(os.Stderr, "kafkactl run: missing command (kafkactl run [flags] -- command [args...])")
		return 2
	}
	ctx, sigs, release, stop := signalContext()
	defer stop()

	lib, err := c.fetch(ctx)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kafkactl: %v\n", err)
		return 1
	}
	dir := c.dir
	ownDir := false
	if dir == "" {
		cache, _ := c.cacheDir()
		runs := filepath.Join(cache, "runs")
		pruneOldRuns(runs, 24*time.Hour)
		if err := os.MkdirAll(runs, 0o755); err != nil {
			fmt.Fprintf(os.Stderr, "kafkactl: %v\n", err)
			return 1
		}
		if dir, err = os.MkdirTemp(runs, time.Now().Format("20060102-150405-")); err != nil {
			fmt.Fprintf(os.Stderr, "kafkactl: %v\n", err)
			return 1
		}
		ownDir = true
	}
	cl, err := c.start(ctx, lib, dir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kafkactl: %v\nkafkactl: broker files kept in %s\n", err, dir)
		return 1
	}
	release()
	code := 130
	if ctx.Err() == nil { // no signal arrived while starting
		code = runCommand(command, append(os.Environ(), clusterEnv(cl, lib)...), sigs)
	}
	if err := cl.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "kafkactl: stopping Kafka: %v\n", err)
	}
	if ownDir && code == 0 && !keep {
		_ = os.RemoveAll(dir)
	} else {
		fmt.Fprintf(os.Stderr, "kafkactl: broker logs kept in %s\n", dir)
	}
	return code
}

// runCommand runs command with env, passing SIGINT/SIGTERM received on sigs
// to it, and returns its exit code (128+signal when it was killed).
func runCommand(command []string, env []string, sigs chan os.Signal) int {
	cmd := exec.Command(command[0], command[1:]...)
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// If kafkactl dies, the command gets SIGTERM (Linux).
	waited, err := kafkaproc.StartTied(cmd, syscall.SIGTERM)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kafkactl: %v\n", err)
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return 127
		}
		return 126
	}
	var werr error
	var killTimer <-chan time.Time
loop:
	for {
		select {
		case werr = <-waited:
			break loop
		case s := <-sigs:
			fmt.Fprintf(os.Stderr, "kafkactl: got %v, passing it on to %s\n", s, command[0])
			_ = cmd.Process.Signal(s)
			if killTimer == nil {
				killTimer = time.After(30 * time.Second)
			}
		case <-killTimer:
			fmt.Fprintf(os.Stderr, "kafkactl: %s still running 30s after the signal, killing it\n", command[0])
			_ = cmd.Process.Kill()
		}
	}
	if werr == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(werr, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	fmt.Fprintf(os.Stderr, "kafkactl: %v\n", werr)
	return 1
}

func cmdStart(args []string) int {
	var c common
	fs := flag.NewFlagSet("start", flag.ContinueOnError)
	c.register(fs, true, true)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, sigs, release, stop := signalContext()
	defer stop()
	lib, err := c.fetch(ctx)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kafkactl: %v\n", err)
		return 1
	}
	cl, err := c.start(ctx, lib, c.dir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kafkactl: %v\n", err)
		return 1
	}
	for _, kv := range clusterEnv(cl, lib) {
		k, v, _ := strings.Cut(kv, "=")
		fmt.Printf("export %s=%q\n", k, v)
	}
	fmt.Fprintf(os.Stderr, "kafkactl: data and logs in %s; press Ctrl-C to stop\n", cl.Dir())
	release()
	if ctx.Err() == nil {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "kafkactl: got %v, stopping Kafka\n", s)
	}
	if err := cl.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "kafkactl: %v\n", err)
		return 1
	}
	return 0
}

// pruneOldRuns removes run directories older than age (left behind by
// failed runs).
func pruneOldRuns(runs string, age time.Duration) {
	entries, err := os.ReadDir(runs)
	if err != nil {
		return
	}
	for _, e := range entries {
		if info, err := e.Info(); err == nil && e.IsDir() && time.Since(info.ModTime()) > age {
			_ = os.RemoveAll(filepath.Join(runs, e.Name()))
		}
	}
}
