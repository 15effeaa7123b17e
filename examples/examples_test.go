// Package examples_test builds every example program and runs it the way a
// newcomer would, so `go test ./...` proves the examples work. They run on
// the embedded broker, or on KAVARI_BROKERS when it is set.
package examples_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// runTimeout bounds one example run; the examples finish in well under a
// second on the embedded broker, so this only catches hangs.
const runTimeout = 3 * time.Minute

// build compiles the example programs into a temporary directory, with -race
// when the tests run with it, and returns the directory.
func build(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the example programs; skipped with -short")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command in PATH:", err)
	}
	dir := t.TempDir()
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "./quickstart", "./di", "./httpservice", "./batch", "./retrytopics", "./exactlyonce")
	cmd := exec.Command(goBin, args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return dir
}

func TestExamples(t *testing.T) {
	bin := build(t)
	for _, tc := range []struct {
		name string
		args []string
		want []string // lines, or parts of lines, of stdout
	}{
		{
			name: "quickstart",
			args: []string{"-n", "300", "-timeout", "2m"},
			want: []string{
				"kavari quickstart",
				"errors.Is(err, kavari.ErrInvalid) = true",
				"order_id       required",
				"customer       email               \"bob-at-example\"",
				"amount_cents   gt=0                -5",
				"published 300 OrderPlaced:     10 with Publish (one at a time, acknowledged), 290 with PublishBatch",
				"published 300 PaymentReceived: with PublishAsync, 300 callbacks said ok, 0 said failed",
				"handled   300 OrderPlaced and 300 PaymentReceived",
				"stopped   cleanly",
				"OK: handled == published == 600",
			},
		},
		{
			name: "quickstart-tiny",
			args: []string{"-n", "3"},
			want: []string{
				"published 3 OrderPlaced:     3 with Publish (one at a time, acknowledged), 0 with PublishBatch",
				"OK: handled == published == 6",
			},
		},
		{
			name: "di",
			args: []string{"-n", "4"},
			want: []string{
				"handled   4 OrderPlaced by *main.OrderPlacedHandler, 4 PaymentReceived by *main.PaymentReceivedHandler",
				"both built by dig, 2 constructor calls in all (one per handler type)",
				"the repository they were given holds 4 orders of this run:",
				"order 4     40.00  paid by card",
				"OK: every message was handled by a handler the container built",
			},
		},
		{
			name: "batch",
			args: []string{"-n", "2000"},
			want: []string{
				"published 2000 orders with PublishBatch; the table refuses one of them",
				"inserted  1999 orders in",
				"dead-lettered 001000 (batch.orders@",
				"handler after 3 attempts)",
				"OK: every order but the refused one inserted; the refused one dead-lettered",
			},
		},
		{
			name: "retrytopics",
			args: []string{"-n", "200"},
			want: []string{
				"published 200 notifications",
				"delivered 176 at once",
				"delivered 16 from tier 1 (.retry.1)",
				"delivered 0 from tier 2 (.retry.2)",
				"delivered 7 from tier 3 (.retry.3)",
				"retried calls: 40, none before due: true",
				"after 5 attempts; failed in main -> .retry.1 -> .retry.2 -> .retry.3",
				"moves to retry tiers: 40;",
				"OK: every notification delivered once, the gone endpoint's dead-lettered after the last tier",
			},
		},
		{
			name: "exactlyonce",
			args: []string{"-n", "500"},
			want: []string{
				"published 500 orders; the handler of one panics after publishing its invoice, once",
				"invoices read committed: 500 orders with one, 0 with more, 0 without",
				"OK: one invoice per order",
			},
		},
		{
			name: "httpservice",
			args: []string{"-selftest"},
			want: []string{
				"ok   GET /health -> 200",
				"ok   POST /orders (invalid) -> 400 [order_id:required customer:email amount_cents:gt]",
				"ok   POST /orders (not JSON of an order) -> 400",
				"selftest passed: 3 orders published and handled, invalid ones refused with 400",
				"shut down: http server closed, kavari stopped",
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			name := strings.TrimSuffix(tc.name, "-tiny")
			ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
			defer cancel()
			var stdout, stderr bytes.Buffer
			cmd := exec.CommandContext(ctx, filepath.Join(bin, name), tc.args...)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			cmd.WaitDelay = 5 * time.Second
			start := time.Now()
			err := cmd.Run()
			t.Logf("%s %s: %v in %v\n%s", name, strings.Join(tc.args, " "), err, time.Since(start).Round(time.Millisecond), stdout.String())
			if stderr.Len() > 0 {
				t.Logf("stderr:\n%s", stderr.String())
			}
			if err != nil {
				t.Fatalf("%s exited with %v, want exit 0", name, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("output lacks %q", w)
				}
			}
		})
	}
	t.Run("httpservice-sigterm", func(t *testing.T) {
		t.Parallel()
		testHTTPServiceSignal(t, bin)
	})
}

// testHTTPServiceSignal runs the HTTP service as a service: it serves, takes
// an order over HTTP, and shuts down cleanly on SIGTERM.
func testHTTPServiceSignal(t *testing.T, bin string) {
	if runtime.GOOS == "windows" {
		t.Skip("no SIGTERM on Windows")
	}
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	// A group of its own: the selftest runs beside it, and two members of
	// one group split the partitions, so each would handle only some of the
	// orders it checks.
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "httpservice"), "-addr", "127.0.0.1:0", "-group", "httpservice-sigterm")
	cmd.WaitDelay = 5 * time.Second
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	// The service logs (slog text) to stderr; find its address there and
	// keep the rest for the end.
	var (
		mu   sync.Mutex
		logs strings.Builder
	)
	addrCh := make(chan string, 1)
	logDone := make(chan struct{})
	go func() {
		defer close(logDone)
		addrRe := regexp.MustCompile(`msg=serving addr=(\S+)`)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			mu.Lock()
			logs.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if m := addrRe.FindStringSubmatch(sc.Text()); m != nil {
				addrCh <- m[1]
			}
		}
	}()
	var base string
	select {
	case addr := <-addrCh:
		base = "http://" + addr
	case <-ctx.Done():
		t.Fatal("the service never said where it listens")
	}

	get := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("/health")
	for code != http.StatusOK && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
		code, body = get("/health")
	}
	if code != http.StatusOK || !strings.Contains(body, `"connected":true`) {
		t.Fatalf("GET /health = %d %s", code, body)
	}

	resp, err := http.Post(base+"/orders", "application/json",
		strings.NewReader(`{"order_id":"sig-1","customer":"ann@example.com","amount_cents":1250}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /orders = %d, want 202", resp.StatusCode)
	}
	code, body = get("/orders/sig-1")
	for code != http.StatusOK && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
		code, body = get("/orders/sig-1")
	}
	if code != http.StatusOK {
		t.Fatalf("GET /orders/sig-1 = %d %s", code, body)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-logDone // stderr closes when the process exits
	err = cmd.Wait()
	mu.Lock()
	t.Logf("service log:\n%s", logs.String())
	out := logs.String()
	mu.Unlock()
	if err != nil {
		t.Fatalf("httpservice exited with %v after SIGTERM, want exit 0", err)
	}
	for _, w := range []string{`msg="order handled" order_id=sig-1`, `msg="signal received, shutting down"`, `msg=stopped clean=true`} {
		if !strings.Contains(out, w) {
			t.Errorf("log lacks %s", w)
		}
	}
}
