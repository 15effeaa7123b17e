package kavari

import (
	"encoding/base64"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// randomRuns returns sorted, disjoint, non-adjacent runs beyond base.
func randomRuns(r *rand.Rand, base int64, count int) []offsetRun {
	var runs []offsetRun
	at := base
	for range count {
		from := at + 1 + r.Int64N(1000)
		if r.IntN(4) == 0 {
			from += r.Int64N(1 << 40)
		}
		n := 1 + r.Int64N(50)
		runs = append(runs, offsetRun{from: from, n: n})
		at = from + n
	}
	return runs
}

func TestOffsetMetaRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 2000; i++ {
		base := r.Int64N(1 << 50)
		if i%10 == 0 {
			base = 0
		}
		runs := randomRuns(r, base, r.IntN(40))
		meta := encodeDoneOffsets(base, runs, metaMaxBytes)
		if len(runs) == 0 {
			assert.Empty(t, meta)
			continue
		}
		require.True(t, strings.HasPrefix(meta, "kv1:"))
		assert.Equal(t, runs, decodeDoneOffsets(base, meta))
		assert.Nil(t, decodeDoneOffsets(base+1, meta), "metadata of another base is ignored")
	}
}

// Too many runs: the longest prefix that fits is written, under the bound.
func TestOffsetMetaBounded(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, limit := range []int{8, 16, 100, 1000, metaMaxBytes} {
		runs := randomRuns(r, 7, 5000)
		meta := encodeDoneOffsets(7, runs, limit)
		require.LessOrEqual(t, len(meta), limit)
		got := decodeDoneOffsets(7, meta)
		if limit >= 16 {
			require.NotEmpty(t, got)
		}
		if len(got) > 0 {
			assert.Equal(t, runs[:len(got)], got, "a prefix of the runs")
		}
	}
	// Every other offset of 10,000 done: the bound holds and part fits.
	var alt []offsetRun
	for o := int64(1); o < 20000; o += 2 {
		alt = append(alt, offsetRun{from: o, n: 1})
	}
	meta := encodeDoneOffsets(0, alt, metaMaxBytes)
	assert.LessOrEqual(t, len(meta), metaMaxBytes)
	assert.Greater(t, len(decodeDoneOffsets(0, meta)), 1000)
	// One long run costs a few bytes.
	assert.Less(t, len(encodeDoneOffsets(0, []offsetRun{{from: 1, n: 10_000}}, metaMaxBytes)), 16)
}

// Runs that are not beyond the base or not increasing are never encoded.
func TestOffsetMetaRejectsBadRuns(t *testing.T) {
	assert.Empty(t, encodeDoneOffsets(5, []offsetRun{{from: 5, n: 1}}, metaMaxBytes))
	assert.Empty(t, encodeDoneOffsets(-1, []offsetRun{{from: 5, n: 1}}, metaMaxBytes))
	meta := encodeDoneOffsets(0, []offsetRun{{from: 1, n: 2}, {from: 2, n: 1}}, metaMaxBytes)
	assert.Equal(t, []offsetRun{{from: 1, n: 2}}, decodeDoneOffsets(0, meta))
}

// Anything not written by this version of kavari is ignored.
func TestOffsetMetaGarbage(t *testing.T) {
	for _, m := range []string{"", "kv1:", "kv1:!!!", "kv2:AAA", "hello", "kv1:" + strings.Repeat("_", 100),
		"kv1:AP____________8B", "kv1:AAA", "kv1:AAE", "kv1:AP__"} {
		assert.Nil(t, decodeDoneOffsets(0, m), "%q", m)
	}
	r := rand.New(rand.NewPCG(5, 6))
	for range 5000 {
		b := make([]byte, r.IntN(40))
		for i := range b {
			b[i] = byte(r.UintN(256))
		}
		m := encodeB64(b)
		for _, run := range decodeDoneOffsets(0, m) { // must not panic; runs must be beyond base
			require.Greater(t, run.from, int64(0))
			require.Greater(t, run.n, int64(0))
		}
	}
}

func FuzzOffsetMetaDecode(f *testing.F) {
	f.Add(int64(0), encodeDoneOffsets(0, []offsetRun{{1, 3}, {9, 1}}, metaMaxBytes))
	f.Add(int64(3), "kv1:AAA")
	f.Fuzz(func(t *testing.T, base int64, meta string) {
		prev := base
		for _, run := range decodeDoneOffsets(base, meta) {
			if run.from <= prev || run.n <= 0 {
				t.Fatalf("bad run %v after %d", run, prev)
			}
			prev = run.from + run.n
		}
	})
}

func encodeB64(b []byte) string { return metaPrefix + base64.RawURLEncoding.EncodeToString(b) }

// carryDone equals the set union of the owner's runs and the inherited ones,
// with base moved past whatever is done from it on, in the canonical form
// encodeDoneOffsets wants (sorted, disjoint, non-adjacent, beyond base).
func TestCarryDoneIsTheUnion(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		base0 := int64(r.IntN(20))
		inherited := smallRuns(r, base0, r.IntN(6))
		// The owner's own progress: base at or beyond base0, open there.
		base := base0 + int64(r.IntN(30))
		done := map[int64]bool{}
		for _, x := range inherited {
			for o := x.from; o < x.from+x.n; o++ {
				done[o] = true
			}
		}
		if done[base] {
			continue // the owner's base is an open record: never in the inherited runs (the feeder skips those)
		}
		own := smallRuns(r, base, r.IntN(6))
		for _, x := range own {
			for o := x.from; o < x.from+x.n; o++ {
				done[o] = true
			}
		}
		gotBase, got := carryDone(base, own, inherited)
		want := base
		for done[want] {
			want++
		}
		require.Equal(t, want, gotBase, "base %d own %v inherited %v", base, own, inherited)
		var wantRuns []offsetRun
		for o := gotBase + 1; o < 1000; o++ {
			if !done[o] {
				continue
			}
			if n := len(wantRuns); n > 0 && wantRuns[n-1].from+wantRuns[n-1].n == o {
				wantRuns[n-1].n++
			} else {
				wantRuns = append(wantRuns, offsetRun{from: o, n: 1})
			}
		}
		if len(wantRuns) == 0 {
			require.Empty(t, got)
		} else {
			require.Equal(t, wantRuns, got, "base %d own %v inherited %v", base, own, inherited)
		}
		require.Equal(t, len(got) > 0, encodeDoneOffsets(gotBase, got, metaMaxBytes) != "")
	}
}

// smallRuns is randomRuns with gaps and lengths under 10.
func smallRuns(r *rand.Rand, base int64, count int) []offsetRun {
	var runs []offsetRun
	at := base
	for range count {
		from := at + 1 + r.Int64N(10)
		n := 1 + r.Int64N(10)
		runs = append(runs, offsetRun{from: from, n: n})
		at = from + n
	}
	return runs
}
