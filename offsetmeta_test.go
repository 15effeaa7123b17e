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
