package kavari

import (
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// TestOffsetTrackerRandomized completes records in random orders, with gaps
// in offsets, and checks after every completion that the committable offset is
// exactly the one after the longest completed prefix and never decreases.
func TestOffsetTrackerRandomized(t *testing.T) {
	for round := 0; round < 200; round++ {
		rng := rand.New(rand.NewPCG(uint64(round), 7))
		n := 1 + rng.IntN(2000)
		tr := newOffsetTracker()
		offsets := make([]int64, n)
		seqs := make([]int64, n)
		off := int64(rng.IntN(1000))
		for i := range offsets {
			off += 1 + int64(rng.IntN(3)) // compaction and transaction markers leave gaps
			offsets[i] = off
			seqs[i] = tr.add(off, time.Time{})
		}
		order := rng.Perm(n)
		done := make([]bool, n)
		last := int64(-1)
		for _, i := range order {
			got := tr.done(seqs[i])
			done[i] = true
			want := int64(-1)
			for j := 0; j < n && done[j]; j++ {
				want = offsets[j] + 1
			}
			if got != want {
				t.Fatalf("round %d: committable %d, want %d", round, got, want)
			}
			if got < last {
				t.Fatalf("round %d: committable went backwards %d -> %d", round, last, got)
			}
			last = got
		}
		if last != offsets[n-1]+1 {
			t.Fatalf("round %d: all done but committable %d, want %d", round, last, offsets[n-1]+1)
		}
	}
}

// TestOffsetTrackerInterleaved adds and completes concurrently, as the
// fetcher and the handlers do, and checks the invariants under -race.
func TestOffsetTrackerInterleaved(t *testing.T) {
	tr := newOffsetTracker()
	const n = 20000
	seqs := make(chan int64, 64)
	var wg sync.WaitGroup
	var mu sync.Mutex
	last := int64(-1)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range seqs {
				mu.Lock() // serialises the check, not the tracker against add
				got := tr.done(s)
				if got < last {
					t.Errorf("committable went backwards %d -> %d", last, got)
				}
				last = max(last, got)
				mu.Unlock()
			}
		}()
	}
	for i := int64(0); i < n; i++ {
		seqs <- tr.add(100+i, time.Now())
	}
	close(seqs)
	wg.Wait()
	next, open, _ := tr.committable()
	if next != 100+n || open != 0 {
		t.Fatalf("after all done: next %d open %d, want %d and 0", next, open, 100+n)
	}
}

func TestOffsetTrackerDoubleDoneIgnored(t *testing.T) {
	tr := newOffsetTracker()
	a := tr.add(5, time.Time{})
	b := tr.add(6, time.Time{})
	if got := tr.done(b); got != -1 {
		t.Fatalf("prefix not complete, got %d", got)
	}
	if got := tr.done(a); got != 7 {
		t.Fatalf("got %d, want 7", got)
	}
	if got := tr.done(a); got != 7 {
		t.Fatalf("second done moved the offset: %d", got)
	}
}

// TestTrackerWindowSkipsMovingRecords: the window starts at the first record
// that is neither done nor moving, falls back to every open record at
// spanCap, takes a record whose move failed back, and survives the
// entries' compaction.
func TestTrackerWindowSkipsMovingRecords(t *testing.T) {
	tr := newOffsetTracker()
	seqs := make([]int64, 0, 1000)
	for off := int64(0); off < 10; off++ {
		seqs = append(seqs, tr.add(off, time.Time{}))
	}
	if got := tr.window(); got != 10 {
		t.Fatalf("window %d, want 10 (no spanCap: every open record)", got)
	}
	tr.setSpanCap(100)
	if got := tr.setMoving(seqs[0], true); got != 9 {
		t.Fatalf("window %d with record 0 moving, want 9", got)
	}
	for _, s := range seqs[1:5] {
		tr.done(s)
	}
	if next, open, _ := tr.committable(); next != -1 || open != 10 {
		t.Fatalf("committable %d, open %d: want -1 and 10 (record 0 holds the commits)", next, open)
	}
	if got := tr.window(); got != 5 {
		t.Fatalf("window %d, want 5 (records 5-9)", got)
	}
	if got := tr.setMoving(seqs[0], false); got != 10 {
		t.Fatalf("window %d once record 0's move failed, want 10", got)
	}
	tr.setMoving(seqs[0], true)
	for off := int64(10); off < 100; off++ {
		seqs = append(seqs, tr.add(off, time.Time{}))
	}
	if got := tr.window(); got != 100 {
		t.Fatalf("window %d at spanCap (100 open), want 100", got)
	}
	for _, s := range seqs[5:] {
		tr.done(s)
	}
	if got := tr.window(); got != 100 {
		t.Fatalf("window %d, want 100: at spanCap every open record counts, done or not", got)
	}
	if next := tr.done(seqs[0]); next != 100 {
		t.Fatalf("committable %d once the move was acknowledged, want 100", next)
	}
	// Compaction (more than 256 committed entries) keeps the window.
	for off := int64(100); off < 700; off++ {
		s := tr.add(off, time.Time{})
		if off != 650 {
			tr.done(s)
		} else {
			seqs = append(seqs, s)
		}
	}
	tr.setMoving(seqs[len(seqs)-1], true)
	if got := tr.window(); got != 0 {
		t.Fatalf("window %d after compaction, want 0", got)
	}
	s := tr.add(700, time.Time{})
	if got := tr.window(); got != 1 {
		t.Fatalf("window %d, want 1 (record 700)", got)
	}
	tr.done(s)
	tr.done(seqs[len(seqs)-1])
	if next, open, _ := tr.committable(); next != 701 || open != 0 {
		t.Fatalf("committable %d, open %d: want 701 and 0", next, open)
	}
}
