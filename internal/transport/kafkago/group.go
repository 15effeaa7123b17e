package kafkago

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/kavari-go/kavari/internal/transport"
)

// The consumer group protocol, run on a kafka.Client rather than on
// kafka-go's ConsumerGroup. kafka-go's Generation sends its heartbeats,
// partition checks and commits on one coordinator connection that it never
// dials again, and ends the generation at the first failed heartbeat: one
// connection reset cost a rebalance and every commit until then, so
// completed work was handled again. Here each request goes through the
// client's connection pool, which dials again after a broken connection,
// and a generation ends only when the coordinator says so (a rebalance,
// an unknown member, an illegal generation) or when no heartbeat was
// answered for a whole session timeout (the coordinator has expelled the
// member by then). A transient network error inside the session costs a
// retried heartbeat or commit, nothing more.

// balancers are the assignors offered at join, in order of preference:
// kafka-go's defaults.
var balancers = []kafka.GroupBalancer{kafka.RangeGroupBalancer{}, kafka.RoundRobinGroupBalancer{}}

const (
	requestTimeout         = 10 * time.Second // any group request but JoinGroup and SyncGroup
	joinBackoff            = time.Second      // between failed joins
	partitionWatchInterval = 5 * time.Second  // how often partition counts are checked
	retryBackoff           = 200 * time.Millisecond
)

// membership is one generation of the group, as joined.
type membership struct {
	id       int32
	memberID string
	assigned map[string][]int         // topic → partitions
	offsets  map[string]map[int]int64 // committed offsets of assigned (absent: none)
	counts   map[string]int           // partition count of each subscribed topic at join

	// outOfRange has an error for each committed offset that was outside
	// its partition's log and was moved to the log start.
	outOfRange []error
	// starts is where each assigned partition with no committed offset
	// starts (topic → partition → offset), listed at join; nil when they
	// could not be listed with Earliest (the readers then resolve the log
	// start at their first fetch).
	starts map[string]map[int]int64

	// lastOK is when the last heartbeat answered without error was sent
	// (unix ns; at first, when the join was answered): the coordinator
	// keeps the member until SessionTimeout after it.
	lastOK atomic.Int64
}

// sessionLeft is how much of the session the coordinator surely still
// grants m: SessionTimeout after the last heartbeat it answered.
func (m *membership) sessionLeft(session time.Duration) time.Duration {
	return time.Until(time.Unix(0, m.lastOK.Load()).Add(session))
}

// join joins the group and returns the generation joined: JoinGroup (with
// the member id the coordinator asks for, KIP-394), the assignment when this
// member leads, SyncGroup, then the committed offsets of its partitions.
// joinCtx bounds JoinGroup and SyncGroup, ctx the rest.
func (c *Consumer) join(ctx, joinCtx context.Context) (*membership, error) {
	topics := slices.Sorted(slices.Values(c.cfg.Topics))
	req := &kafka.JoinGroupRequest{GroupID: c.cfg.GroupID, SessionTimeout: c.cfg.SessionTimeout,
		RebalanceTimeout: c.cfg.RebalanceTimeout, MemberID: c.member(), ProtocolType: "consumer"}
	for _, b := range balancers {
		ud, err := b.UserData()
		if err != nil {
			return nil, err
		}
		req.Protocols = append(req.Protocols, kafka.GroupProtocol{Name: b.ProtocolName(),
			Metadata: kafka.GroupProtocolSubscription{Topics: topics, UserData: ud}})
	}
	var res *kafka.JoinGroupResponse
	for {
		// The coordinator may hold a JoinGroup up to the rebalance timeout.
		jctx, cancel := context.WithTimeout(joinCtx, c.cfg.RebalanceTimeout+requestTimeout)
		r, err := c.cl.JoinGroup(jctx, req)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("join group: %w", err)
		}
		if errors.Is(r.Error, kafka.MemberIDRequired) && req.MemberID == "" {
			c.setMember(r.MemberID)
			req.MemberID = r.MemberID
			continue
		}
		if r.Error != nil {
			if errors.Is(r.Error, kafka.UnknownMemberId) {
				c.setMember("")
			}
			return nil, fmt.Errorf("join group: %w", r.Error)
		}
		res = r
		break
	}
	c.setMember(res.MemberID)
	sync := &kafka.SyncGroupRequest{GroupID: c.cfg.GroupID, GenerationID: res.GenerationID, MemberID: res.MemberID,
		ProtocolType: "consumer", ProtocolName: res.ProtocolName}
	if res.LeaderID == res.MemberID {
		as, err := c.assign(ctx, res)
		if err != nil {
			return nil, err
		}
		sync.Assignments = as
	}
	sctx, cancel := context.WithTimeout(joinCtx, c.cfg.SessionTimeout+requestTimeout)
	sres, err := c.cl.SyncGroup(sctx, sync)
	cancel()
	if err == nil {
		err = sres.Error
	}
	if err != nil {
		if errors.Is(err, kafka.UnknownMemberId) {
			c.setMember("")
		}
		return nil, fmt.Errorf("sync group: %w", err)
	}
	m := &membership{id: int32(res.GenerationID), memberID: res.MemberID, assigned: map[string][]int{},
		offsets: map[string]map[int]int64{}}
	m.lastOK.Store(time.Now().UnixNano()) // the coordinator just answered SyncGroup
	for t, ps := range sres.Assignment.AssignedPartitions {
		if len(ps) > 0 {
			m.assigned[t] = slices.Sorted(slices.Values(ps))
		}
	}
	if m.counts, err = c.partitionCounts(ctx); err != nil {
		return nil, err
	}
	if len(m.assigned) == 0 {
		return m, nil
	}
	fctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	fres, err := c.cl.OffsetFetch(fctx, &kafka.OffsetFetchRequest{GroupID: c.cfg.GroupID, Topics: m.assigned})
	if err == nil {
		err = fres.Error
	}
	if err != nil {
		return nil, fmt.Errorf("fetch committed offsets: %w", err)
	}
	for t, ps := range fres.Topics {
		for _, p := range ps {
			if p.Error != nil {
				return nil, fmt.Errorf("fetch committed offsets: %s/%d: %w", t, p.Partition, p.Error)
			}
			if p.CommittedOffset >= 0 {
				if m.offsets[t] == nil {
					m.offsets[t] = map[int]int64{}
				}
				m.offsets[t][p.Partition] = p.CommittedOffset
			}
		}
	}
	if m.outOfRange, err = c.clampOutOfRange(ctx, m); err != nil {
		return nil, err
	}
	if err := c.resolveStarts(ctx, m); err != nil && c.cfg.StartOffset == transport.Latest {
		// With Earliest the readers, resolving the log start themselves,
		// start at the same place; with Latest they would skip what is
		// published before their first fetch: join again.
		return nil, err
	}
	return m, nil
}

// assign computes the group's assignment, as its leader, with the protocol
// the coordinator chose.
func (c *Consumer) assign(ctx context.Context, res *kafka.JoinGroupResponse) ([]kafka.SyncGroupRequestAssignment, error) {
	var b kafka.GroupBalancer
	for _, cand := range balancers {
		if cand.ProtocolName() == res.ProtocolName {
			b = cand
		}
	}
	if b == nil {
		return nil, fmt.Errorf("assign: the coordinator chose protocol %q, which this member does not offer", res.ProtocolName)
	}
	members := make([]kafka.GroupMember, 0, len(res.Members))
	var topics []string
	for _, m := range res.Members {
		members = append(members, kafka.GroupMember{ID: m.ID, Topics: m.Metadata.Topics, UserData: m.Metadata.UserData})
		for _, t := range m.Metadata.Topics {
			if !slices.Contains(topics, t) {
				topics = append(topics, t)
			}
		}
	}
	mctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	md, err := c.cl.Metadata(mctx, &kafka.MetadataRequest{Topics: topics})
	if err != nil {
		return nil, fmt.Errorf("assign: %w", err)
	}
	var parts []kafka.Partition
	for _, t := range md.Topics {
		if t.Error == nil {
			parts = append(parts, t.Partitions...)
		}
	}
	as := b.AssignGroups(members, parts)
	out := make([]kafka.SyncGroupRequestAssignment, 0, len(members))
	for _, m := range members {
		out = append(out, kafka.SyncGroupRequestAssignment{MemberID: m.ID,
			Assignment: kafka.GroupProtocolAssignment{AssignedPartitions: as[m.ID]}})
	}
	return out, nil
}

// partitionCounts returns the partition count of each subscribed topic (0:
// the topic does not exist).
func (c *Consumer) partitionCounts(ctx context.Context) (map[string]int, error) {
	mctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	md, err := c.cl.Metadata(mctx, &kafka.MetadataRequest{Topics: c.cfg.Topics})
	if err != nil {
		return nil, fmt.Errorf("read partitions: %w", err)
	}
	counts := map[string]int{}
	for _, t := range md.Topics {
		if t.Error == nil {
			counts[t.Name] = len(t.Partitions)
		}
	}
	return counts, nil
}

// heartbeat keeps generation m alive until ctx ends, and calls end when the
// generation is over: the coordinator answers a heartbeat with an error
// (a rebalance, an unknown member, an illegal generation), or no heartbeat
// was answered for SessionTimeout. A heartbeat that fails on the network
// or on a coordinator moving is tried again on a fresh connection at once
// (after a short pause), not one interval later.
func (c *Consumer) heartbeat(ctx context.Context, m *membership, h transport.GroupHandler, end func()) {
	defer end()
	// Each attempt is bounded so that a connection that went silent is
	// given up, and another dialled, well inside the session.
	attempt := min(max(c.cfg.HeartbeatInterval, time.Second), max(c.cfg.SessionTimeout/4, 500*time.Millisecond))
	wait := c.cfg.HeartbeatInterval
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		sent := time.Now()
		hctx, cancel := context.WithTimeout(ctx, attempt)
		res, err := c.cl.Heartbeat(hctx, &kafka.HeartbeatRequest{GroupID: c.cfg.GroupID, GenerationID: m.id, MemberID: m.memberID})
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = heartbeatError(res)
		}
		switch {
		case err == nil:
			m.lastOK.Store(sent.UnixNano())
			wait = c.cfg.HeartbeatInterval
			continue
		case errors.Is(err, kafka.RebalanceInProgress):
			return // a rebalance: revoke and join again
		case errors.Is(err, kafka.UnknownMemberId), errors.Is(err, kafka.FencedInstanceID):
			c.setMember("")
			h.Error(fmt.Errorf("heartbeat: %w", err))
			return
		case groupRetriable(err):
			h.Error(fmt.Errorf("heartbeat: %w", err))
			if m.sessionLeft(c.cfg.SessionTimeout) <= 0 {
				c.cfg.Logger.Warn("kavari: no heartbeat answered for the session timeout: the generation is over",
					"group", c.cfg.GroupID, "generation", m.id, "err", err)
				return
			}
			wait = retryBackoff
		default: // illegal generation, ...: the generation is over
			h.Error(fmt.Errorf("heartbeat: %w", err))
			return
		}
	}
}

// heartbeatError returns the error a heartbeat was answered with.
// kafka-go v0.4.51 declares the Heartbeat response's fields in the wrong
// order (ErrorCode before ThrottleTimeMs, where versions 1 to 4 put the
// throttle first), so from version 1 on Error is always nil and the error
// code arrives as the low 16 bits of Throttle in milliseconds (the high
// bits are the throttle's, zero unless the broker throttles). Without this
// a member never sees REBALANCE_IN_PROGRESS and blocks the other members'
// join until its session expires (the conformance suite's Rebalance case).
// Revisit when upgrading kafka-go.
func heartbeatError(res *kafka.HeartbeatResponse) error {
	if res.Error != nil {
		return res.Error
	}
	if code := int16(uint32(res.Throttle/time.Millisecond) & 0xffff); code != 0 {
		return kafka.Error(code)
	}
	return nil
}

// watchPartitions ends generation m (calls end) when a subscribed topic's
// partition count changed, so that the leader assigns the new partitions,
// as kafka-go's WatchPartitionChanges does. Failed checks are ignored.
func (c *Consumer) watchPartitions(ctx context.Context, m *membership, end func()) {
	t := time.NewTicker(partitionWatchInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		counts, err := c.partitionCounts(ctx)
		if err != nil {
			continue
		}
		for _, topic := range c.cfg.Topics {
			if counts[topic] != m.counts[topic] {
				c.cfg.Logger.Info("kavari: partitions of a subscribed topic changed: rebalancing", "topic", topic,
					"was", m.counts[topic], "now", counts[topic])
				end()
				return
			}
		}
	}
}

// leave leaves the group, when this member has an id.
func (c *Consumer) leave(ctx context.Context) {
	id := c.member()
	if id == "" {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	res, err := c.cl.LeaveGroup(ctx, &kafka.LeaveGroupRequest{GroupID: c.cfg.GroupID,
		Members: []kafka.LeaveGroupRequestMember{{ID: id}}})
	if err == nil {
		err = res.Error
	}
	if err != nil {
		c.cfg.Logger.Debug("kavari: leave group failed", "group", c.cfg.GroupID, "err", err)
		return
	}
	c.setMember("")
}

// groupRetriable reports whether a group request's error is worth trying again
// in the same generation: the network, a timeout, the coordinator moving or
// loading.
func groupRetriable(err error) bool {
	var kerr kafka.Error
	if !errors.As(err, &kerr) {
		return !errors.Is(err, errClosed) // network (errClosed: the consumer is closing)
	}
	switch kerr {
	case kafka.NotCoordinatorForGroup, kafka.GroupCoordinatorNotAvailable, kafka.GroupLoadInProgress, kafka.RequestTimedOut:
		return true
	}
	return kerr.Temporary()
}

// commit commits offsets in generation m, trying again after a network
// error or a coordinator moving, on a fresh connection, until ctx ends or
// m's session is surely over (SessionTimeout after the last heartbeat
// answered; then the coordinator refuses the commit anyway): a broken
// connection costs a retried commit. A commit the coordinator refuses
// (fenced: the generation is over) is not tried again. The error wraps
// ErrCommitUnconfirmed when an attempt may have reached the broker.
func (c *Consumer) commit(ctx context.Context, m *membership, gen transport.Generation, offsets []transport.Offset) error {
	req := &kafka.OffsetCommitRequest{GroupID: c.cfg.GroupID, GenerationID: int(gen.ID), MemberID: gen.MemberID,
		Topics: map[string][]kafka.OffsetCommit{}}
	for _, o := range offsets {
		req.Topics[o.Topic] = append(req.Topics[o.Topic], kafka.OffsetCommit{Partition: int(o.Partition), Offset: o.Offset})
	}
	maybeSent := false
	for {
		actx, cancel := context.WithTimeout(ctx, requestTimeout)
		res, err := c.cl.OffsetCommit(actx, req)
		cancel()
		if err == nil {
		found:
			for t, ps := range res.Topics {
				for _, p := range ps {
					if p.Error != nil {
						err = fmt.Errorf("%s/%d: %w", t, p.Partition, p.Error)
						break found
					}
				}
			}
			if err == nil {
				return nil
			}
		} else {
			var kerr kafka.Error
			maybeSent = maybeSent || !errors.As(err, &kerr) && !errors.Is(err, errClosed)
		}
		if !groupRetriable(err) || ctx.Err() != nil || m.sessionLeft(c.cfg.SessionTimeout) <= retryBackoff {
			if maybeSent {
				return fmt.Errorf("%w: %w", transport.ErrCommitUnconfirmed, err)
			}
			return err
		}
		c.cfg.Logger.Debug("kavari: commit failed, trying again", "group", c.cfg.GroupID, "err", err)
		t := time.NewTimer(retryBackoff)
		select {
		case <-ctx.Done():
			t.Stop()
			if maybeSent {
				return fmt.Errorf("%w: %w", transport.ErrCommitUnconfirmed, err)
			}
			return err
		case <-t.C:
		}
	}
}
