package main

import (
	"bytes"
	"context"
	"flag"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// exec runs the command line and returns its exit status and output.
func exec(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestParseArgsInterspersed(t *testing.T) {
	for _, c := range []struct {
		args []string
		pos  []string
		last int64
	}{
		{[]string{"orders"}, []string{"orders"}, 0},
		{[]string{"--last", "5", "orders"}, []string{"orders"}, 5},
		{[]string{"orders", "--last", "5"}, []string{"orders"}, 5},
		{[]string{"orders", "-last=5", "x"}, []string{"orders", "x"}, 5},
		{[]string{"--last", "5", "--", "-orders"}, []string{"-orders"}, 5},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		last := fs.Int64("last", 0, "")
		pos, err := parseArgs(fs, c.args)
		if err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		if !reflect.DeepEqual(pos, c.pos) || *last != c.last {
			t.Errorf("%v: got %v last=%d, want %v last=%d", c.args, pos, *last, c.pos, c.last)
		}
	}
}

func TestUsageAndExitCodes(t *testing.T) {
	t.Setenv("KAVARI_BROKERS", "")
	t.Setenv("KAVARI_SASL_PASSWORD", "")
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	golden, err := os.ReadFile("../../contract/testdata/quickstart.asyncapi.json")
	if err != nil {
		t.Fatal(err)
	}
	old := write("old.json", string(golden))
	same := write("same.json", string(golden))
	narrowed := write("new.json", strings.Replace(string(golden), `"GBP"`, `"USD"`, 1))
	openapi := write("openapi.yaml", "openapi: 3.1.0\ninfo: {title: x, version: '1'}\n")
	b := "--brokers=127.0.0.1:1"

	for _, c := range []struct {
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{nil, 2, "", "Usage:"},
		{[]string{"--help"}, 0, "kavari tail TOPIC", ""},
		{[]string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
		{[]string{"tail", "--help"}, 0, "Usage: kavari tail TOPIC", ""},
		{[]string{"dlq", "ls", "-h"}, 0, "Usage: kavari dlq ls", ""},
		{[]string{"dlq", "replay", "--help"}, 0, "--max-replays", ""},
		{[]string{"dlq"}, 2, "", "kavari dlq replay"},
		{[]string{"contract", "diff", "--help"}, 0, "Usage: kavari contract diff", ""},
		{[]string{"tail"}, 2, "", "want 1 argument(s), got 0"},
		{[]string{"tail", "orders", "--bogus"}, 2, "", "flag provided but not defined: -bogus"},
		{[]string{"tail", "orders"}, 2, "", "no brokers: pass --brokers"},
		{[]string{"tail", "orders", b, "-o", "yaml"}, 2, "", `-o "yaml"`},
		{[]string{"tail", "orders", b, "--last", "3", "--from-beginning"}, 2, "", "choose one of"},
		{[]string{"tail", "orders", b, "--since", "yesterday"}, 2, "", "want RFC 3339"},
		{[]string{"tail", "orders", b, "--timeout", "0s"}, 2, "", "--timeout"},
		{[]string{"tail", "orders", b, "--sasl-mechanism", "GSSAPI", "--sasl-user", "u"}, 2, "", "want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"},
		{[]string{"tail", "orders", b, "--sasl-mechanism", "PLAIN"}, 2, "", "needs --sasl-user"},
		{[]string{"tail", "orders", b, "--sasl-user", "u"}, 2, "", "need --sasl-mechanism"},
		{[]string{"tail", "orders", b, "--tls-cert", "c.pem"}, 2, "", "--tls-cert and --tls-key go together"},
		{[]string{"tail", "orders", b, "--tls-ca", filepath.Join(dir, "none.pem")}, 2, "", "--tls-ca"},
		{[]string{"tail", "orders", b, "--tls-ca", old}, 2, "", "no PEM certificate"},
		{[]string{"dlq", "replay", "orders.dlq", b, "--max-replays", "0"}, 2, "", "--max-replays 0"},
		{[]string{"dlq", "replay", "orders.dlq", b, "--from-offset", "9", "--to-offset", "3"}, 2, "", "is after --to-offset"},
		{[]string{"contract", "diff", old, same}, 0, "0 changes, 0 breaking", ""},
		{[]string{"contract", "diff", old, narrowed}, 1, "enum-narrowed", ""},
		{[]string{"contract", "diff", "-o", "json", old, narrowed}, 1, `"breaks_producers":true`, ""},
		{[]string{"contract", "diff", old, openapi}, 2, "", "not an AsyncAPI 3 document"},
		{[]string{"contract", "diff", old, filepath.Join(dir, "missing.json")}, 2, "", "no such file"},
		{[]string{"contract", "diff", old}, 2, "", "want 2 argument(s)"},
	} {
		code, stdout, stderr := exec(t, c.args...)
		if code != c.code || !strings.Contains(stdout, c.stdout) || !strings.Contains(stderr, c.stderr) {
			t.Errorf("%q: exit %d, want %d with stdout ~ %q, stderr ~ %q\nstdout:\n%s\nstderr:\n%s",
				c.args, code, c.code, c.stdout, c.stderr, stdout, stderr)
		}
	}
}

// TestSASLPasswordFromEnv: --sasl-password falls back to KAVARI_SASL_PASSWORD.
func TestSASLPasswordFromEnv(t *testing.T) {
	t.Setenv("KAVARI_SASL_PASSWORD", "s3cret")
	f := connFlags{brokers: "b:9092", output: "table", timeout: time.Second, saslMech: "PLAIN", saslUser: "u"}
	if _, err := f.connect(); err != nil {
		t.Fatal(err)
	}
	m, err := f.mechanism()
	if err != nil {
		t.Fatal(err)
	}
	if got := reflect.ValueOf(m).FieldByName("Password").String(); got != "s3cret" {
		t.Errorf("password %q, want the one from KAVARI_SASL_PASSWORD", got)
	}
}

// TestUnreachableBroker: a closed port and a broker that accepts but never
// answers both end with a clear error, the second within --timeout (the
// test only guards against a hang, with a generous limit).
func TestUnreachableBroker(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // hold the connection open, never answer
		}
	}()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()

	for _, c := range []struct {
		addr string
		want string
	}{
		{closedAddr, "cannot reach brokers " + closedAddr},
		{ln.Addr().String(), "no answer from brokers " + ln.Addr().String() + " within 1s (--timeout)"},
	} {
		for _, cmd := range [][]string{{"tail", "orders"}, {"dlq", "ls", "orders.dlq"}, {"dlq", "replay", "orders.dlq"}} {
			done := make(chan struct{})
			var code int
			var stderr string
			go func() {
				defer close(done)
				code, _, stderr = exec(t, append(cmd, "--brokers", c.addr, "--timeout", "1s")...)
			}()
			select {
			case <-done:
			case <-time.After(time.Minute):
				t.Fatalf("%v against %s: still running after a minute with --timeout 1s", cmd, c.addr)
			}
			if code != 1 || !strings.Contains(stderr, c.want) {
				t.Errorf("%v against %s: exit %d, stderr %q; want exit 1 and %q", cmd, c.addr, code, stderr, c.want)
			}
		}
	}
}
