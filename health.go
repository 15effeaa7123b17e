package kavari

import (
	"sync"
	"time"

	"github.com/kavari-go/kavari/internal/transport"
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
	// Partitions describes each assigned partition that has open records.
	Partitions []PartitionHealth `json:"partitions,omitempty"`
	// CommitError is the last final commit of a generation (on a revoke or at
	// Stop) that failed: the records it covered are redelivered to the next
	// owner. Empty when none failed.
	CommitError   string    `json:"commit_error,omitempty"`
	CommitErrorAt time.Time `json:"commit_error_at,omitzero"`
}

// PartitionHealth is the state of one assigned partition with open records:
// records fetched whose offsets cannot be committed yet, because they or an
// earlier record of the partition are not finished.
type PartitionHealth struct {
	Topic     string `json:"topic"`
	Partition int    `json:"partition"`
	// Open counts the partition's open records. At most its share of
	// Config.MaxBuffered is open; then Paused is true: its fetching waits,
	// the other partitions' does not.
	Open   int  `json:"open"`
	Paused bool `json:"paused,omitempty"`
	// OldestOffset, OldestKey and OldestAge describe the first open record,
	// the one commits wait for: an age growing past HandlerTimeout and the
	// retries points at a stuck handler for that key.
	OldestOffset int64         `json:"oldest_offset"`
	OldestKey    string        `json:"oldest_key,omitempty"`
	OldestAge    time.Duration `json:"oldest_age_ns"`
	// Stuck says why the partition cannot move forward, when kavari knows:
	// a dead letter that cannot be written.
	Stuck string `json:"stuck,omitempty"`
}

type health struct {
	mu      sync.Mutex
	h       Health
	current *engine
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

func (h *health) joined(e *engine, gen transport.Generation, assigned map[string][]int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.current = e
	h.h.Connected, h.h.LastError = true, ""
	h.h.Generation, h.h.MemberID, h.h.Assigned = int(gen.ID), gen.MemberID, assigned
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
		out.Partitions = g.partitionHealth()
	}
	return out
}
