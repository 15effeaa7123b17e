package ledger

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kavari-go/kavari"
)

func TestRowCounts(t *testing.T) {
	l := New("TestX/sub", "unit")
	l.CheckOrder()
	for i, id := range []string{"a1", "a2", "a3", "b1", "b2"} {
		key := id[:1]
		l.Sent(id, key, i%3)
	}
	l.Sent("c1", "c", 0)
	for _, id := range []string{"a1", "a2", "a3", "b1", "b2"} {
		l.Acked(id)
	}
	l.Failed("c1")
	t0 := time.Unix(1000, 0)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	l.Handled(Handle{ID: "a1", Key: "a", Seq: 0, At: at(1), Offset: 1})
	l.Handled(Handle{ID: "a2", Key: "a", Seq: 1, At: at(2), Offset: 2})
	l.Handled(Handle{ID: "a3", Key: "a", Seq: 2, At: at(3), Offset: 3})
	// redelivery of a suffix after a rebalance: a rewind, not a violation
	l.Handled(Handle{ID: "a2", Key: "a", Seq: 1, At: at(4), Offset: 2})
	// b2 (seq 1 of key b... Sent gave b1 seq 0, b2 seq 1) first handled before b1: violation
	l.Handled(Handle{ID: "b2", Key: "b", Seq: 1, At: at(5), Offset: 5})
	l.Handled(Handle{ID: "b1", Key: "b", Seq: 0, At: at(6), Offset: 4})
	// a producer duplicate: a3 stored twice
	l.Handled(Handle{ID: "a3", Key: "a", Seq: 2, At: at(7), Offset: 9})
	l.Handled(Handle{ID: "zz", Key: "z", Seq: 0, At: at(8)})

	r := l.Row()
	want := Row{Sent: 6, Acked: 5, PublishFailed: 1, Handled: 5, Deliveries: 7, Duplicates: 2, ExtraDeliveries: 2,
		ProducerDuplicates: 1, NeverHandled: 1, Lost: 0, Unexpected: 1, OrderViolations: 1, Rewinds: 1, MaxRewind: 1}
	got := Row{Sent: r.Sent, Acked: r.Acked, PublishFailed: r.PublishFailed, Handled: r.Handled, Deliveries: r.Deliveries,
		Duplicates: r.Duplicates, ExtraDeliveries: r.ExtraDeliveries, ProducerDuplicates: r.ProducerDuplicates,
		NeverHandled: r.NeverHandled, Lost: r.Lost, Unexpected: r.Unexpected, OrderViolations: r.OrderViolations,
		Rewinds: r.Rewinds, MaxRewind: r.MaxRewind}
	gb, _ := json.Marshal(got)
	wb, _ := json.Marshal(want)
	if string(gb) != string(wb) {
		t.Fatalf("row\n got %s\nwant %s", gb, wb)
	}
	if len(r.OrderExamples) != 1 {
		t.Errorf("order examples %v", r.OrderExamples)
	}
}

func TestLostAndWrite(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(EnvDir, dir)
	l := New("TestLost/a b", "unit")
	l.Sent("x", "k", 0)
	l.Acked("x")
	l.Recovered(1500*time.Millisecond, "restart to first handled")
	l.Set("stop", 2*time.Second)
	r := l.Row()
	if r.Lost != 1 || r.LostIDs[0] != "x" || *r.RecoverMs != 1500 {
		t.Fatalf("row %+v", r)
	}
	path, err := r.Write()
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(path) != "TestLost__a_b.json" {
		t.Errorf("path %s", path)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
	rows, err := ReadDir(dir)
	if err != nil || len(rows) != 1 || rows[0].Extra["stop"] != "2s" {
		t.Fatalf("ReadDir: %v %+v", err, rows)
	}
}

// Stuck counts the ids that may be in the topic (acknowledged, or whose
// publish failed in a way that may have written them) and were neither
// handled nor dead-lettered when the row was taken. A dead-lettered id is
// neither stuck nor lost; an id whose publish surely failed is not stuck.
func TestRowStuck(t *testing.T) {
	l := New("TestStuck", "unit")
	for _, id := range []string{"ok", "dl", "open", "unsure", "unsent", "failed"} {
		l.Sent(id, "k", 0)
	}
	l.Acked("ok")
	l.Acked("dl")
	l.Acked("open")
	l.Published("unsure", &kavari.PublishError{MayHaveBeenWritten: true, Err: errors.New("timeout")})
	l.Published("unsent", &kavari.PublishError{Err: errors.New("refused")})
	l.Failed("failed") // outcome unknown: it may have been written
	l.Handled(Handle{ID: "ok", Key: "k"})
	l.DeadLettered(Handle{ID: "dl", Key: "k"})
	r := l.Row()
	if r.Stuck == nil {
		t.Fatal("Stuck not computed")
	}
	if *r.Stuck != 3 || r.Lost != 1 || r.DeadLettered != 1 || r.Handled != 1 {
		t.Fatalf("stuck %d (want 3: open, unsure, failed), lost %d (want 1: open), dead-lettered %d, handled %d", *r.Stuck, r.Lost, r.DeadLettered, r.Handled)
	}
	if !strings.Contains(r.Summary(), "stuck=3") {
		t.Errorf("summary %q", r.Summary())
	}
}
