package kavari

import (
	"sync"
	"time"
)

// Health is a snapshot of the consumer's state, for readiness probes and
// dashboards.
type Health struct {
	Started    bool      `json:"started"`
	Stopped    bool      `json:"stopped"`
	Connected  bool      `json:"connected"`            // the group has a live generation
	LastError  string    `json:"last_error,omitempty"` // the most recent broker error since joining
	ErrorAt    time.Time `json:"error_at,omitzero"`
	Topics     []string  `json:"topics,omitempty"` // subscribed topics
	Generation int       `json:"generation"`       // the group generation this member is in
	MemberID   string    `json:"member_id,omitempty"`
	// Assigned lists this member's partitions by topic.
	Assigned map[string][]int `json:"assigned,omitempty"`
	// InFlight counts records fetched and not yet finished, at most
	// Config.MaxBuffered; Running those being handled, at most MaxInFlight.
	InFlight int `json:"in_flight"`
	Running  int `json:"running"`
	// OldestInFlight is how long the oldest unfinished record has waited;
	// one that grows past HandlerTimeout and the retries points at a stuck
	// handler.
	OldestInFlight time.Duration `json:"oldest_in_flight_ns"`
	Commits        int64         `json:"commits"` // successful offset commits
	// CommitError is the last final commit of a generation (on a revoke or at
	// Stop) that failed: the records it covered are redelivered to the next
	// owner. Empty when none failed.
	CommitError   string    `json:"commit_error,omitempty"`
	CommitErrorAt time.Time `json:"commit_error_at,omitzero"`
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
	h.h.Stopped, h.h.Connected, h.current, h.h.Assigned = true, false, nil, nil
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
	if h.h.Stopped {
		return
	}
	h.h.LastError, h.h.ErrorAt = err.Error(), time.Now()
}

// commitFailed records a failed final commit of a generation.
func (h *health) commitFailed(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.h.CommitError, h.h.CommitErrorAt = err.Error(), time.Now()
}

func (h *health) committed() {
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
	out.Running = len(k.running)
	if g != nil {
		if _, at := g.oldest(); !at.IsZero() {
			out.OldestInFlight = time.Since(at)
		}
	}
	return out
}
