package kavari

import (
	"sync/atomic"
	"time"

	"github.com/kavari-go/kavari/internal/transport"
)

// lagState is what Health knows of a partition's position: the committed
// offset and the high watermark the broker last reported with a fetch.
type lagState struct {
	committed atomic.Int64 // next offset committed; -1 when none
	highWater atomic.Int64 // offset after the partition's last record; -1 when unknown
	fetched   atomic.Int64 // offset after the last record fetched; -1 when none
	at        atomic.Int64 // when the high watermark was learnt, Unix ns
}

func (l *lagState) init(committed int64) {
	l.committed.Store(max(committed, -1))
	l.highWater.Store(-1)
	l.fetched.Store(-1)
}

// noteFetched records the high watermark hw reported with recs (-1: unknown).
func (p *partition) noteFetched(recs []*transport.Record, hw int64) {
	last := recs[len(recs)-1].Offset + 1
	// Without a committed offset, the group's position is where the
	// consumer started: the first record it was given.
	p.lag.committed.CompareAndSwap(-1, recs[0].Offset)
	p.lag.fetched.Store(last)
	if hw < last {
		hw = last // at least what was fetched
	}
	p.lag.highWater.Store(hw)
	p.lag.at.Store(time.Now().UnixNano())
}

// lagOf returns p's committed offset, high watermark and lag (high
// watermark − committed offset; -1 when either is unknown).
func (p *partition) lagOf() (committed, hw, lag int64) {
	committed, hw = p.lag.committed.Load(), p.lag.highWater.Load()
	if committed < 0 || hw < 0 {
		return committed, hw, -1
	}
	return committed, hw, max(hw-committed, 0)
}
