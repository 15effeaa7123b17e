package main

import (
	"strings"
	"testing"
)

func TestEOSTargetsDivideByRawLoopAndAtLeastOnce(t *testing.T) {
	r := testReport(t, map[string]float64{
		"eos/franz-go/at-least-once": 40,
		"eos/franz-go/exactly-once":  45,
		"eos/franz-go/raw-txn":       50,
	})
	raw := targetOf(t, r, "kavari exactly-once consume → publish on franz-go ≥ 0.9× a raw franz-go GroupTransactSession loop")
	if raw.Measured != "0.90×" || raw.Status != "**met**" {
		t.Fatalf("÷ raw loop: got %q %s", raw.Measured, raw.Status)
	}
	alo := targetOf(t, r, "kavari exactly-once consume → publish on franz-go ≥ 0.5× the same pipeline at-least-once")
	if alo.Measured != "1.12×" || alo.Status != "**met**" {
		t.Fatalf("÷ at-least-once: got %q %s", alo.Measured, alo.Status)
	}
	if md := r.markdown(); !strings.Contains(md, "## Exactly-once consume → publish (franz-go)") || !strings.Contains(md, "| exactly-once | 45 | 0.90× | 1.12× | – |") {
		t.Fatalf("report section missing or wrong:\n%s", md)
	}
}

func TestEOSTargetsNotMeasuredAlone(t *testing.T) {
	r := testReport(t, map[string]float64{"eos/franz-go/exactly-once": 45})
	if x := targetOf(t, r, "kavari exactly-once consume → publish on franz-go ≥ 0.9×"); x.Status != notMeasured {
		t.Fatalf("got %q %s", x.Measured, x.Status)
	}
}
