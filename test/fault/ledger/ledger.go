// Package ledger keeps the books of a fault test: for every message id, was it
// sent, acknowledged (Publish returned nil), handled, handled more than once,
// never handled. From them it computes one row of the reliability report —
// sent, acknowledged, handled, duplicates, lost (acknowledged but never
// handled), stuck (possibly in the topic, neither handled nor dead-lettered
// when the test ended), per-key order violations, time to recover — and
// writes it as JSON
// into $KAVARI_RELIABILITY_DIR/<test>.json when that variable is set
// (test/cmd/reliability collects the files into docs/reliability.md).
//
// Delivery is at-least-once: duplicates are counted and reported, never
// failed on. A lost message (acknowledged, never handled) fails the test.
//
// Order. Messages with one key are published one after another with
// increasing Seq. The check, when enabled, is on FIRST deliveries: ordered by
// the time they were handled (wall clock, comparable across processes on one
// machine), the first delivery of each id must have a larger Seq than every
// earlier first delivery of the same key. Redeliveries (after a crash or a
// rebalance the new owner starts again at the committed offset) may repeat
// a suffix of a key's sequence; they are counted as rewinds, with the
// deepest one, but are not violations.
//
// A Ledger is safe for concurrent use.
package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kavari-go/kavari"
)

// EnvDir names the directory rows are written to.
const EnvDir = "KAVARI_RELIABILITY_DIR"

// Handle is one successful handling of a message.
type Handle struct {
	ID        string
	Key       string
	Seq       int
	At        time.Time // when the handler finished
	Proc      string    // who handled it, e.g. "pid 1234" or "in-process"
	Topic     string
	Partition int
	Offset    int64
}

// Row is one line of the reliability report.
type Row struct {
	Test  string `json:"test"`
	Title string `json:"title"`           // the fault, in a few words
	Mode  string `json:"mode"`            // "normal" or "long" (KAVARI_LONG=1)
	Setup string `json:"setup,omitempty"` // broker(s) and processes

	Sent          int `json:"sent"`
	Acked         int `json:"acked"`          // Publish returned nil
	PublishFailed int `json:"publish_failed"` // Publish returned an error
	Handled       int `json:"handled"`        // distinct ids handled at least once
	Deliveries    int `json:"deliveries"`     // handler completions in all
	Duplicates    int `json:"duplicates"`     // ids handled more than once
	// ExtraDeliveries is Deliveries - Handled.
	ExtraDeliveries int `json:"extra_deliveries"`
	// ProducerDuplicates counts ids stored at more than one offset: a write
	// that succeeded but whose acknowledgement was lost, then retried.
	ProducerDuplicates int `json:"producer_duplicates"`
	NeverHandled       int `json:"never_handled"` // sent, never handled
	Lost               int `json:"lost"`          // acknowledged, neither handled nor dead-lettered
	// DeadLettered counts ids the test found dead-lettered (DeadLettered)
	// and never handled.
	DeadLettered int `json:"dead_lettered"`
	// Stuck counts ids that may be in the topic (acknowledged, or whose
	// publish failed in a way that may have written them) and that were
	// neither handled nor dead-lettered when the row was taken (the test's
	// end). nil in rows written before the field existed: unknown.
	Stuck      *int     `json:"stuck,omitempty"`
	LostIDs    []string `json:"lost_ids,omitempty"`
	Unexpected int      `json:"unexpected"` // handled ids this test never sent

	OrderChecked    bool     `json:"order_checked"`
	OrderViolations int      `json:"order_violations"`
	OrderExamples   []string `json:"order_examples,omitempty"`
	Rewinds         int      `json:"rewinds"`    // deliveries that went back in their key's sequence
	MaxRewind       int      `json:"max_rewind"` // deepest such step back, in Seq

	RecoverMs   *int64 `json:"recover_ms,omitempty"`
	RecoverWhat string `json:"recover_what,omitempty"`

	DurationMs   int64          `json:"duration_ms"`
	KafkaVersion string         `json:"kafka_version,omitempty"`
	Transport    string         `json:"transport,omitempty"` // KAVARI_TRANSPORT: kafka-go or franz-go
	Passed       bool           `json:"passed"`
	Status       string         `json:"status"`         // PASS, FAIL, or SKIP (a known library bug, see Bugs)
	Bugs         []string       `json:"bugs,omitempty"` // library bugs this test found
	Notes        []string       `json:"notes,omitempty"`
	Extra        map[string]any `json:"extra,omitempty"`
}

// Ledger is the book of one test.
type Ledger struct {
	test  string
	title string
	begin time.Time

	mu           sync.Mutex
	sent         map[string]*entry
	order        []string // ids in Sent order
	handles      []Handle
	checkOrder   bool
	recover      *time.Duration
	recoverWhat  string
	setup        string
	mode         string
	kafkaVersion string
	transport    string
	notes        []string
	bugs         []string
	extra        map[string]any
}

type entry struct {
	sentAt  time.Time
	key     string
	seq     int
	acked   bool
	failed  bool
	unsent  bool // the publish failed and surely wrote nothing
	handled int
	dead    bool              // found dead-lettered
	offsets map[[2]int64]bool // distinct (partition, offset) it was handled at
}

// SetTransport names the transport of the row, for a test that chooses its
// transport itself rather than by KAVARI_TRANSPORT.
func (l *Ledger) SetTransport(tr string) { l.transport = tr }

// transportName is the transport the fault suite runs on (KAVARI_TRANSPORT,
// as internal/testenv reads it).
func transportName() string {
	if v := os.Getenv("KAVARI_TRANSPORT"); v != "" {
		return v
	}
	return "kafka-go"
}

// New returns the ledger of test (a name such as t.Name()) about the fault
// described by title.
func New(test, title string) *Ledger {
	mode := "normal"
	if os.Getenv("KAVARI_LONG") == "1" {
		mode = "long"
	}
	return &Ledger{
		test: test, title: title, begin: time.Now(), mode: mode,
		kafkaVersion: os.Getenv("KAVARI_KAFKA_VERSION"),
		transport:    transportName(),
		sent:         map[string]*entry{}, extra: map[string]any{},
	}
}

// ForTest returns the ledger of t. When t ends, its row is logged and written
// to $KAVARI_RELIABILITY_DIR (with t's pass/fail state).
func ForTest(t testing.TB, title string) *Ledger {
	l := New(t.Name(), title)
	t.Cleanup(func() {
		row := l.Row()
		row.Passed = !t.Failed() && !t.Skipped()
		switch {
		case t.Failed():
			row.Status = "FAIL"
		case t.Skipped() && len(row.Bugs) == 0:
			return // no broker: nothing measured
		case t.Skipped():
			row.Status = "SKIP"
		default:
			row.Status = "PASS"
		}
		t.Log(row.Summary())
		path, err := row.Write()
		if err != nil {
			t.Errorf("ledger: %v", err)
		} else if path != "" {
			t.Logf("ledger: row written to %s", path)
		}
	})
	return l
}

// CheckOrder turns the per-key first-delivery order check on.
func (l *Ledger) CheckOrder() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.checkOrder = true
}

// Setup describes the brokers and processes of the test, for the report.
func (l *Ledger) Setup(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.setup = fmt.Sprintf(format, args...)
}

// KafkaVersion overrides the broker version taken from KAVARI_KAFKA_VERSION.
func (l *Ledger) KafkaVersion(v string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.kafkaVersion = v
}

// Mode overrides the run mode ("normal" or "long").
func (l *Ledger) Mode(m string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.mode = m
}

// Note adds a line to the row's notes.
func (l *Ledger) Note(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.notes = append(l.notes, fmt.Sprintf(format, args...))
}

// Bug records a library bug the test found.
func (l *Ledger) Bug(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.bugs = append(l.bugs, fmt.Sprintf(format, args...))
}

// Set records an extra figure of the test (a duration, a count).
func (l *Ledger) Set(name string, v any) {
	if d, ok := v.(time.Duration); ok {
		v = d.Round(time.Millisecond).String()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.extra[name] = v
}

// Recovered records the time to recover and what it measures.
func (l *Ledger) Recovered(d time.Duration, what string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recover, l.recoverWhat = &d, what
}

// Sent records a message about to be published.
func (l *Ledger) Sent(id, key string, seq int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.sent[id]; ok {
		panic("ledger: id sent twice: " + id)
	}
	l.sent[id] = &entry{key: key, seq: seq, sentAt: time.Now()}
	l.order = append(l.order, id)
}

// Acked records that Publish returned nil for id.
func (l *Ledger) Acked(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.sent[id]; e != nil {
		e.acked = true
	}
}

// Failed records that Publish returned an error for id (it may still have
// been written).
func (l *Ledger) Failed(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.sent[id]; e != nil {
		e.failed = true
	}
}

// Published records the outcome of publishing id. A failed publish whose
// *kavari.PublishError says it cannot have been written is not counted as
// stuck when never handled; any other failure may have written it.
func (l *Ledger) Published(id string, err error) {
	if err == nil {
		l.Acked(id)
		return
	}
	l.Failed(id)
	var pe *kavari.PublishError
	if errors.As(err, &pe) && !pe.MayHaveBeenWritten {
		l.mu.Lock()
		defer l.mu.Unlock()
		if e := l.sent[id]; e != nil {
			e.unsent = true
		}
	}
}

// DeadLettered records that id was found in a dead-letter topic (h says
// where): it is neither lost nor stuck, and not handled unless Handled
// says so too.
func (l *Ledger) DeadLettered(h Handle) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.sent[h.ID]; e != nil {
		e.dead = true
	}
}

// Handled records one successful handling. It reports whether it was the
// first of id.
func (l *Ledger) Handled(h Handle) (first bool) {
	if h.At.IsZero() {
		h.At = time.Now()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.handles = append(l.handles, h)
	e := l.sent[h.ID]
	if e == nil {
		return false
	}
	e.handled++
	if e.offsets == nil {
		e.offsets = map[[2]int64]bool{}
	}
	e.offsets[[2]int64{int64(h.Partition), h.Offset}] = true
	return e.handled == 1
}

// SentAt returns when id was recorded as sent (zero if never).
func (l *Ledger) SentAt(id string) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.sent[id]; e != nil {
		return e.sentAt
	}
	return time.Time{}
}

// IsAcked reports whether Publish returned nil for id.
func (l *Ledger) IsAcked(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.sent[id]
	return e != nil && e.acked
}

// IsHandled reports whether id was handled at least once.
func (l *Ledger) IsHandled(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.sent[id]
	return e != nil && e.handled > 0
}

// Counts returns the numbers of messages sent, acknowledged, and handled at
// least once, and of acknowledged messages not handled yet.
func (l *Ledger) Counts() (sent, acked, handled, pending int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.sent {
		sent++
		if e.acked {
			acked++
		}
		if e.handled > 0 {
			handled++
		}
		if e.acked && e.handled == 0 {
			pending++
		}
	}
	return
}

// Handles returns a copy of every handling recorded so far.
func (l *Ledger) Handles() []Handle {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Handle(nil), l.handles...)
}

// FirstHandleAfter returns the earliest handling that finished after t and
// satisfies ok (nil: any).
func (l *Ledger) FirstHandleAfter(t time.Time, ok func(Handle) bool) (Handle, bool) {
	var best Handle
	found := false
	for _, h := range l.Handles() { // a copy: ok may call the ledger
		if h.At.After(t) && (ok == nil || ok(h)) && (!found || h.At.Before(best.At)) {
			best, found = h, true
		}
	}
	return best, found
}

// WaitAllHandled waits until every acknowledged message was handled or ctx
// ends; it reports whether they all were.
func (l *Ledger) WaitAllHandled(ctx context.Context) bool {
	for {
		if _, _, _, pending := l.Counts(); pending == 0 {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// WaitHandled waits until at least n distinct messages were handled or ctx
// ends.
func (l *Ledger) WaitHandled(ctx context.Context, n int) bool {
	for {
		if _, _, h, _ := l.Counts(); h >= n {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// Row computes the report row from what was recorded so far.
func (l *Ledger) Row() Row {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := Row{
		Test: l.test, Title: l.title, Mode: l.mode, Setup: l.setup,
		KafkaVersion: l.kafkaVersion, Transport: l.transport, OrderChecked: l.checkOrder,
		DurationMs:  time.Since(l.begin).Milliseconds(),
		Notes:       append([]string(nil), l.notes...),
		Bugs:        append([]string(nil), l.bugs...),
		RecoverWhat: l.recoverWhat,
	}
	if len(l.extra) > 0 {
		r.Extra = map[string]any{}
		for k, v := range l.extra {
			r.Extra[k] = v
		}
	}
	if l.recover != nil {
		ms := l.recover.Milliseconds()
		r.RecoverMs = &ms
	}
	stuck := 0
	r.Stuck = &stuck
	for _, id := range l.order {
		e := l.sent[id]
		r.Sent++
		if e.acked {
			r.Acked++
		}
		if e.failed {
			r.PublishFailed++
		}
		switch {
		case e.handled > 0:
			r.Handled++
		case e.dead:
			r.NeverHandled++
			r.DeadLettered++
		default:
			r.NeverHandled++
			if e.acked || !e.unsent {
				stuck++ // it may be in the topic
			}
			if e.acked {
				r.Lost++
				if len(r.LostIDs) < 20 {
					r.LostIDs = append(r.LostIDs, id)
				}
			}
		}
		if e.handled > 1 {
			r.Duplicates++
		}
		if len(e.offsets) > 1 {
			r.ProducerDuplicates++
		}
	}
	for _, h := range l.handles {
		if l.sent[h.ID] == nil {
			r.Unexpected++
			continue
		}
		r.Deliveries++
	}
	r.ExtraDeliveries = r.Deliveries - r.Handled

	// Order: replay the handlings in the order they finished.
	hs := make([]Handle, 0, len(l.handles))
	for _, h := range l.handles {
		if l.sent[h.ID] != nil {
			hs = append(hs, h)
		}
	}
	sort.SliceStable(hs, func(i, j int) bool { return hs[i].At.Before(hs[j].At) })
	seen := map[string]bool{}
	maxFirst := map[string]int{} // per key, largest Seq among first deliveries
	prev := map[string]int{}     // per key, Seq of the previous delivery
	for _, h := range hs {
		if p, ok := prev[h.Key]; ok && h.Seq <= p && seen[h.ID] {
			r.Rewinds++
			r.MaxRewind = max(r.MaxRewind, p-h.Seq)
		}
		prev[h.Key] = h.Seq
		if seen[h.ID] {
			continue
		}
		seen[h.ID] = true
		if m, ok := maxFirst[h.Key]; ok && h.Seq < m {
			if l.checkOrder {
				r.OrderViolations++
				if len(r.OrderExamples) < 5 {
					r.OrderExamples = append(r.OrderExamples, fmt.Sprintf("key %s: seq %d first handled (%s, %s/%d@%d) after seq %d",
						h.Key, h.Seq, h.Proc, h.Topic, h.Partition, h.Offset, m))
				}
			}
			continue
		}
		maxFirst[h.Key] = h.Seq
	}
	return r
}

// Assert fails t when an acknowledged message was lost, a handled id was
// never sent, or (with CheckOrder) a key's first deliveries went backwards.
func (l *Ledger) Assert(t testing.TB) Row {
	t.Helper()
	r := l.Row()
	if r.Lost > 0 {
		t.Errorf("LOST %d acknowledged message(s), e.g. %v", r.Lost, r.LostIDs)
	}
	if r.Unexpected > 0 {
		t.Errorf("%d handling(s) of ids this test never sent", r.Unexpected)
	}
	if r.OrderChecked && r.OrderViolations > 0 {
		t.Errorf("%d per-key order violation(s): %v", r.OrderViolations, r.OrderExamples)
	}
	return r
}

// Summary is the row in one line, for test logs.
func (r Row) Summary() string {
	rec := "-"
	if r.RecoverMs != nil {
		rec = (time.Duration(*r.RecoverMs) * time.Millisecond).String()
	}
	order := "n/a"
	if r.OrderChecked {
		order = fmt.Sprint(r.OrderViolations)
	}
	stuck := "-"
	if r.Stuck != nil {
		stuck = fmt.Sprint(*r.Stuck)
	}
	return fmt.Sprintf("ledger %s [%s]: sent=%d acked=%d failed=%d handled=%d deliveries=%d duplicates=%d (extra %d, producer %d) never_handled=%d dead_lettered=%d LOST=%d stuck=%s unexpected=%d order_violations=%s rewinds=%d(max %d) recover=%s duration=%s",
		r.Test, r.Mode, r.Sent, r.Acked, r.PublishFailed, r.Handled, r.Deliveries, r.Duplicates, r.ExtraDeliveries,
		r.ProducerDuplicates, r.NeverHandled, r.DeadLettered, r.Lost, stuck, r.Unexpected, order, r.Rewinds, r.MaxRewind, rec,
		(time.Duration(r.DurationMs) * time.Millisecond).String())
}

// FileName is the file a row of test is written to.
func FileName(test string) string {
	return strings.NewReplacer("/", "__", " ", "_", string(os.PathSeparator), "__").Replace(test) + ".json"
}

// Write writes r as JSON to $KAVARI_RELIABILITY_DIR/<test>.json and returns
// the path, or "" when the variable is unset.
func (r Row) Write() (string, error) {
	dir := os.Getenv(EnvDir)
	if dir == "" {
		return "", nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, FileName(r.Test))
	return path, os.WriteFile(path, append(b, '\n'), 0o644)
}

// ReadDir reads every row written to dir, sorted by test name.
func ReadDir(dir string) ([]Row, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	var rows []Row
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var r Row
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		rows = append(rows, r)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Test < rows[j].Test })
	return rows, nil
}
