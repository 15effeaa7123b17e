package kavari

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kavari-go/kavari/internal/transport"
)

// Commits: per partition an offsetTracker follows each record from fetch to
// completion and gives the contiguous completed prefix; the engine commits
// it, fenced by the generation, every CommitInterval (commitLoop) and after a
// revoke's drain (engine.Revoked), never backwards (commitMu). Completed
// offsets beyond the prefix travel in the commit's metadata
// (encodeDoneOffsets), so that the next owner skips them. This file exports
// nothing.

// commitLoop commits the completed prefix of every assigned partition every
// CommitInterval, until the transport's Run returned. A revoke or Stop
// commits its partitions once more after their drain (Revoked).
func (e *engine) commitLoop() {
	t := time.NewTicker(e.deps.cfg.Consume.CommitInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			gen, ps := e.assigned()
			_ = e.commit(gen, ps)
		case <-e.runDone:
			return
		}
	}
}

// startCommitTimeout bounds the commit of where Latest partitions start
// (commitStarts), made while the transport waits for Assigned: at most a
// quarter of the session timeout, so the member's session never depends
// on it.
const startCommitTimeout = 5 * time.Second

// commitStarts commits, fenced by gen, where the partitions ps, assigned
// with no committed offset under AutoOffsetReset Latest, start: the log
// end the transport listed before Assigned (their trackers start there).
// A partition that moves before its owner committed any progress (a
// revoke, a crash, a lost session) then starts at the same place on its
// next owner, not at the log end of that owner's join, which would skip
// the records published in between. Called from Assigned, before the
// partitions' records are dispatched; a commit that fails is logged and
// made again by the next commit (commitLoop, revoke, Stop).
func (e *engine) commitStarts(gen transport.Generation, ps []*partition) {
	d := min(startCommitTimeout, e.deps.cfg.Consume.SessionTimeout/4)
	if d <= 0 {
		d = startCommitTimeout
	}
	if err := e.commitWithin(gen, ps, d); err != nil {
		e.deps.log.Warn("kavari: committing where partitions with no committed offset start (Latest) failed; the next commit makes it", "err", err)
	}
}

// commit commits, fenced by gen, every partition of ps whose completed
// prefix moved forward.
func (e *engine) commit(gen transport.Generation, ps []*partition) error {
	return e.commitWithin(gen, ps, 30*time.Second)
}

// commitWithin is commit, bounded by timeout.
func (e *engine) commitWithin(gen transport.Generation, ps []*partition, timeout time.Duration) error {
	if e.eos != nil {
		return nil // offsets are committed in the windows' transactions (eos.go)
	}
	e.commitMu.Lock()
	defer e.commitMu.Unlock()
	var offsets []transport.Offset
	var moved []*partition
	for _, p := range ps {
		if o, ok := e.toCommit(p); ok {
			offsets = append(offsets, o)
			moved = append(moved, p)
		}
	}
	if len(moved) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	e.sending.Store(&offsets)
	start := time.Now()
	err := e.cons.Commit(ctx, gen, offsets)
	// A broker whose offset.metadata.max.bytes is below kavari's metadata
	// refuses it: commit again at once with shorter metadata, or none.
	for err != nil && errors.Is(err, transport.ErrMetadataTooLarge) && e.shrinkMeta(offsets) {
		for i, p := range moved {
			base, runs := p.tracker.progress()
			offsets[i].Offset, offsets[i].Metadata = base, encodeDoneOffsets(base, runs, e.deps.metaLimit.get())
		}
		err = e.cons.Commit(ctx, gen, offsets)
	}
	e.deps.hooks.onCommitted(offsets, time.Since(start), err)
	if err != nil {
		e.deps.health.note(err)
		e.deps.log.Warn("kavari: commit failed", "err", err)
		return &CommitError{Offsets: offsetMap(offsets), Err: err, MayHaveBeenApplied: errors.Is(err, transport.ErrCommitUnconfirmed)}
	}
	e.sending.Store(nil)
	for i, p := range moved {
		p.committed = offsets[i].Offset
		p.lag.committed.Store(p.committed)
		p.committedMeta = offsets[i].Metadata
		for len(p.inherited) > 0 && p.inherited[0].from+p.inherited[0].n <= p.committed {
			p.inherited = p.inherited[1:] // passed
		}
	}
	e.deps.health.committed()
	return nil
}

// shrinkMeta lowers the commit metadata limit after the broker refused
// offsets' metadata as too large, logging the first time; false when the
// commit carried no metadata to shorten.
func (e *engine) shrinkMeta(offsets []transport.Offset) bool {
	longest := 0
	for _, o := range offsets {
		longest = max(longest, len(o.Metadata))
	}
	if longest == 0 {
		return false
	}
	limit, first := e.deps.metaLimit.shrink(longest)
	if first {
		e.deps.log.Warn("kavari: the broker refuses commit metadata this long (its offset.metadata.max.bytes is lower): committing with shorter metadata, or none; completed offsets beyond the committed one may be handled again after a rebalance",
			"refused_bytes", longest, "limit_bytes", limit)
	}
	return true
}

// toCommit returns what a commit of p would send, and whether p completed
// records since its last commit.
func (e *engine) toCommit(p *partition) (transport.Offset, bool) {
	if !e.caps.CommitMetadata {
		next, _, _ := p.tracker.committable()
		return transport.Offset{TopicPartition: p.tp, Offset: next}, next > p.committed
	}
	// With metadata, the completed offsets beyond the prefix are
	// committed too, so a partition whose head is slow still records
	// the work done behind it.
	base, runs := p.tracker.progress()
	if base < 0 && len(p.inherited) > 0 {
		base = p.committed // nothing reached yet: the inherited commit as it was
	}
	base, runs = carryDone(base, runs, p.inherited)
	meta := encodeDoneOffsets(base, runs, e.deps.metaLimit.get())
	return transport.Offset{TopicPartition: p.tp, Offset: base, Metadata: meta},
		base > p.committed || base == p.committed && base >= 0 && meta != p.committedMeta
}

// uncommitted returns the completed offsets not committed yet, by topic and
// partition: for a Stop that gives up at its deadline before the final
// commit was answered. Called after Stop cut the connections, so a commit
// under way fails at once; should one hold commitMu longer than a second,
// the offsets it is sending are returned.
func (e *engine) uncommitted() map[string]map[int]int64 {
	for give := time.Now().Add(time.Second); !e.commitMu.TryLock(); time.Sleep(time.Millisecond) {
		if time.Now().After(give) {
			if o := e.sending.Load(); o != nil {
				return offsetMap(*o)
			}
			return nil
		}
	}
	defer e.commitMu.Unlock()
	var offsets []transport.Offset
	for _, p := range e.partitions() {
		if next, _, _ := p.tracker.committable(); next > p.committed {
			offsets = append(offsets, transport.Offset{TopicPartition: p.tp, Offset: next})
		}
	}
	return offsetMap(offsets)
}

// offsetMap returns offsets by topic and partition (CommitError.Offsets).
func offsetMap(offsets []transport.Offset) map[string]map[int]int64 {
	m := map[string]map[int]int64{}
	for _, o := range offsets {
		if m[o.Topic] == nil {
			m[o.Topic] = map[int]int64{}
		}
		m[o.Topic][int(o.Partition)] = o.Offset
	}
	return m
}

// offsetTracker follows the records of one partition from fetch to completion
// and says which offset may be committed: the one after the longest prefix of
// fetched records that are all done. Records complete in any order; the
// committable offset only moves forward. Safe for concurrent use.
//
// The partition's window of open records (window) starts at the first
// record that is neither done nor moving: a record whose move to a retry
// tier is under way (moving) holds the commits but not the window, so
// that the records after it keep coming while its write is answered. The
// window falls back to every open record once they reach spanCap: a
// partition never runs further than that ahead of its commits.
type offsetTracker struct {
	mu      sync.Mutex
	entries []trackEntry // entries[head:] are the records not yet committable
	head    int
	whead   int   // head ≤ whead: entries[whead:] are in the window
	spanCap int   // open records past which the window is every open record; 0: no moving records count out
	first   int64 // sequence number of entries[0]
	next    int64 // committable offset; -1 while nothing completed
}

type trackEntry struct {
	offset int64
	at     time.Time
	done   bool
	moving bool   // its move to a retry tier is under way (out of the window)
	key    []byte // for Health: the key of the record the prefix waits for
}

func newOffsetTracker() *offsetTracker { return &offsetTracker{next: -1} }

// startAt makes offset committable before any record completed: where the
// partition starts when nothing is committed for it (with Latest, the log
// end when it was assigned). Records fetched later have offsets from there.
func (t *offsetTracker) startAt(offset int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.next < 0 && len(t.entries) == 0 {
		t.next = offset
	}
}

// add records a fetched record (offsets must increase) and returns its
// sequence number for done.
func (t *offsetTracker) add(offset int64, at time.Time) int64 {
	return t.addKey(offset, nil, at)
}

// addKey is add for a record with key key.
func (t *offsetTracker) addKey(offset int64, key []byte, at time.Time) int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.head > 256 && t.head*2 > len(t.entries) {
		n := copy(t.entries, t.entries[t.head:])
		t.entries = t.entries[:n]
		t.first += int64(t.head)
		t.whead -= t.head
		t.head = 0
	}
	t.entries = append(t.entries, trackEntry{offset: offset, at: at, key: key})
	return t.first + int64(len(t.entries)-1)
}

// done marks the record with sequence number seq complete and returns the
// committable offset.
func (t *offsetTracker) done(seq int64) int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.doneLocked(seq)
}

// finish marks the record with sequence number seq complete and returns the
// number of records in the window.
func (t *offsetTracker) finish(seq int64) (window int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.doneLocked(seq)
	return t.windowLocked()
}

// doneLocked is done; under mu.
func (t *offsetTracker) doneLocked(seq int64) int64 {
	i := int(seq - t.first)
	if i < t.head || i >= len(t.entries) {
		return t.next
	}
	t.entries[i].done = true
	for t.head < len(t.entries) && t.entries[t.head].done {
		t.next = t.entries[t.head].offset + 1
		t.entries[t.head].key = nil
		t.head++
	}
	t.advanceWindowLocked()
	return t.next
}

// setSpanCap sets spanCap (see offsetTracker).
func (t *offsetTracker) setSpanCap(n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.spanCap = n
}

// setMoving marks the open record with sequence number seq moving (on) or
// not, and returns the number of records in the window.
func (t *offsetTracker) setMoving(seq int64, on bool) (window int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	i := int(seq - t.first)
	if i < t.head || i >= len(t.entries) || t.entries[i].done {
		return t.windowLocked()
	}
	t.entries[i].moving = on
	if !on && i < t.whead {
		t.whead = i
	}
	t.advanceWindowLocked()
	return t.windowLocked()
}

// advanceWindowLocked moves whead past the done and moving records; under
// mu.
func (t *offsetTracker) advanceWindowLocked() {
	t.whead = max(t.whead, t.head)
	for t.whead < len(t.entries) && (t.entries[t.whead].done || t.entries[t.whead].moving) {
		t.whead++
	}
}

// window returns the number of records in the window.
func (t *offsetTracker) window() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.windowLocked()
}

// windowLocked is window; under mu.
func (t *offsetTracker) windowLocked() int {
	open := len(t.entries) - t.head
	if t.spanCap <= 0 || open >= t.spanCap {
		return open
	}
	return len(t.entries) - t.whead
}

// committable returns the offset to commit (-1 when nothing completed), the
// number of records still open, and the fetch time of the oldest open one.
func (t *offsetTracker) committable() (next int64, open int, oldest time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	open = len(t.entries) - t.head
	if open > 0 {
		oldest = t.entries[t.head].at
	}
	return t.next, open, oldest
}

// oldest returns the number of records still open and the first of them: its
// offset, key and fetch time (ok false when none is open).
func (t *offsetTracker) oldest() (open int, offset int64, key []byte, at time.Time, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	open = len(t.entries) - t.head
	if open == 0 {
		return 0, 0, nil, time.Time{}, false
	}
	e := t.entries[t.head]
	return open, e.offset, e.key, e.at, true
}

// progress returns where a commit may point and the completed records beyond
// it: base is the committable offset, or, when the prefix is empty but later
// records completed, the offset of the first open record (else -1); runs are the
// completed offsets after base, as runs of consecutive offsets.
func (t *offsetTracker) progress() (base int64, runs []offsetRun) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, e := range t.entries[t.head:] {
		if !e.done {
			continue
		}
		if n := len(runs); n > 0 && runs[n-1].from+runs[n-1].n == e.offset {
			runs[n-1].n++
			continue
		}
		runs = append(runs, offsetRun{from: e.offset, n: 1})
	}
	switch {
	case t.next >= 0:
		return t.next, runs
	case len(runs) > 0:
		return t.entries[t.head].offset, runs
	}
	return -1, nil
}

// Completed offsets beyond the committed one travel in the commit's metadata,
// so that a member taking a partition over (after a rebalance or a crash)
// skips the records its previous owner already handled. The metadata is
//
//	kv1:<base64url, unpadded, of: uvarint(base) then, per run, uvarint(gap) uvarint(length-1)>
//
// where base is the committed offset the metadata belongs to and each run is
// a range of consecutive completed offsets: the first starts gap offsets after
// base, each next one gap offsets after the end of the previous run (a gap is
// at least 1: base itself is never complete, and two runs are never adjacent).
// It is bounded by metaMaxBytes: when the runs do not fit, the longest prefix
// of them that does is written (skipping is an optimisation; correctness
// never depends on it). Metadata that does not parse, or names another base,
// is ignored: nothing is skipped.

// metaPrefix versions the encoding.
const metaPrefix = "kv1:"

// metaMaxBytes bounds the metadata, under Kafka's offset.metadata.max.bytes
// default of 4096. A broker configured lower refuses it: the engine then
// commits with shorter metadata, or none (metaLimiter).
const metaMaxBytes = 4000

// metaMinBytes is the shortest metadata limit worth writing: below it,
// commits carry none.
const metaMinBytes = 32

// metaLimiter is the longest commit metadata the brokers accept, as
// learned: metaMaxBytes until a commit is refused as too large
// (transport.ErrMetadataTooLarge), then shorter. The zero value is ready.
// Safe for concurrent use.
type metaLimiter struct {
	n      atomic.Int64 // 0: metaMaxBytes; -1: no metadata; else the limit
	shrunk atomic.Bool
}

// get returns the limit in bytes; 0 means commits carry no metadata.
func (m *metaLimiter) get() int {
	switch v := m.n.Load(); {
	case v == 0:
		return metaMaxBytes
	case v < 0:
		return 0
	default:
		return int(v)
	}
}

// shrink lowers the limit below refused, the length of metadata the broker
// refused: to half of it, or to none under metaMinBytes. It returns the new
// limit and whether this was the first shrink.
func (m *metaLimiter) shrink(refused int) (limit int, first bool) {
	next := int64(refused / 2)
	if next < metaMinBytes {
		next = -1
	}
	for {
		cur := m.n.Load()
		if cur < 0 || cur > 0 && cur <= next {
			break // already as short
		}
		if m.n.CompareAndSwap(cur, next) {
			break
		}
	}
	return m.get(), !m.shrunk.Swap(true)
}

// offsetRun is the completed offsets [from, from+n).
type offsetRun struct {
	from, n int64
}

// encodeDoneOffsets returns the metadata for base and runs (sorted, disjoint,
// non-adjacent, all beyond base), at most limit bytes; "" when there are no
// runs or not even one fits.
func encodeDoneOffsets(base int64, runs []offsetRun, limit int) string {
	if len(runs) == 0 || base < 0 {
		return ""
	}
	// raw bytes that fit in limit once base64-encoded behind the prefix.
	rawMax := (limit - len(metaPrefix)) * 3 / 4
	buf := binary.AppendUvarint(make([]byte, 0, 64), uint64(base))
	prev, kept := base, 0
	for _, r := range runs {
		if r.from <= prev || r.n <= 0 {
			break // not beyond the previous one: never encode a wrong set
		}
		n := len(buf)
		buf = binary.AppendUvarint(buf, uint64(r.from-prev))
		buf = binary.AppendUvarint(buf, uint64(r.n-1))
		if len(buf) > rawMax {
			buf = buf[:n]
			break
		}
		prev = r.from + r.n
		kept++
	}
	if kept == 0 {
		return ""
	}
	return metaPrefix + base64.RawURLEncoding.EncodeToString(buf)
}

// decodeDoneOffsets returns the runs meta lists for base; nil when meta is
// not kavari's, does not parse, or was written for another base.
func decodeDoneOffsets(base int64, meta string) []offsetRun {
	if base < 0 || !strings.HasPrefix(meta, metaPrefix) || len(meta) > 2*metaMaxBytes {
		return nil
	}
	buf, err := base64.RawURLEncoding.DecodeString(meta[len(metaPrefix):])
	if err != nil {
		return nil
	}
	b, k := binary.Uvarint(buf)
	if k <= 0 || b != uint64(base) {
		return nil
	}
	buf = buf[k:]
	var runs []offsetRun
	prev := base
	for len(buf) > 0 {
		gap, k := binary.Uvarint(buf)
		if k <= 0 || gap == 0 || gap > 1<<62 {
			return nil
		}
		buf = buf[k:]
		n, k := binary.Uvarint(buf)
		if k <= 0 || n > 1<<62 {
			return nil
		}
		buf = buf[k:]
		from := prev + int64(gap)
		if from < prev || from+int64(n)+1 < from {
			return nil // overflow
		}
		runs = append(runs, offsetRun{from: from, n: int64(n) + 1})
		prev = from + int64(n) + 1
	}
	return runs
}

// carryDone adds to a commit's base and runs (the owner's own progress,
// from offsetTracker.progress) the completed offsets the owner inherited in
// the metadata of the commit it was assigned with, so that its commits
// never drop them, also before its feeder reached them. Offsets below base
// are dropped; an inherited run that covers base moves base past it (those
// records were completed, by the previous owner). The result is sorted,
// disjoint and non-adjacent, as encodeDoneOffsets wants it.
func carryDone(base int64, runs, inherited []offsetRun) (int64, []offsetRun) {
	if len(inherited) == 0 {
		return base, runs
	}
	out := make([]offsetRun, 0, len(runs)+len(inherited))
	add := func(r offsetRun) {
		switch end := r.from + r.n; {
		case end <= base:
			return
		case r.from <= base:
			// Covers base, so everything up to end is done (only an
			// inherited run can: base itself is open for the owner). Runs
			// come sorted, so none was kept yet.
			base = end
			return
		}
		if n := len(out); n > 0 && r.from <= out[n-1].from+out[n-1].n {
			out[n-1].n = max(out[n-1].n, r.from+r.n-out[n-1].from) // overlapping or adjacent
			return
		}
		out = append(out, r)
	}
	i, j := 0, 0
	for i < len(runs) || j < len(inherited) {
		if j == len(inherited) || i < len(runs) && runs[i].from <= inherited[j].from {
			add(runs[i])
			i++
		} else {
			add(inherited[j])
			j++
		}
	}
	return base, out
}
