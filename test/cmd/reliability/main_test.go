package main

import (
	"strings"
	"testing"
	"time"

	"github.com/kavari-go/kavari/test/fault/ledger"
)

// The results table has a stuck column on every row: the row's count, or
// "-" for a row written before the ledger computed it.
func TestRenderStuckColumn(t *testing.T) {
	three := 3
	zero := 0
	r := &report{began: time.Unix(0, 0), results: map[string]string{}, rows: []ledger.Row{
		{Test: "TestA", Title: "a fault", Transport: "kafka-go", Sent: 10, Acked: 10, Handled: 7, Stuck: &three, Status: "FAIL"},
		{Test: "TestB", Title: "b fault", Transport: "franz-go", Sent: 5, Acked: 5, Handled: 5, Stuck: &zero, Status: "PASS"},
		{Test: "TestC", Title: "c fault", Transport: "kafka-go", Sent: 1, Acked: 1, Handled: 1, Status: "PASS"},
	}}
	md := r.render()
	var header string
	rows := map[string]string{}
	for _, l := range strings.Split(md, "\n") {
		switch {
		case strings.HasPrefix(l, "| test |"):
			header = l
		case strings.HasPrefix(l, "| `Test"):
			rows[strings.Split(l, "`")[1]] = l
		}
	}
	cols := func(l string) []string {
		f := strings.Split(strings.Trim(l, "|"), "|")
		for i := range f {
			f[i] = strings.TrimSpace(f[i])
		}
		return f
	}
	h := cols(header)
	at := -1
	for i, c := range h {
		if c == "stuck" {
			at = i
		}
	}
	if at < 0 {
		t.Fatalf("no stuck column in %q", header)
	}
	for test, want := range map[string]string{"TestA": "**3**", "TestB": "0", "TestC": "-"} {
		c := cols(rows[test])
		if len(c) != len(h) {
			t.Fatalf("%s: %d cells, header has %d: %q", test, len(c), len(h), rows[test])
		}
		if c[at] != want {
			t.Errorf("%s: stuck %q, want %q", test, c[at], want)
		}
	}
	if !strings.Contains(md, "**stuck**") {
		t.Error("the legend does not say what stuck counts")
	}
}
