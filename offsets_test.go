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
