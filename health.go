package kavari

import (
	"sync"
	"sync/atomic"
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
	// TopicNames maps each registered type's tag topic to the real topic
	// Config.Topics.Name gives it (itself when Name is nil), as of Start.
	TopicNames map[string]string `json:"topic_names,omitempty"`
	// Assigned lists this member's partitions by topic.
	Assigned map[string][]int `json:"assigned,omitempty"`
	// InFlight counts records fetched and not yet finished, at most
	// Config.Consume.MaxBuffered (or the number of assigned partitions when
	// larger: each may have one); Running those being handled, at most MaxInFlight.
	InFlight int `json:"in_flight"`
	Running  int `json:"running"`
	// OldestInFlight is how long the oldest unfinished record has waited;
	// one that grows past HandlerTimeout and the retries points at a stuck
	// handler.
	OldestInFlight time.Duration `json:"oldest_in_flight_ns"`
	Commits        int64         `json:"commits"` // successful offset commits
	// Partitions describes each assigned partition that has open records
	// (its entry in Positions).
	Partitions []PartitionHealth `json:"partitions,omitempty"`
	// CommitError is the last final commit of a generation (on a revoke or at
	// Stop) that failed: the records it covered are redelivered to the next
	// owner. Empty when none failed.
	CommitError   string    `json:"commit_error,omitempty"`
	CommitErrorAt time.Time `json:"commit_error_at,omitzero"`
	// LastCommit is when offsets were last committed; zero before the first.
	LastCommit time.Time `json:"last_commit,omitzero"`
	// Counters since New: records every handler finished with (succeeded,
	// or gave up on and dead-lettered; a record moved to a retry topic
	// counts once it is finished there), handler retries scheduled (moves
	// to retry topics included), and dead letters written (poison records
	// included).
	Handled      int64 `json:"handled"`
	Retried      int64 `json:"retried"`
	DeadLettered int64 `json:"dead_lettered"`
	// Positions describes every assigned partition, idle or not: its
	// committed offset, the high watermark last reported by the broker, the
	// lag between them, and its open records.
	Positions []PartitionHealth `json:"positions,omitempty"`
	// AsyncQueued counts messages waiting in the PublishAsync queues.
	AsyncQueued int `json:"async_queued"`
	// AsyncFailedNoCallback counts PublishAsync and TryPublishAsync
	// messages, since New, that failed (not stored after their retries, or
	// never sent) and had a nil callback to tell: each is also logged at
	// error level with its topic and ce_id.
	AsyncFailedNoCallback int64 `json:"async_failed_no_callback"`
	// StuckAfter is the age past which an open record makes Ready false.
	StuckAfter time.Duration `json:"stuck_after_ns"`
	// RetryTiers describes the retry topics (Consume.RetryTopics) of which
	// this member is assigned partitions, by topic and tier.
	RetryTiers []RetryTierHealth `json:"retry_tiers,omitempty"`
	// Transaction is the state of the exactly-once transactions
	// (Consume.ExactlyOnce): nil when off or before Start.
	Transaction *TransactionHealth `json:"transaction,omitempty"`
}

// RetryTierHealth is one retry topic's state on this member (its
// assigned partitions of it).
type RetryTierHealth struct {
	Topic string `json:"topic"` // the tier's topic, e.g. "orders.retry.1"
	Main  string `json:"main"`  // the main topic, e.g. "orders"
	Tier  int    `json:"tier"`  // from 1
	// Delay is the tier's delay (Consume.RetryTopics).
	Delay time.Duration `json:"delay_ns"`
	// Waiting counts the records written to the tier and not yet
	// committed past: the lag of its assigned partitions (see
	// PartitionHealth.Lag: as of the last fetch, or of the end offsets
	// kavari asks for when a partition fetched nothing for 10 s, as a held
	// one does not); -1 while unknown.
	Waiting int64 `json:"waiting"`
	// OldestDue is the earliest due time among the records the consumer
	// holds its partitions for (paused until then); zero when it holds
	// none.
	OldestDue time.Time `json:"oldest_due,omitzero"`
}

// PartitionHealth is the state of one assigned partition: where the group
// stands on it and its open records, records fetched whose offsets cannot be
// committed yet because they or an earlier record of the partition are not
// finished.
type PartitionHealth struct {
	Topic     string `json:"topic"`
	Partition int    `json:"partition"`
	// Committed is the next offset committed (the first not yet
	// handled); before the group's first commit on the partition, the
	// offset the consumer started from; -1 until that is known.
	Committed int64 `json:"committed"`
	// HighWatermark is the offset after the partition's last record, as the
	// broker reported it with the last fetch or, when the partition fetched
	// nothing for 10 s (idle, or paused behind busy handlers), as kavari
	// asked for it since; -1 until known (kavari asks within a second of the
	// assignment when no fetch told it).
	HighWatermark int64 `json:"high_watermark"`
	// Lag is HighWatermark − Committed: records written that the group has
	// not committed; -1 when either is unknown.
	Lag int64 `json:"lag"`
	// Open counts the partition's open records. At most its share of
	// Config.Consume.MaxBuffered is open; then Paused is true: its fetching waits,
	// the other partitions' does not. Paused is true too while the partition
	// waits for room in MaxBuffered beyond the part reserved to it.
	Open   int  `json:"open"`
	Paused bool `json:"paused,omitempty"`
	// OldestOffset, OldestKey and OldestAge describe the first open record,
	// the one commits wait for: an age growing past HandlerTimeout and the
	// retries points at a stuck handler for that key. OldestOffset is -1,
	// and OldestAge 0, when none is open.
	OldestOffset int64         `json:"oldest_offset"`
	OldestKey    string        `json:"oldest_key,omitempty"`
	OldestAge    time.Duration `json:"oldest_age_ns"`
	// Stuck says why the partition cannot move forward, when kavari knows:
	// a dead letter that cannot be written.
	Stuck string `json:"stuck,omitempty"`
}

// health describes p as of now; open reports whether it has open records.
func (p *partition) health(now time.Time) (ph PartitionHealth, open bool) {
	ph = PartitionHealth{Topic: p.topic, Partition: p.id, OldestOffset: -1,
		Paused: p.waiting.Load() || p.bufferFull.Load()}
	ph.Committed, ph.HighWatermark, ph.Lag = p.lagOf()
	if n, offset, key, at, ok := p.tracker.oldest(); ok {
		ph.Open, ph.OldestOffset, ph.OldestKey, ph.OldestAge = n, offset, clipText(string(key), 256), now.Sub(at)
		open = true
	}
	ph.Stuck = p.stuckReason()
	return ph, open
}

// Ready reports whether the consumer is doing its job: started and not
// stopped, in a generation with partitions assigned, and no partition stuck
// (a dead letter that cannot be written, or an open record older than
// StuckAfter). Use it as a readiness probe; a member idle because the group
// has more members than partitions is not ready either.
func (h Health) Ready() bool {
	if !h.Started || h.Stopped || !h.Connected || len(h.Assigned) == 0 {
		return false
	}
	for _, p := range h.Partitions {
		if p.Stuck != "" || (h.StuckAfter > 0 && p.OldestAge > h.StuckAfter) {
			return false
		}
	}
	return true
}

type health struct {
	mu      sync.Mutex
	h       Health
	current *engine

	handled, retried, deadLettered atomic.Int64
}

func (h *health) start(topics []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.h.Started, h.h.Topics = true, topics
}

// setTopicNames records Start's tag topic → real topic mapping.
func (h *health) setTopicNames(real map[string]string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.h.TopicNames = real
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
	h.h.LastCommit = time.Now()
}

// Health returns the consumer's current state. Safe for concurrent use.
func (k *Client) Health() Health {
	k.health.mu.Lock()
	out := k.health.h
	g := k.health.current
	k.health.mu.Unlock()
	out.Handled, out.Retried, out.DeadLettered = k.health.handled.Load(), k.health.retried.Load(), k.health.deadLettered.Load()
	if e := k.consumer.eng.Load(); e != nil && e.eos != nil {
		t := e.eos.snapshot()
		out.Transaction = &t
	}
	out.StuckAfter = k.cfg.stuckAfter()
	out.AsyncQueued = k.pub.queued()
	out.AsyncFailedNoCallback = k.pub.failedNoCallback.Load()
	out.InFlight = k.consumer.buf.inUse()
	out.Running = len(k.consumer.running)
	if g != nil {
		if _, at := g.oldest(); !at.IsZero() {
			out.OldestInFlight = time.Since(at)
		}
		out.Partitions = g.partitionHealth()
		out.Positions = g.positions()
		out.RetryTiers = g.retryHealth(out.Positions)
	}
	return out
}

// stuckAfter is how long a record may stay open before Health.Ready calls
// its partition stuck: every attempt running into HandlerTimeout with the
// longest wait between them, plus a minute; 15 minutes without a
// HandlerTimeout or with unlimited attempts.
func (c *Config) stuckAfter() time.Duration {
	r := c.Consume.Retry
	if c.Consume.HandlerTimeout <= 0 || r.MaxAttempts <= 0 {
		return 15 * time.Minute
	}
	wait := r.MaxDelay
	if wait == 0 {
		wait = max(30*time.Second, r.BaseDelay)
	}
	return time.Duration(r.MaxAttempts)*(c.Consume.HandlerTimeout+wait) + time.Minute
}

// TransactionHealth is Health.Transaction: the exactly-once windows.
type TransactionHealth struct {
	// State is "open" (handlers run and write into the transaction),
	// "committing" (the window closed: running handlers finish, then the
	// transaction ends), "closed" (no transaction: before the first, after
	// Stop, or while one cannot begin).
	State string `json:"state"`
	// Committed and Aborted count the transactions since Start.
	Committed int64 `json:"committed"`
	Aborted   int64 `json:"aborted"`
	// LastAbort is why the last transaction aborted; its records were
	// handed over again. Empty when none aborted.
	LastAbort   string    `json:"last_abort,omitempty"`
	LastAbortAt time.Time `json:"last_abort_at,omitzero"`
}
