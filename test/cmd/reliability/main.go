// Command reliability runs kavari's fault suite (test/fault) against a real
// Apache Kafka and writes the reliability report, docs/reliability.md.
//
//	go run ./test/cmd/reliability                 # normal run, about 17 min on 2 cores
//	go run ./test/cmd/reliability -long           # KAVARI_LONG=1: bigger variants
//	go run ./test/cmd/reliability -fuzztime 0     # skip the decode fuzzing
//	go run ./test/cmd/reliability -transports franz-go
//
// It runs, once per transport (-transports, default kafka-go,franz-go, each
// as KAVARI_TRANSPORT),
//
//	go run ./internal/pgproc/cmd/pgctl run -- go run ./internal/kafkaproc/cmd/kafkactl run -- \
//	  go test ./test/fault/ github.com/kavari-go/kavari/outbox/test -count=1 -v -timeout 30m
//
// (pgctl starts the PostgreSQL of the outbox's tests and exports
// KAVARI_PG_DSN and KAVARI_PG_HOME),
// with KAVARI_RELIABILITY_DIR set to a temporary directory (kafkactl fetches
// and starts the broker and exports KAVARI_BROKERS and KAVARI_KAFKA_LIB; tests
// that kill brokers start their own), streams the output, reads the JSON row
// every test wrote (package test/fault/ledger), optionally runs the
// FuzzDecodeRecord target for -fuzztime, and renders the report: date,
// broker version, machine, the exact commands, one row per fault test and
// transport, and a note per row. It exits non-zero when the suite failed, after writing the
// report.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kavari-go/kavari/test/fault/ledger"
)

func main() { os.Exit(realMain()) }

func realMain() int {
	var (
		out      = flag.String("out", "docs/reliability.md", "report to write, relative to the repository root")
		longRun  = flag.Bool("long", false, "run the bigger variants (KAVARI_LONG=1)")
		race     = flag.Bool("race", false, "run the suite with the race detector (as scripts/test.sh does)")
		run      = flag.String("run", "", "only tests matching this regexp (go test -run)")
		fuzztime = flag.Duration("fuzztime", 20*time.Second, "how long to fuzz FuzzDecodeRecord (0: skip)")
		timeout  = flag.Duration("timeout", 30*time.Minute, "go test -timeout")
		trs      = flag.String("transports", "kafka-go,franz-go", "comma-separated transports to run the suite on (KAVARI_TRANSPORT)")
	)
	flag.Parse()
	root, err := repoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "reliability:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// The outbox's fault tests (outbox/test: those that keep a ledger
	// write rows) run in the same go test, inside a PostgreSQL of pgctl.
	testArgs := []string{"go", "test", "./test/fault/", "github.com/kavari-go/kavari/outbox/test", "-count=1", "-v", "-timeout", timeout.String()}
	if *race {
		testArgs = append(testArgs, "-race")
	}
	if *run != "" {
		testArgs = append(testArgs, "-run", *run)
	}
	suite := append([]string{"go", "run", "./internal/pgproc/cmd/pgctl", "run", "--", "go", "run", "./internal/kafkaproc/cmd/kafkactl", "run", "--"}, testArgs...)
	rep := report{began: time.Now(), long: *longRun, results: map[string]string{}}
	var allRows []ledger.Row
	for _, tr := range strings.Split(*trs, ",") {
		if ctx.Err() != nil {
			break
		}
		rowsDir, err := os.MkdirTemp("", "kavari-reliability-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "reliability:", err)
			return 1
		}
		defer os.RemoveAll(rowsDir)
		env := append(os.Environ(), ledger.EnvDir+"="+rowsDir, "KAVARI_TRANSPORT="+tr)
		envShown := []string{"KAVARI_TRANSPORT=" + tr, ledger.EnvDir + "=<tmp>"}
		if *longRun {
			env = append(env, "KAVARI_LONG=1")
			envShown = append(envShown, "KAVARI_LONG=1")
		}
		command := strings.Join(envShown, " ") + " " + shellJoin(suite)
		rep.commands = append(rep.commands, command)
		fmt.Fprintf(os.Stderr, "reliability: %s\n", command)
		output, suiteErr := runTee(ctx, root, env, suite)
		if suiteErr != nil {
			rep.suiteErr = errors.Join(rep.suiteErr, fmt.Errorf("%s: %w", tr, suiteErr))
		}
		rep.pkgTimes = append(rep.pkgTimes, tr+": "+orDash(packageTime(output)))
		if l := kafkaLine(output); l != "" {
			rep.kafkaLine = l
		}
		for test, res := range testResults(output) {
			rep.results[tr+"/"+test] = res
		}
		rows, err := ledger.ReadDir(rowsDir)
		if err != nil {
			fmt.Fprintln(os.Stderr, "reliability:", err)
			return 1
		}
		for i := range rows {
			if rows[i].Transport == "" {
				rows[i].Transport = tr
			}
		}
		allRows = append(allRows, rows...)
	}
	rep.took = time.Since(rep.began)
	// One row per test and transport, a test's transports together.
	sort.SliceStable(allRows, func(i, j int) bool { return allRows[i].Test < allRows[j].Test })
	rep.rows = allRows

	if *fuzztime > 0 && ctx.Err() == nil {
		// Minimising each new corpus entry for the default 60 s would take
		// most of the fuzzing time (scripts/test.sh says the same).
		fuzz := []string{"go", "test", "-run", "^$", "-fuzz", "FuzzDecodeRecord", "-fuzztime", fuzztime.String(), "-fuzzminimizetime", "2s", "."}
		rep.fuzzCommand = shellJoin(fuzz)
		fmt.Fprintf(os.Stderr, "reliability: %s\n", rep.fuzzCommand)
		fout, ferr := runTee(ctx, root, os.Environ(), fuzz)
		rep.fuzzErr = ferr
		rep.fuzzExecs = lastMatch(fout, `execs: (\d+)`)
		rep.fuzzInteresting = lastMatch(fout, `\(total: (\d+)\)`)
	}

	md := rep.render()
	path := filepath.Join(root, *out)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "reliability:", err)
		return 1
	}
	if err := os.WriteFile(path, []byte(md), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "reliability:", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "reliability: %d rows written to %s\n", len(rep.rows), path)
	if rep.suiteErr != nil || rep.fuzzErr != nil {
		fmt.Fprintf(os.Stderr, "reliability: suite: %v, fuzz: %v\n", rep.suiteErr, rep.fuzzErr)
		return 1
	}
	return 0
}

// repoRoot is the nearest directory above the working directory with go.work
// (test/ has a go.mod of its own).
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
			return "", fmt.Errorf("no go.work above %s", wd)
		}
	}
}

// runTee runs argv in dir, copying its output to ours, and returns the
// output.
func runTee(ctx context.Context, dir string, env, argv []string) (string, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir, cmd.Env = dir, env
	var buf bytes.Buffer
	cmd.Stdout = io.MultiWriter(os.Stdout, &buf)
	cmd.Stderr = io.MultiWriter(os.Stderr, &buf)
	if err := cmd.Start(); err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return buf.String(), err
	case <-ctx.Done():
		_ = cmd.Process.Signal(syscall.SIGTERM) // kafkactl passes it on and stops the broker
		select {
		case err := <-done:
			return buf.String(), errors.Join(ctx.Err(), err)
		case <-time.After(45 * time.Second):
			_ = cmd.Process.Kill()
			return buf.String(), errors.Join(ctx.Err(), <-done)
		}
	}
}

func shellJoin(argv []string) string {
	out := make([]string, len(argv))
	for i, a := range argv {
		if a == "" || strings.ContainsAny(a, " ^$*?'\"|&;<>()") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}

// packageTime finds "ok  <pkg>/test/fault  312.5s" (or FAIL) in the output.
func packageTime(out string) string {
	return lastMatch(out, `(?m)^(?:ok|FAIL)\s+\S+/test/fault\s+([0-9.]+s)`)
}

// kafkaLine finds kafkactl's "Kafka 4.1.1, 1 node(s) ready in 3.1s: ..." line.
func kafkaLine(out string) string {
	return lastMatch(out, `(?m)^kafkactl: (Kafka [^,]+, \d+ node\(s\) ready in [^:]+)`)
}

// testResults maps each top-level test and subtest to PASS/FAIL/SKIP and its
// duration, from go test -v's "--- PASS: TestX (12.3s)" lines.
func testResults(out string) map[string]string {
	res := map[string]string{}
	re := regexp.MustCompile(`(?m)^\s*--- (PASS|FAIL|SKIP): (\S+) \(([0-9.]+s)\)`)
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		res[m[2]] = m[1] + " " + m[3]
	}
	return res
}

// result is go test's verdict on row's test: from the pass of the row's
// transport or, for a test that chose its transport itself (and was skipped
// in the other pass), from the pass where it ran.
func (r *report) result(row ledger.Row) string {
	res := r.results[row.Transport+"/"+row.Test]
	if res != "" && !strings.HasPrefix(res, "SKIP") {
		return res
	}
	for k, v := range r.results {
		if strings.HasSuffix(k, "/"+row.Test) && !strings.HasPrefix(v, "SKIP") {
			return v
		}
	}
	return res
}

func lastMatch(s, pattern string) string {
	ms := regexp.MustCompile(pattern).FindAllStringSubmatch(s, -1)
	if len(ms) == 0 {
		return ""
	}
	return ms[len(ms)-1][1]
}

type report struct {
	began     time.Time
	took      time.Duration
	long      bool
	commands  []string // one per transport
	suiteErr  error
	pkgTimes  []string // "transport: 312.5s"
	kafkaLine string
	results   map[string]string // "transport/TestX" -> "PASS 12.3s"
	rows      []ledger.Row

	fuzzCommand     string
	fuzzErr         error
	fuzzExecs       string
	fuzzInteresting string
}

func (r *report) render() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	versions := map[string]bool{}
	for _, row := range r.rows {
		if row.KafkaVersion != "" {
			versions[row.KafkaVersion] = true
		}
	}
	var vs []string
	for v := range versions {
		vs = append(vs, v)
	}
	sort.Strings(vs)
	mode := "normal"
	if r.long {
		mode = "long (KAVARI_LONG=1)"
	}
	result := "PASS"
	if r.suiteErr != nil {
		result = "FAIL (" + r.suiteErr.Error() + ")"
	}

	p("# kavari reliability report\n\n")
	p("Generated by `go run ./test/cmd/reliability` from a real run of the fault suite\n")
	p("([`test/fault`](../test/fault)) against real Apache Kafka brokers. Regenerate it with the same\n")
	p("command; `-long` runs the bigger variants.\n\n")
	p("| | |\n| --- | --- |\n")
	p("| date | %s |\n", r.began.UTC().Format("2006-01-02 15:04 MST"))
	p("| broker | Apache Kafka %s (KRaft, combined broker+controller nodes, started by `internal/kafkaproc`) |\n", strings.Join(vs, ", "))
	if r.kafkaLine != "" {
		p("| shared broker | %s (tests that kill brokers start their own 1- or 3-node clusters) |\n", r.kafkaLine)
	}
	p("| machine | %s |\n", machine())
	p("| Go | %s %s/%s |\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	for _, c := range r.commands {
		p("| command | `%s` |\n", c)
	}
	p("| mode | %s |\n", mode)
	p("| package runtime | %s (whole command, broker starts included: %s) |\n", strings.Join(r.pkgTimes, ", "), r.took.Round(time.Second))
	p("| result | %s |\n\n", result)

	p("## Results\n\n")
	p("Counts are message ids. **acknowledged**: `Publish` returned nil. **handled**: distinct ids whose handler completed\n")
	p("(or, for poison records, that reached the dead-letter topic with the right kind). **duplicates**: ids handled more\n")
	p("than once (in brackets: extra deliveries in all) — allowed, delivery is at-least-once. **lost**: acknowledged but never\n")
	p("handled — must be 0. **stuck**: ids that may be in the topic (acknowledged, or a failed publish that may have written\n")
	p("them) and were neither handled nor dead-lettered when the test ended (-: not recorded by that run). **order**: per key, first deliveries out of publish order (n/a: not checked); redeliveries after a\n")
	p("crash or rebalance may repeat a suffix of a key's sequence and are not violations. **time to recover**: what it measures is\n")
	p("given in brackets. **status**: a test that finds a library bug fails, and its note says what it found. **transport**: the\n")
	p("suite runs once per transport (`KAVARI_TRANSPORT`); a test's rows are together.\n\n")
	p("| test | fault | transport | sent | acknowledged | handled | duplicates | lost | stuck | order violations | time to recover | status |\n")
	p("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n")
	for _, row := range r.rows {
		order := "n/a"
		if row.OrderChecked {
			order = strconv.Itoa(row.OrderViolations)
		}
		rec := "—"
		if row.RecoverMs != nil {
			rec = fmtMs(*row.RecoverMs)
			if what, _, _ := strings.Cut(row.RecoverWhat, ";"); what != "" {
				rec += " (" + what + ")"
			}
		}
		status := row.Status
		if res := r.result(row); res != "" {
			status = res
		}
		if len(row.Bugs) > 0 {
			status += " — library bug, see notes"
		}
		p("| `%s` | %s | %s | %d | %d | %d | %d (%d) | **%d** | %s | %s | %s | %s |\n", row.Test, row.Title, row.Transport, row.Sent, row.Acked, row.Handled,
			row.Duplicates, row.ExtraDeliveries, row.Lost, stuckCell(row.Stuck), order, rec, status)
	}
	p("\n## Notes per test\n\n")
	for _, row := range r.rows {
		p("### `%s` (%s)\n\n", row.Test, row.Transport)
		p("%s (mode: %s, %s).\n\n", capitalize(row.Title), row.Mode, fmtMs(row.DurationMs))
		if row.Setup != "" {
			p("- setup: %s\n", row.Setup)
		}
		for _, n := range row.Notes {
			p("- %s\n", n)
		}
		if row.RecoverMs != nil {
			p("- time to recover: %s — %s\n", fmtMs(*row.RecoverMs), row.RecoverWhat)
		}
		p("- publish failures %d, never handled %d (dead-lettered %d, stuck %s), producer-side duplicates %d, rewinds %d (deepest %d)\n",
			row.PublishFailed, row.NeverHandled, row.DeadLettered, stuckCell(row.Stuck), row.ProducerDuplicates, row.Rewinds, row.MaxRewind)
		if len(row.Extra) > 0 {
			var keys []string
			for k := range row.Extra {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			var kv []string
			for _, k := range keys {
				kv = append(kv, fmt.Sprintf("%s=%v", k, row.Extra[k]))
			}
			p("- figures: %s\n", strings.Join(kv, ", "))
		}
		for _, bug := range row.Bugs {
			p("- **library bug found**: %s\n", bug)
		}
		if len(row.LostIDs) > 0 {
			p("- **lost ids** (first %d): %s\n", len(row.LostIDs), strings.Join(row.LostIDs, ", "))
		}
		if len(row.OrderExamples) > 0 {
			p("- order violations, e.g.: %s\n", strings.Join(row.OrderExamples, "; "))
		}
		p("\n")
	}
	if r.fuzzCommand != "" {
		p("## Decode fuzzing\n\n")
		res := "no failure"
		if r.fuzzErr != nil {
			res = "FAILED: " + r.fuzzErr.Error() + " (the failing input is in testdata/fuzz/FuzzDecodeRecord)"
		}
		p("`%s`: %s execs, %s corpus entries, %s. The target (`fuzz_test.go`) feeds arbitrary values and headers to the\n",
			r.fuzzCommand, orDash(r.fuzzExecs), orDash(r.fuzzInteresting), res)
		p("consumer's decoder and the dead-letter builder: no panic, and always either a valid message of a registered type or\n")
		p("a `*DecodeError` of a decode-side kind matching the failure.\n")
	}
	return b.String()
}

// stuckCell is the stuck column of a row: "-" when the row does not
// record it, the count in bold when not 0.
func stuckCell(n *int) string {
	switch {
	case n == nil:
		return "-"
	case *n > 0:
		return "**" + strconv.Itoa(*n) + "**"
	}
	return "0"
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

func fmtMs(ms int64) string {
	d := time.Duration(ms) * time.Millisecond
	if d >= 10*time.Second {
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Millisecond).String()
}

// machine describes the CPU and memory.
func machine() string {
	model := ""
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if m := regexp.MustCompile(`MemTotal:\s+(\d+) kB`).FindSubmatch(b); m != nil {
			kb, _ := strconv.ParseInt(string(m[1]), 10, 64)
			mem = fmt.Sprintf("%.1f GiB memory", float64(kb)/(1<<20))
		}
	}
	parts := []string{fmt.Sprintf("%d cores", runtime.NumCPU())}
	if model != "" {
		parts = append(parts, model)
	}
	if mem != "" {
		parts = append(parts, mem)
	}
	return strings.Join(parts, ", ")
}
