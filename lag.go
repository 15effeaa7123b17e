package kavari

import (
	"context"
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
	p.lag.raise(hw)
	p.lag.at.Store(time.Now().UnixNano())
}

// raise moves the high watermark up to hw; it never goes back (a fetch
// response older than an end-offsets answer).
func (l *lagState) raise(hw int64) {
	for {
		old := l.highWater.Load()
		if hw <= old || l.highWater.CompareAndSwap(old, hw) {
			return
		}
	}
}

// lagRefresh is how often the engine asks the broker for the end offsets of
// the partitions that delivered nothing meanwhile (idle, or paused behind
// busy handlers), so that their lag shows records they have not fetched.
var lagRefresh = 10 * time.Second

// lagProbe is how often the engine asks for the end offsets of the
// partitions whose high watermark it does not know yet: newly assigned ones
// that fetched nothing (idle), so that their lag shows soon after the
// assignment. Partitions that fetched cost no request.
var lagProbe = time.Second

// lagLoop refreshes unknown high watermarks every lagProbe and stale ones
// every lagRefresh until the transport's Run returned.
func (e *engine) lagLoop() {
	slow := time.NewTicker(lagRefresh)
	defer slow.Stop()
	fast := time.NewTicker(lagProbe)
	defer fast.Stop()
	for {
		select {
		case <-slow.C:
			e.refreshLag(false)
		case <-fast.C:
			e.refreshLag(true)
		case <-e.runDone:
			return
		}
	}
}

// refreshLag asks the broker for the end offsets of the partitions whose
// high watermark is unknown (unknownOnly) or older than lagRefresh. On
// failure Health keeps the last known ones.
func (e *engine) refreshLag(unknownOnly bool) {
	stale := time.Now().Add(-lagRefresh).UnixNano()
	var ps []*partition
	var tps []transport.TopicPartition
	for _, p := range e.partitions() {
		if unknownOnly && p.lag.highWater.Load() >= 0 || !unknownOnly && p.lag.at.Load() >= stale {
			continue
		}
		ps, tps = append(ps, p), append(tps, p.tp)
	}
	if len(tps) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(e.deps.runCtx, lagRefresh)
	defer cancel()
	ends, err := e.deps.admin.EndOffsets(ctx, tps...)
	if err != nil {
		return
	}
	now := time.Now().UnixNano()
	for _, p := range ps {
		if hw, ok := ends[p.tp]; ok {
			p.lag.raise(hw)
			p.lag.at.Store(now)
		}
	}
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
