package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/kavari-go/kavari"
)

// tierDeadLetter is a dead letter written after the last retry tier.
func tierDeadLetter() *record {
	r := deadLetter(
		kavari.HeaderRetryTier, "3",
		kavari.HeaderRetryDue, "2026-12-01T10:01:00.000Z",
		kavari.HeaderRetryHandlers, "*main.Billing",
		kavari.HeaderRetryHistory, "orders/2/41@2026-12-01T10:00:00.000Z,orders.retry.1/0/5@2026-12-01T10:00:01.000Z,orders.retry.2/1/9@2026-12-01T10:00:11.000Z",
	)
	return r
}

// TestReplayDropsRetryTierHeaders: a dead letter that went through retry
// topics is replayed to its main topic without the retry headers, so the
// replayed record starts afresh (its tiers again, if it fails).
func TestReplayDropsRetryTierHeaders(t *testing.T) {
	rp, ref := planReplay(tierDeadLetter(), 3)
	if ref != nil {
		t.Fatalf("refused: %v", ref)
	}
	if rp.Topic != "orders" || rp.Partition != 2 {
		t.Errorf("replayed to %s/%d, want orders/2 (the main topic's record)", rp.Topic, rp.Partition)
	}
	for _, h := range rp.Record.Headers {
		if strings.HasPrefix(h.Key, "kavari_retry_") {
			t.Errorf("replayed record keeps %s", h.Key)
		}
	}
}

// TestDLQListShowsTheTier: dlq ls groups by the last retry tier and shows a
// TIER column only when some dead letter went through retry topics.
func TestDLQListShowsTheTier(t *testing.T) {
	var s dlqStats
	s.add(tierDeadLetter())
	s.add(tierDeadLetter())
	s.add(deadLetter())
	var b bytes.Buffer
	if err := writeGroups(&b, "orders.dlq", s.total, s.sorted()); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(b.String(), "\n")
	if f := strings.Fields(lines[0]); len(f) < 4 || f[2] != "KIND" || f[3] != "TIER" {
		t.Errorf("no TIER column: %q", lines[0])
	}
	if f1, f2 := strings.Fields(lines[1]), strings.Fields(lines[2]); f1[0] != "2" || f1[3] != "3" || f2[3] != "-" {
		t.Errorf("groups:\n%s", b.String())
	}
	var plain dlqStats
	plain.add(deadLetter())
	b.Reset()
	if err := writeGroups(&b, "orders.dlq", plain.total, plain.sorted()); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "TIER") {
		t.Errorf("a TIER column without retry tiers:\n%s", b.String())
	}
}

// TestTailSumsUpRetryHeaders: tail prints a line saying which tier a record
// is in, when it is due and where it failed.
func TestTailSumsUpRetryHeaders(t *testing.T) {
	r := tierDeadLetter()
	now, _ := time.Parse(time.RFC3339, "2026-12-01T10:00:52Z")
	got := retryLine(r, now)
	want := "  (retry tier 3 of orders: due in 8s; failed in orders[2]@41, orders.retry.1[0]@5, orders.retry.2[1]@9)\n"
	if got != want {
		t.Errorf("retryLine:\n got %q\nwant %q", got, want)
	}
	if retryLine(deadLetter(), now) != "" {
		t.Error("a line for a record without retry headers")
	}
	if !strings.Contains(string(textRecord(r)), "(retry tier 3 of orders: due ") {
		t.Errorf("tail's text lacks the line:\n%s", textRecord(r))
	}
}
