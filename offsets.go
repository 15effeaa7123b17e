package kavari

import (
	"sync"
	"time"
)

// offsetTracker follows the records of one partition from fetch to completion
// and says which offset may be committed: the one after the longest prefix of
// fetched records that are all done. Records complete in any order; the
// committable offset only moves forward. Safe for concurrent use.
type offsetTracker struct {
	mu      sync.Mutex
	entries []trackEntry // entries[head:] are the records not yet committable
	head    int
	first   int64 // sequence number of entries[0]
	next    int64 // committable offset; -1 while nothing completed
}

type trackEntry struct {
	offset int64
	at     time.Time
	done   bool
	key    []byte // for Health: the key of the record the prefix waits for
}

func newOffsetTracker() *offsetTracker { return &offsetTracker{next: -1} }

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
	return t.next
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
