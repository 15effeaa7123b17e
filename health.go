package kavari

import (
	"sync"
	"time"
)

// Health is a snapshot of the consumer's state, for readiness probes and
// dashboards.
type Health struct {
	Started    bool
	Stopped    bool
	Connected  bool   // the group has a live generation
	LastError  string // the most recent broker error, "" when none since joining
	ErrorAt    time.Time
	Topics     []string // subscribed topics
	Generation int      // the group generation this member is in
	MemberID   string
	Assigned   map[string][]int // partitions by topic
	// InFlight counts records fetched and not yet finished, at most
	// Config.MaxInFlight.
	InFlight int
	// OldestInFlight is how long the oldest unfinished record has waited;
	// one that grows past HandlerTimeout and the retries points at a stuck
	// handler.
	OldestInFlight time.Duration
	Commits        int64 // successful offset commits
}

type health struct {
	mu      sync.Mutex
	h       Health
	current *generation
}

func (h *health) start(topics []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.h.Started, h.h.Topics = true, topics
}

func (h *health) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.h.Stopped, h.h.Connected, h.current = true, false, nil
}

func (h *health) joined(g *generation) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.current = g
	h.h.Connected, h.h.LastError = true, ""
	h.h.Generation, h.h.MemberID, h.h.Assigned = int(g.gen.ID), g.gen.MemberID, g.assigned()
}

// fail records a group-level failure: the member is not in a generation.
func (h *health) fail(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.h.Connected, h.current, h.h.Assigned = false, nil, nil
	h.h.LastError, h.h.ErrorAt = err.Error(), time.Now()
}

// note records an error that does not end the generation.
func (h *health) note(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.h.LastError, h.h.ErrorAt = err.Error(), time.Now()
}

func (h *health) committed(int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.h.Commits++
}

// Health returns the consumer's current state. Safe for concurrent use.
func (k *Kavari) Health() Health {
	k.health.mu.Lock()
	out := k.health.h
	g := k.health.current
	k.health.mu.Unlock()
	out.InFlight = len(k.sem)
	if g != nil {
		if _, at := g.oldest(); !at.IsZero() {
			out.OldestInFlight = time.Since(at)
		}
	}
	return out
}
