package kavari

import (
	"encoding/base64"
	"encoding/binary"
	"strings"
	"sync/atomic"
)

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
