package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// pyResults are the Python kavari 0.2.2.1 runs.
type pyResults struct {
	Skipped  string   // why nothing ran, if so
	Versions string   // python, kavari, confluent-kafka, librdkafka
	Runs     []*pyRun // publish and consume, per size
	// Defect is what consume.py (kavari's own consumer, no workaround)
	// reported on Go-published records.
	Defect      map[string]any
	DefectCount int // records it handled before giving up (want 0)
}

type pyRun struct {
	ID         string
	Kind       string // publish, consume
	Size       int
	Count      int
	Errors     int
	Seconds    float64
	MsgsPerSec float64 // publish: whole run; consume: first to last record
	ValueBytes int
	Defects    []string
	Err        string
	// StopSeconds is how long kavari's consumer took to stop (bounded by
	// bench.py's --stop-timeout); CommitTimeouts adds up librdkafka's
	// "Timed out N in-flight ... requests" lines on stderr (the group
	// coordinator connection carries only commits here).
	StopSeconds    float64
	StopTimedOut   bool
	CommitTimeouts int
}

func (b *bench) python() {
	var ids []string
	for _, size := range sizes {
		ids = append(ids, "python/publish/"+sizeName(size), "python/consume/"+sizeName(size))
	}
	if !b.wantAny(ids...) {
		return
	}
	b.py = &pyResults{}
	if b.noPython != "" {
		b.py.Skipped = b.noPython
		return
	}
	if b.o.skipPython {
		b.py.Skipped = "-skip-python"
		return
	}
	py, err := pyenv(b.ctx, b.o.root)
	if err != nil {
		b.py.Skipped = "the Python venv could not be created: " + err.Error()
		b.fail("python", err)
		return
	}
	if out, err := exec.CommandContext(b.ctx, py, "-c",
		"import sys, importlib.metadata as m, confluent_kafka as c; print('Python', sys.version.split()[0], '/ kavari', m.version('kavari'), '/ confluent-kafka', c.version() if isinstance(c.version(), str) else c.version()[0], '/ librdkafka', c.libversion()[0])").Output(); err == nil {
		b.py.Versions = strings.TrimSpace(string(out))
	}
	script := filepath.Join(b.o.root, "test", "interop", "py", "bench.py")
	brokers := strings.Join(b.brokers, ",")
	for _, size := range sizes {
		id := "python/publish/" + sizeName(size)
		if !b.want(id) {
			continue
		}
		if err := b.adm.fresh(b.ctx, benchTopic, b.o.partitions); err != nil {
			b.fail(id, err)
			continue
		}
		payload := len(payloadFor(size))
		r := b.runPy(id, "publish", size, py, script, "--brokers", brokers, "--topic", benchTopic,
			"publish", "--count", strconv.Itoa(b.o.pySyncN), "--size", strconv.Itoa(payload), "--impl", "kavari", "--acks", "all")
		b.py.Runs = append(b.py.Runs, r)
	}
	for _, size := range sizes {
		id := "python/consume/" + sizeName(size)
		if !b.want(id) {
			continue
		}
		if err := b.fill(b.o.pyConsumeN, size, b.o.partitions, nil); err != nil {
			b.fail(id, err)
			continue
		}
		r := b.runPy(id, "consume", size, py, script, "--brokers", brokers, "--topic", benchTopic,
			"consume", "--count", strconv.Itoa(b.o.pyConsumeN), "--impl", "kavari", "--group", b.group(id), "--timeout", "240")
		b.py.Runs = append(b.py.Runs, r)
		if size == sizes[0] {
			b.pyDefect(py, brokers)
		}
	}
}

// pyDefect runs consume.py, the Python kavari's consumer as published (no
// workaround), over the Go-written records on the topic.
func (b *bench) pyDefect(py, brokers string) {
	script := filepath.Join(b.o.root, "test", "interop", "py", "consume.py")
	ctx, cancel := context.WithTimeout(b.ctx, 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, script, "--brokers", brokers, "--topic", benchTopic,
		"--count", "10", "--group", b.group("py-defect"), "--timeout", "45", "--quiet")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr     // one warning per skipped record
	out, err := cmd.Output() // exit status 2 = stopped by a defect
	if err != nil && !strings.Contains(err.Error(), "exit status 2") {
		logf("python/defect: consume.py: %v\n%s", err, lastLines(stderr.String(), 10))
	}
	for _, line := range jsonLines(out) {
		if _, ok := line["defect"]; ok && b.py.Defect == nil {
			b.py.Defect = line
		}
		if h, ok := line["handled"].(float64); ok {
			b.py.DefectCount = int(h)
		}
	}
	logf("python/defect: kavari's own consumer handled %d records; defect %v", b.py.DefectCount, b.py.Defect["defect"])
}

func (b *bench) runPy(id, kind string, size int, py string, args ...string) *pyRun {
	r := &pyRun{ID: id, Kind: kind, Size: size}
	logf("%s: running...", id)
	ctx, cancel := context.WithTimeout(b.ctx, b.o.workerTO)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, args...)
	var stderr bytes.Buffer
	cmd.Stderr = io.MultiWriter(os.Stderr, &stderr)
	out, err := cmd.Output()
	for _, m := range inFlightTimeouts.FindAllStringSubmatch(stderr.String(), -1) {
		n, _ := strconv.Atoi(m[1])
		r.CommitTimeouts += n
	}
	lines := jsonLines(out)
	if len(lines) == 0 {
		r.Err = fmt.Sprintf("no summary (%v)", err)
		b.fail(id, fmt.Errorf("%s", r.Err))
		return r
	}
	m := lines[len(lines)-1]
	num := func(k string) float64 { f, _ := m[k].(float64); return f }
	r.Count, r.Errors, r.Seconds, r.MsgsPerSec = int(num("count")), int(num("errors")), num("seconds"), num("msgs_per_sec")
	r.ValueBytes = int(num("value_bytes"))
	if kind == "consume" {
		if v := num("msgs_per_sec_after_first"); v > 0 {
			r.MsgsPerSec, r.Seconds = v, num("seconds_after_first")
		}
		if c := r.Count; c > 0 {
			r.ValueBytes = int(num("value_bytes_total")) / c
		}
	}
	r.StopSeconds = num("stop_seconds")
	r.StopTimedOut, _ = m["stop_timed_out"].(bool)
	if ds, ok := m["defects"].([]any); ok {
		for _, d := range ds {
			r.Defects = append(r.Defects, fmt.Sprint(d))
		}
	}
	if err != nil {
		r.Err = err.Error()
		b.fail(id, fmt.Errorf("%v: %s", err, bytes.TrimSpace(out)))
	}
	logf("%s: %.0f msg/s, %d messages, %d errors", id, r.MsgsPerSec, r.Count, r.Errors)
	return r
}

var inFlightTimeouts = regexp.MustCompile(`GroupCoordinator.*Timed out (\d+) in-flight`)

// pyenv runs scripts/pyenv.sh, which creates the venv (once) and prints its
// python path.
func pyenv(ctx context.Context, root string) (string, error) {
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "scripts", "pyenv.sh"))
	cmd.Dir = root
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("scripts/pyenv.sh: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(lines[len(lines)-1]), nil
}

func jsonLines(out []byte) []map[string]any {
	var res []map[string]any
	for _, l := range strings.Split(string(out), "\n") {
		l = strings.TrimSpace(l)
		if !strings.HasPrefix(l, "{") {
			continue
		}
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil {
			res = append(res, m)
		}
	}
	return res
}
