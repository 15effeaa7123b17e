package interop

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// repoRoot is two directories up from this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

var (
	pyOnce sync.Once
	pyPath string
	pyErr  string
)

// python returns the venv interpreter with Python kavari 0.2.2.1, creating
// the venv with scripts/pyenv.sh on first use (a no-op of ~0.1 s when it is
// cached). Without one the test is skipped, or fails under CI=true.
func python(t *testing.T) string {
	t.Helper()
	pyOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "bash", filepath.Join(repoRoot(t), "scripts", "pyenv.sh"))
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		begin := time.Now()
		if err := cmd.Run(); err != nil {
			pyErr = err.Error() + ": " + strings.TrimSpace(stderr.String())
			return
		}
		lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
		pyPath = strings.TrimSpace(lines[len(lines)-1])
		t.Logf("python venv %s ready in %s", pyPath, time.Since(begin).Round(time.Millisecond))
	})
	if pyPath == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but the Python kavari venv could not be created: %s", pyErr)
		}
		t.Skipf("no Python kavari venv (scripts/pyenv.sh failed): %s", pyErr)
	}
	return pyPath
}

// pyRun is a finished run of one of the scripts in py/.
type pyRun struct {
	Code   int
	Lines  []map[string]any // JSON lines on stdout
	Stdout string
	Stderr string
}

// runPy runs py/<script> with args and returns its output; a non-zero exit
// status is returned, not fatal.
func runPy(t *testing.T, timeout time.Duration, script string, args ...string) *pyRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, python(t), append([]string{filepath.Join("py", script)}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := &pyRun{Stdout: stdout.String(), Stderr: stderr.String()}
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok || ctx.Err() != nil {
			t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", script, err, r.Stdout, r.Stderr)
		}
		r.Code = ee.ExitCode()
	}
	for _, l := range strings.Split(r.Stdout, "\n") {
		var m map[string]any
		if strings.HasPrefix(l, "{") && json.Unmarshal([]byte(l), &m) == nil {
			r.Lines = append(r.Lines, m)
		}
	}
	return r
}

// summary returns the last JSON line that has key.
func (r *pyRun) summary(key string) map[string]any {
	for i := len(r.Lines) - 1; i >= 0; i-- {
		if _, ok := r.Lines[i][key]; ok {
			return r.Lines[i]
		}
	}
	return nil
}

// withKey returns every JSON line that has key.
func (r *pyRun) withKey(key string) []map[string]any {
	var out []map[string]any
	for _, l := range r.Lines {
		if _, ok := l[key]; ok {
			out = append(out, l)
		}
	}
	return out
}
