package franz

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kavari-go/kavari/internal/transport"
	"github.com/kavari-go/kavari/internal/transport/conntrack"
)

// NewConsumer returns a group member; it joins when Run starts.
//
// Config mapping: GroupID, Topics; InstanceID (static membership);
// StartOffset (kgo's ConsumeResetOffset); SessionTimeout, RebalanceTimeout
// and HeartbeatInterval (kgo's options of the same names; zero keeps kgo's
// defaults, 45 s, 60 s and 3 s). With the KIP-848 protocol the session
// timeout and heartbeat interval are the broker's (group.consumer.*) and
// the client's values are not sent.
func (t *franzTransport) NewConsumer(cfg transport.Config) (transport.Consumer, error) {
	if cfg.GroupID == "" {
		return nil, errors.New("kavari: franz consumer: no group id")
	}
	if len(cfg.Topics) == 0 {
		return nil, errors.New("kavari: franz consumer: no topics")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	// The consumer dials through conns (TLS included), so that Close can
	// cut its connections.
	plain := cfg
	plain.TLS = nil
	opts, err := clientOpts(plain)
	if err != nil {
		return nil, err
	}
	c := &consumer{
		cfg:         cfg,
		conns:       newConnSet(cfg.TLS),
		kip848:      t.kip848,
		paused:      map[transport.TopicPartition]bool{},
		owned:       map[transport.TopicPartition]int32{},
		committed:   map[transport.TopicPartition]commitPoint{},
		starts:      map[transport.TopicPartition]int64{},
		deliverable: map[transport.TopicPartition]bool{},
		closing:     make(chan struct{}),
	}
	// StartOffset decides only where a partition with no committed offset
	// starts. An offset out of the log's range, below its start or past its
	// end, resumes at the log start: no record still in the log is skipped
	// (kgo would otherwise reset an unconsumed partition to the end with
	// Latest, and rewind by time a consumed one whose log was truncated).
	start := kgo.NewOffset().AtStart()
	if cfg.StartOffset == transport.Latest {
		start = kgo.NewOffset().AtEnd()
	}
	opts = append(opts,
		kgo.ConsumerGroup(cfg.GroupID),
		kgo.ConsumeTopics(cfg.Topics...),
		kgo.ConsumeStartOffset(start),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.Dialer(c.conns.Dial),
		// Java's fetch.max.wait.ms (kgo waits 5 s): a resumed or newly
		// assigned partition joins the next fetch sooner.
		kgo.FetchMaxWait(500*time.Millisecond),
		kgo.FetchMaxPartitionBytes(fetchPartitionBytes),
		kgo.Balancers(balancers()...),
		kgo.OnPartitionsAssigned(c.onAssigned),
		kgo.AdjustFetchOffsetsFn(c.adjustStarts),
		kgo.OnPartitionsRevoked(c.onRevoked),
		kgo.OnPartitionsLost(c.onLost),
		kgo.WithHooks(consumerHooks{c}),
	)
	if t.kip848 {
		opts = append(opts, kgo.ServerSideBalancer())
	}
	if cfg.ReadCommitted {
		opts = append(opts, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	}
	if cfg.TransactionalID != "" {
		opts = append(opts, txnOpts(cfg)...)
		c.txn = &txnSide{base: map[transport.TopicPartition]int64{}}
	}
	if cfg.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(cfg.InstanceID))
	}
	if cfg.SessionTimeout > 0 {
		opts = append(opts, kgo.SessionTimeout(cfg.SessionTimeout))
	}
	if cfg.RebalanceTimeout > 0 {
		opts = append(opts, kgo.RebalanceTimeout(cfg.RebalanceTimeout))
	}
	if cfg.HeartbeatInterval > 0 {
		opts = append(opts, kgo.HeartbeatInterval(cfg.HeartbeatInterval))
	}
	c.opts = opts
	return c, nil
}

// commitPoint is the last offset (and its metadata) committed for a
// partition, by this client or found at assignment.
type commitPoint struct {
	offset   int64
	metadata string
}

type consumer struct {
	cfg    transport.Config
	opts   []kgo.Opt
	kip848 bool
	conns  *conntrack.Set
	txn    *txnSide // nil unless Config.TransactionalID is set (txn.go)

	// groupMu is held while the engine is told of assigned, revoked or
	// lost partitions, by kgo's callbacks and by Close's revoke, so that
	// those calls never overlap and a partition Close revoked is not
	// revoked again when kgo leaves the group.
	groupMu sync.Mutex

	// commitMu serializes commits, so that offsets reach the broker in the
	// order they were checked, and lets a revoke wait for a commit in
	// flight before it releases the partitions.
	commitMu sync.Mutex

	mu        sync.Mutex
	cl        *kgo.Client // set by Run
	h         transport.GroupHandler
	runDone   chan struct{}
	closed    bool
	paused    map[transport.TopicPartition]bool
	owned     map[transport.TopicPartition]int32 // generation in which the partition was assigned
	committed map[transport.TopicPartition]commitPoint
	// starts is where each partition assigned with no committed offset
	// starts, as listed before Assigned, until kgo has fetched the
	// group's offsets (adjustStarts).
	starts map[transport.TopicPartition]int64

	// deliverMu is held while records are handed to the engine, and by a
	// revoke while it takes partitions out of deliverable: once Revoked or
	// Lost is called, no record of those partitions is delivered.
	deliverMu   sync.Mutex
	deliverable map[transport.TopicPartition]bool

	closing   chan struct{}
	closeDone chan struct{} // closed when the first Close's leave is over
	closeErr  error         // set before closeDone is closed

	joined atomic.Bool // the member joined the group once (probeUntilJoined stops)

	// lastAlive is when the coordinator last answered one of the member's
	// heartbeats, or the member last joined (unix nanoseconds): the
	// session cannot have expired before lastAlive + the session timeout.
	lastAlive atomic.Int64
	// commitWrites counts the OffsetCommit requests written to a broker
	// (all of them are Commit's, which commitMu serializes): a failed
	// Commit whose count did not move sent nothing.
	commitWrites atomic.Int64
}

// consumerHooks are the kgo hooks of a consumer's client.
type consumerHooks struct{ c *consumer }

// OnBrokerWrite counts the OffsetCommit requests that left (in part or
// whole) for a broker.
func (h consumerHooks) OnBrokerWrite(_ kgo.BrokerMetadata, key int16, bytesWritten int, _, _ time.Duration, _ error) {
	if key == int16(kmsg.OffsetCommit) && bytesWritten > 0 {
		h.c.commitWrites.Add(1)
	}
}

// OnBrokerE2E notes when a heartbeat was answered.
func (h consumerHooks) OnBrokerE2E(_ kgo.BrokerMetadata, key int16, e2e kgo.BrokerE2E) {
	if key == int16(kmsg.Heartbeat) && e2e.Err() == nil {
		h.c.alive()
	}
}

// alive notes that the member's session is known to be valid now.
func (c *consumer) alive() { c.lastAlive.Store(time.Now().UnixNano()) }

var errNotRunning = errors.New("kavari: franz consumer: not running")

// Run joins the group and delivers records until ctx ends or Close is
// called. When ctx ends, the member stays in the group (kgo heartbeats and
// Commit works) until Close leaves it.
func (c *consumer) Run(ctx context.Context, h transport.GroupHandler) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return errors.New("kavari: franz consumer: closed")
	}
	if c.cl != nil {
		c.mu.Unlock()
		return errors.New("kavari: franz consumer: Run called twice")
	}
	c.h = h
	cl, err := c.newClient()
	if err != nil {
		c.mu.Unlock()
		return fmt.Errorf("kavari: franz consumer: %w", err)
	}
	c.cl = cl
	c.runDone = make(chan struct{})
	if len(c.paused) > 0 {
		cl.PauseFetchPartitions(byTopic(keys(c.paused)))
	}
	c.mu.Unlock()
	defer close(c.runDone)

	pollCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var probing sync.WaitGroup
	defer probing.Wait() // after cancel (defers run last first)
	probing.Add(1)
	go func() {
		defer probing.Done()
		c.probeUntilJoined(pollCtx, cl, h)
	}()
	go func() {
		select {
		case <-c.closing:
			cancel()
		case <-pollCtx.Done():
		}
	}()
	bl, _ := h.(transport.Backlogger)
	var backlogs []<-chan struct{}
	// more is how many records kgo held, fetched, when the first of
	// backlogs appeared: they are polled (while kgo still holds any)
	// before the loop waits.
	more := 0
	for {
		// What is not polled stays in kgo's buffer (one fetch per broker:
		// kgo fetches again from a broker only once its last fetch was
		// taken), so a handler with a backlog holds back the fetching.
		// Pausing a partition instead would make kgo drop what it
		// buffered for it, to fetch it again on resume. But the loop
		// waits only once it took what kgo held when the first backlog
		// appeared: kgo returns a fetch partition by partition, and
		// waiting at the first full one would keep the others' records,
		// already fetched, from their handlers (3 partitions and a 1 ms
		// handler: the partitions took turns, and a quarter of the run
		// slots sat idle). A partition's queue grows by at most that.
		if len(backlogs) > 0 && (more <= 0 || cl.BufferedFetchRecords() == 0) {
			for _, ch := range backlogs {
				select {
				case <-ch:
				case <-pollCtx.Done():
					return nil
				}
			}
			backlogs = backlogs[:0]
		}
		had := len(backlogs) > 0
		ctx, endPoll := c.beginPoll(pollCtx)
		fetches := cl.PollRecords(ctx, maxPollRecords)
		if pollCtx.Err() != nil || fetches.IsClientClosed() {
			endPoll()
			return nil
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			if errors.Is(err, context.Canceled) || errors.Is(err, kgo.ErrClientClosed) {
				return
			}
			h.Error(pollError(c.cfg.GroupID, topic, partition, err))
		})
		fetches.EachPartition(func(p kgo.FetchTopicPartition) {
			if len(p.Records) == 0 {
				return
			}
			tp := transport.TopicPartition{Topic: p.Topic, Partition: p.Partition}
			if c.deliver(tp, p.Records, p.HighWatermark) && bl != nil {
				if ch := bl.Backlog(tp); ch != nil {
					backlogs = append(backlogs, ch)
				}
			}
		})
		switch {
		case had:
			more -= max(fetches.NumRecords(), 1)
		case len(backlogs) > 0:
			more = int(cl.BufferedFetchRecords())
		}
		endPoll()
	}
}

// maxPollRecords bounds the records one poll hands to the engine, all
// partitions together (the engine's pending records of a partition are at
// most its share plus one poll).
const maxPollRecords = 500

// pollError labels an error a poll returned. kgo reports an error of the
// group session (join, sync, heartbeat, offset fetch) as a fetch error of
// topic "" partition 0, wrapped in a *kgo.ErrGroupSession: it is the
// group's, not a partition's.
func pollError(group, topic string, partition int32, err error) error {
	var ge *kgo.ErrGroupSession
	if errors.As(err, &ge) {
		if errors.Is(err, kerr.InconsistentGroupProtocol) {
			return fmt.Errorf("kavari: franz consumer: join group %q: %w (the group's members offer no common assignor: this member offers cooperative-sticky and range)", group, ge.Err)
		}
		return fmt.Errorf("kavari: franz consumer: group %q: %w", group, ge.Err)
	}
	if topic == "" {
		return fmt.Errorf("kavari: franz consumer: %w", err)
	}
	return fmt.Errorf("kavari: fetch %s/%d: %w", topic, partition, err)
}

// probeInterval is how often probeUntilJoined pings the brokers.
const probeInterval = time.Second

// probeUntilJoined reports to h.Error, every probeInterval until the member
// first joins, why no broker can be reached (refused connection, TLS or SASL
// failure). kgo joins the group only once it has loaded the topics' metadata,
// and a failed metadata load is only logged: without this, a consumer that
// cannot connect would never say why (Health.LastError would stay empty).
func (c *consumer) probeUntilJoined(ctx context.Context, cl *kgo.Client, h transport.GroupHandler) {
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	for !c.joined.Load() {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := cl.Ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil && !c.joined.Load() {
			h.Error(fmt.Errorf("kavari: franz consumer: no broker reachable: %w", err))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// deliver hands krs to the engine; false when tp is not deliverable (being
// revoked, or not assigned).
func (c *consumer) deliver(tp transport.TopicPartition, krs []*kgo.Record, hw int64) bool {
	// Three allocations per fetch, not per record: the records, the slice
	// of pointers the engine gets, and the bytes of their keys, values and
	// header values, copied out of kgo's fetch response. Without the copy,
	// one record the engine still holds keeps the whole response (up to
	// fetchPartitionBytes for every partition the broker answered for)
	// alive; with it, what the engine holds is about the size of the
	// records it holds. The headers stay in the slice kgo made for each
	// record (its own allocation, not part of the response), their values
	// moved to the copy.
	nb := 0
	for _, kr := range krs {
		nb += len(kr.Key) + len(kr.Value)
		for _, h := range kr.Headers {
			nb += len(h.Value)
		}
	}
	rs := make([]transport.Record, len(krs))
	recs := make([]*transport.Record, len(krs))
	arena := make([]byte, 0, nb)
	own := func(b []byte) []byte {
		if b == nil {
			return nil
		}
		n := len(arena)
		arena = append(arena, b...)
		return arena[n:len(arena):len(arena)]
	}
	for i, kr := range krs {
		r := &rs[i]
		*r = transport.Record{
			Topic: kr.Topic, Partition: kr.Partition, Offset: kr.Offset,
			Key: own(kr.Key), Value: own(kr.Value), Time: kr.Timestamp,
		}
		if hs := kr.Headers; len(hs) > 0 {
			for i := range hs {
				hs[i].Value = own(hs[i].Value)
			}
			r.Headers = asHeaders(hs) // no room beyond their length
		}
		recs[i] = r
	}
	c.deliverMu.Lock()
	defer c.deliverMu.Unlock()
	if !c.deliverable[tp] {
		return false
	}
	c.h.Records(tp, recs, hw)
	return true
}

// The conversion compiles only while kgo's header and transport.Header have
// the same fields in the same order, which is what asHeaders and
// asKgoHeaders rely on.
var _ = transport.Header(kgo.RecordHeader{})

// asHeaders views kgo's headers as transport.Headers, without a copy.
func asHeaders(hs []kgo.RecordHeader) []transport.Header {
	return unsafe.Slice((*transport.Header)(unsafe.Pointer(unsafe.SliceData(hs))), len(hs))
}

// asKgoHeaders views transport.Headers as kgo's, without a copy and without
// room beyond their length.
func asKgoHeaders(hs []transport.Header) []kgo.RecordHeader {
	return unsafe.Slice((*kgo.RecordHeader)(unsafe.Pointer(unsafe.SliceData(hs))), len(hs))
}

// generation returns the member's current generation (the member epoch with
// KIP-848).
func generation(cl *kgo.Client) transport.Generation {
	member, gen := cl.GroupMetadata()
	return transport.Generation{ID: gen, MemberID: member}
}

// onAssigned fetches the committed offsets and metadata of the added
// partitions and hands them to the engine. kgo starts fetching them only
// after this returns, so Assigned always comes before their records. Once
// Close began, nothing is handed over: Close revokes what the member owns
// and leaves, and nothing is delivered any more.
func (c *consumer) onAssigned(ctx context.Context, cl *kgo.Client, assigned map[string][]int32) {
	c.joined.Store(true)
	c.alive()
	if c.isClosing() {
		return
	}
	tps := flatten(assigned)
	gen := generation(cl)
	var parts []transport.Assignment
	var moved []error // committed offsets out of the log's range
	var starts map[transport.TopicPartition]int64
	if len(tps) > 0 {
		var err error
		parts, err = c.fetchCommitted(ctx, cl, tps)
		for i := range parts {
			parts[i].Start = -1
		}
		if err != nil {
			// Offset -1 may hide a committed offset: kgo finds it.
			c.h.Error(err)
		} else {
			if moved, err = clampOutOfRange(ctx, cl, parts); err != nil {
				c.h.Error(err)
			}
			latest := c.cfg.StartOffset == transport.Latest
			if starts, err = resolveStarts(ctx, cl, parts, latest, c.rebalanceBudget()); err != nil && latest {
				// With Earliest kgo, resolving the log start itself,
				// starts at the same place; with Latest, records
				// published before its first fetch are skipped.
				c.cfg.Logger.Warn(err.Error())
				c.h.Error(err)
			}
		}
	}
	c.groupMu.Lock()
	defer c.groupMu.Unlock()
	if c.isClosing() {
		return
	}
	if len(tps) == 0 {
		// kgo calls this at every generation, even when nothing is added
		// (a cooperative rebalance that only took partitions away): the
		// engine learns the generation, and what it still holds.
		c.h.Assigned(gen, nil)
		return
	}
	c.mu.Lock()
	c.txnAssignedLocked(parts)
	for _, a := range parts {
		c.owned[a.TopicPartition] = gen.ID
		delete(c.starts, a.TopicPartition)
		if s, ok := starts[a.TopicPartition]; ok && a.Start >= 0 {
			c.starts[a.TopicPartition] = s
		}
		if a.Offset >= 0 {
			c.committed[a.TopicPartition] = commitPoint{a.Offset, a.Metadata}
		} else {
			delete(c.committed, a.TopicPartition)
		}
	}
	c.mu.Unlock()
	c.h.Assigned(gen, parts)
	for _, err := range moved { // for Health, in the generation
		c.cfg.Logger.Warn(err.Error())
		c.h.Error(err)
	}
	c.deliverMu.Lock()
	for _, tp := range tps {
		c.deliverable[tp] = true
	}
	c.deliverMu.Unlock()
}

func (c *consumer) isClosing() bool {
	select {
	case <-c.closing:
		return true
	default:
		return false
	}
}

// fetchCommitted asks the group coordinator for tps' committed offsets and
// metadata (OffsetFetch, requiring stable offsets), retrying while the
// coordinator answers with a retriable error, for up to the rebalance
// timeout. On failure the partitions are returned with Offset -1 (kgo still
// resumes from the committed offset; only the metadata is missing).
func (c *consumer) fetchCommitted(ctx context.Context, cl *kgo.Client, tps []transport.TopicPartition) ([]transport.Assignment, error) {
	out := make([]transport.Assignment, len(tps))
	for i, tp := range tps {
		out[i] = transport.Assignment{TopicPartition: tp, Offset: -1}
	}
	ctx, cancel := context.WithTimeout(ctx, c.rebalanceBudget())
	defer cancel()
	req := kmsg.NewPtrOffsetFetchRequest()
	req.Group = c.cfg.GroupID
	req.RequireStable = true
	for topic, parts := range byTopic(tps) {
		rt := kmsg.NewOffsetFetchRequestTopic()
		rt.Topic = topic
		rt.Partitions = parts
		req.Topics = append(req.Topics, rt)
	}
	delay := 50 * time.Millisecond
	for {
		err := func() error {
			resp, err := req.RequestWith(ctx, cl)
			if err != nil {
				return err
			}
			if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
				return err
			}
			got := map[transport.TopicPartition]kmsg.OffsetFetchResponseTopicPartition{}
			for _, rt := range resp.Topics {
				for _, rp := range rt.Partitions {
					if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
						return err
					}
					got[transport.TopicPartition{Topic: rt.Topic, Partition: rp.Partition}] = rp
				}
			}
			for i := range out {
				if rp, ok := got[out[i].TopicPartition]; ok && rp.Offset >= 0 {
					out[i].Offset = rp.Offset
					if rp.Metadata != nil {
						out[i].Metadata = *rp.Metadata
					}
				}
			}
			return nil
		}()
		if err == nil {
			return out, nil
		}
		// A kerr error that is not retriable, or a closed client, ends
		// it; retriable kerr errors and network errors (kgo retried those
		// already) are tried again until the budget ends.
		var ke *kerr.Error
		if errors.As(err, &ke) && !ke.Retriable || errors.Is(err, kgo.ErrClientClosed) {
			return out, fmt.Errorf("kavari: fetching committed offsets of group %q: %w", c.cfg.GroupID, err)
		}
		select {
		case <-ctx.Done():
			return out, fmt.Errorf("kavari: fetching committed offsets of group %q: %w", c.cfg.GroupID, err)
		case <-time.After(delay):
		}
		delay = min(2*delay, time.Second)
	}
}

// rebalanceBudget is how long onAssigned may try a request again: the
// rebalance timeout (kgo's default when not configured).
func (c *consumer) rebalanceBudget() time.Duration {
	if c.cfg.RebalanceTimeout > 0 {
		return c.cfg.RebalanceTimeout
	}
	return 60 * time.Second
}

// onRevoked lets the engine drain and commit the revoked partitions (kgo
// keeps heartbeating meanwhile), then releases them.
func (c *consumer) onRevoked(_ context.Context, cl *kgo.Client, revoked map[string][]int32) {
	c.release(cl, flatten(revoked), false)
}

// onLost is kgo's OnPartitionsLost, which kgo calls for any error of its
// group management except a closed client: an IllegalGeneration or
// UnknownMemberID answer (the session is gone, another member may own the
// partitions already), but also a heartbeat that failed on a dropped or
// refused connection, its retries spent, while the coordinator still holds
// the member's session (kgo then rejoins with the same member id). Only the
// first is a lost partition: its handlers are cancelled and nothing is
// committed (Lost).
//
// In the classic group protocol the adapter tells the two apart by asking
// the coordinator (sessionAlive): while the session is valid, or cannot be
// known to have expired, the partitions are revoked (Revoked: in-flight
// handlers finish, the completed offsets are committed in the current
// generation, which the coordinator accepts until the session ends or the
// group moves on), with the adapter heartbeating meanwhile to keep the
// session; they are lost only when the coordinator says the member is gone
// (UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION, FENCED_INSTANCE_ID) or the session
// timeout elapsed since its last answered heartbeat (and one more went
// unanswered). With the KIP-848 protocol kgo retries transient heartbeat
// errors itself and calls OnPartitionsLost when the member was fenced or
// forgotten, or for an error it does not retry: the partitions are lost.
func (c *consumer) onLost(ctx context.Context, cl *kgo.Client, lost map[string][]int32) {
	tps := c.ownedOf(flatten(lost))
	if len(tps) == 0 {
		return
	}
	if c.kip848 {
		c.release(cl, tps, true)
		return
	}
	// Nothing more is delivered for them: kgo invalidates them when this
	// returns, and rejoins.
	c.deliverMu.Lock()
	for _, tp := range tps {
		delete(c.deliverable, tp)
	}
	c.deliverMu.Unlock()
	member, gen := cl.GroupMetadata()
	if !c.sessionAlive(ctx, cl, member, gen) {
		c.release(cl, tps, true)
		return
	}
	// Keep the session while the engine drains and commits: kgo's
	// heartbeat loop is over until this returns.
	stop := make(chan struct{})
	var beating sync.WaitGroup
	beating.Add(1)
	go func() {
		defer beating.Done()
		c.keepAlive(ctx, cl, member, gen, stop)
	}()
	c.release(cl, tps, false)
	close(stop)
	beating.Wait()
}

// ownedOf returns those of tps the member owns.
func (c *consumer) ownedOf(tps []transport.TopicPartition) []transport.TopicPartition {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.DeleteFunc(tps, func(tp transport.TopicPartition) bool {
		_, ok := c.owned[tp]
		return !ok
	})
}

// lossRetry is how often sessionAlive asks the coordinator again while it
// cannot be reached.
const lossRetry = 250 * time.Millisecond

// sessionAlive reports whether the member's session (member, gen) is still
// valid after kgo reported a group error: it sends a heartbeat in that
// session, again every lossRetry while the coordinator cannot be reached.
// True when the coordinator accepts it (also REBALANCE_IN_PROGRESS: the
// member is still in the generation, whose commits are accepted), and when
// Close begins meanwhile (Stop drains and tries to commit; a commit that
// fails is reported). False when the coordinator says the member is gone,
// or once the session timeout elapsed since the coordinator last answered
// (at least one heartbeat interval from now: a heartbeat whose answer was
// lost may have kept the session).
func (c *consumer) sessionAlive(ctx context.Context, cl *kgo.Client, member string, gen int32) bool {
	if member == "" || gen < 0 {
		return false
	}
	deadline := time.Unix(0, c.lastAlive.Load()).Add(c.sessionTimeout())
	if last := time.Now().Add(c.heartbeatInterval()); deadline.Before(last) {
		deadline = last
	}
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	go func() {
		select {
		case <-c.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		err := c.heartbeat(ctx, cl, member, gen)
		switch {
		case err == nil, errors.Is(err, kerr.RebalanceInProgress):
			c.alive()
			return true
		case errors.Is(err, kerr.UnknownMemberID), errors.Is(err, kerr.IllegalGeneration), errors.Is(err, kerr.FencedInstanceID):
			c.h.Error(fmt.Errorf("kavari: franz consumer: session of member %q lost: %w", member, err))
			return false
		}
		if c.isClosing() {
			return true
		}
		if ctx.Err() != nil {
			c.h.Error(fmt.Errorf("kavari: franz consumer: no heartbeat answered within the session timeout, session of member %q presumed lost: %w", member, err))
			return false
		}
		select {
		case <-ctx.Done():
		case <-time.After(lossRetry):
		}
	}
}

// keepAlive heartbeats in the session (member, gen) every heartbeat
// interval until stop is closed or the coordinator says the session is
// over.
func (c *consumer) keepAlive(ctx context.Context, cl *kgo.Client, member string, gen int32, stop <-chan struct{}) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	t := time.NewTicker(c.heartbeatInterval())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := c.heartbeat(ctx, cl, member, gen)
		if errors.Is(err, kerr.UnknownMemberID) || errors.Is(err, kerr.IllegalGeneration) || errors.Is(err, kerr.FencedInstanceID) {
			return // the final commit will be refused, and reported
		}
		if err == nil || errors.Is(err, kerr.RebalanceInProgress) {
			c.alive()
		}
	}
}

// heartbeat sends one classic-protocol heartbeat in the session (member,
// gen) and returns its error.
func (c *consumer) heartbeat(ctx context.Context, cl *kgo.Client, member string, gen int32) error {
	req := kmsg.NewPtrHeartbeatRequest()
	req.Group = c.cfg.GroupID
	req.MemberID = member
	req.Generation = gen
	if c.cfg.InstanceID != "" {
		req.InstanceID = kmsg.StringPtr(c.cfg.InstanceID)
	}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return err
	}
	return kerr.ErrorForCode(resp.ErrorCode)
}

// sessionTimeout and heartbeatInterval are the member's (kgo's defaults
// when not configured).
func (c *consumer) sessionTimeout() time.Duration {
	if c.cfg.SessionTimeout > 0 {
		return c.cfg.SessionTimeout
	}
	return 45 * time.Second
}

func (c *consumer) heartbeatInterval() time.Duration {
	if c.cfg.HeartbeatInterval > 0 {
		return c.cfg.HeartbeatInterval
	}
	return 3 * time.Second
}

// release tells the engine that tps, those of them the member still owns,
// are revoked (or lost), then forgets them. A partition Close revoked
// already is not revoked again when kgo leaves the group.
func (c *consumer) release(cl *kgo.Client, tps []transport.TopicPartition, lost bool) {
	c.groupMu.Lock()
	defer c.groupMu.Unlock()
	c.mu.Lock()
	tps = slices.DeleteFunc(tps, func(tp transport.TopicPartition) bool {
		_, ok := c.owned[tp]
		return !ok
	})
	c.mu.Unlock()
	if len(tps) == 0 {
		return
	}
	gen := generation(cl)
	c.deliverMu.Lock()
	for _, tp := range tps {
		delete(c.deliverable, tp)
	}
	c.deliverMu.Unlock()
	if lost {
		c.h.Lost(gen, tps)
	} else {
		c.h.Revoked(gen, tps)
	}
	c.commitMu.Lock() // a commit in flight for these partitions finishes first
	c.mu.Lock()
	var unpause []transport.TopicPartition
	for _, tp := range tps {
		delete(c.owned, tp)
		delete(c.committed, tp)
		delete(c.starts, tp)
		if c.txn != nil {
			delete(c.txn.base, tp)
		}
		if c.paused[tp] {
			delete(c.paused, tp)
			unpause = append(unpause, tp)
		}
	}
	c.mu.Unlock()
	c.commitMu.Unlock()
	if len(unpause) > 0 {
		// A pause belongs to the engine's handling of the partition; a
		// later owner (maybe this member again) starts unpaused.
		cl.ResumeFetchPartitions(byTopic(unpause))
	}
}

// Commit commits offsets with their metadata. A failed commit matches
// transport.ErrCommitUnconfirmed only when its request was written to a
// broker (in part or whole) before it failed. It refuses (an error, nothing
// sent) when gen is not this member's, or when a partition has not been
// owned continuously since gen; an offset lower than the last one committed
// for its partition is not sent (nor is one equal to it with the same
// metadata), so commits never move backwards.
func (c *consumer) Commit(ctx context.Context, gen transport.Generation, offsets []transport.Offset) error {
	if c.txn != nil {
		return errTxnCommit
	}
	c.commitMu.Lock()
	defer c.commitMu.Unlock()
	c.mu.Lock()
	cl := c.cl
	if cl == nil {
		c.mu.Unlock()
		return errNotRunning
	}
	cur := generation(cl)
	if gen.MemberID != cur.MemberID || gen.ID > cur.ID || gen.ID < 0 {
		c.mu.Unlock()
		return fmt.Errorf("kavari: commit fenced: generation %d of member %q is not the member's current generation %d of %q", gen.ID, gen.MemberID, cur.ID, cur.MemberID)
	}
	send := map[string]map[int32]kgo.EpochOffset{}
	meta := map[transport.TopicPartition]string{}
	for _, o := range offsets {
		since, ok := c.owned[o.TopicPartition]
		if !ok || since > gen.ID {
			c.mu.Unlock()
			return fmt.Errorf("kavari: commit fenced: %s/%d is not owned since generation %d", o.Topic, o.Partition, gen.ID)
		}
		if last, ok := c.committed[o.TopicPartition]; ok && (o.Offset < last.offset || o.Offset == last.offset && o.Metadata == last.metadata) {
			continue
		}
		if send[o.Topic] == nil {
			send[o.Topic] = map[int32]kgo.EpochOffset{}
		}
		send[o.Topic][o.Partition] = kgo.EpochOffset{Epoch: -1, Offset: o.Offset}
		meta[o.TopicPartition] = o.Metadata
	}
	c.mu.Unlock()
	if len(send) == 0 {
		return nil
	}

	setMeta := func(req *kmsg.OffsetCommitRequest) error {
		for i := range req.Topics {
			rt := &req.Topics[i]
			for j := range rt.Partitions {
				rp := &rt.Partitions[j]
				if m, ok := meta[transport.TopicPartition{Topic: rt.Topic, Partition: rp.Partition}]; ok {
					rp.Metadata = kmsg.StringPtr(m)
				}
			}
		}
		return nil
	}
	var (
		resp   *kmsg.OffsetCommitResponse
		reqErr error
	)
	writes := c.commitWrites.Load()
	cl.CommitOffsetsSync(kgo.PreCommitFnContext(ctx, setMeta), send, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, r *kmsg.OffsetCommitResponse, err error) {
		resp, reqErr = r, err
	})
	if reqErr != nil {
		if c.commitWrites.Load() == writes {
			// No OffsetCommit request left for a broker (the context
			// ended first, no coordinator could be reached, the client
			// closed): the broker never saw it.
			return fmt.Errorf("kavari: commit not sent: %w", reqErr)
		}
		return fmt.Errorf("kavari: commit: %w: %w", transport.ErrCommitUnconfirmed, reqErr)
	}
	var errs []error
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rt := range resp.Topics {
		for _, rp := range rt.Partitions {
			tp := transport.TopicPartition{Topic: rt.Topic, Partition: rp.Partition}
			if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
				if errors.Is(err, kerr.OffsetMetadataTooLarge) {
					err = fmt.Errorf("%w: %w", transport.ErrMetadataTooLarge, err)
				}
				errs = append(errs, fmt.Errorf("%s/%d: %w", rt.Topic, rp.Partition, err))
				continue
			}
			if _, ok := c.owned[tp]; ok {
				if last, ok := c.committed[tp]; !ok || send[tp.Topic][tp.Partition].Offset >= last.offset {
					c.committed[tp] = commitPoint{send[tp.Topic][tp.Partition].Offset, meta[tp]}
				}
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("kavari: commit: %w", errors.Join(errs...))
	}
	return nil
}

// Pause stops fetching tps (kgo drops what it buffered for them, and
// fetches it again on Resume).
func (c *consumer) Pause(tps ...transport.TopicPartition) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, tp := range tps {
		c.paused[tp] = true
	}
	if c.cl != nil && len(tps) > 0 {
		c.cl.PauseFetchPartitions(byTopic(tps))
	}
}

// Resume starts fetching tps again.
func (c *consumer) Resume(tps ...transport.TopicPartition) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, tp := range tps {
		delete(c.paused, tp)
	}
	if c.cl != nil && len(tps) > 0 {
		c.cl.ResumeFetchPartitions(byTopic(tps))
	}
}

// Close stops Run, revokes every partition the member owns (Revoked blocks
// while the engine drains and commits), leaves the group and closes the
// client, within ctx.
//
// The revoke comes first, while the member is still in the group: kgo
// stops heartbeating as soon as it starts leaving, and only then calls
// OnPartitionsRevoked, so a drain longer than the session timeout got the
// member expelled and its final commit refused (UNKNOWN_MEMBER_ID). kgo's
// own revoke when it leaves then finds nothing left to revoke.
//
// Leaving waits for a JoinGroup or SyncGroup under way, which the
// coordinator may hold up to the rebalance timeout: when the leave has not
// finished within leaveGrace, Close cuts the connections (the request in
// flight fails, and kgo sends its LeaveGroup on a new one). When ctx ends
// first, every connection is cut and no new one is opened, so that the
// client's requests and goroutines end at once. A later Close (kavari's
// at Stop's deadline, with ctx done) cuts at once too.
//
// A static member (InstanceID) does not send a leave: its partitions stay
// reserved for it until the session timeout, so a restart with the same
// instance id within it gets them back without a rebalance (kgo leaves
// anyway when it is closed between the two phases of a cooperative
// rebalance, so that what it revoked is reassigned).
func (c *consumer) Close(ctx context.Context) error {
	c.mu.Lock()
	first := !c.closed
	if first {
		c.closed = true
		close(c.closing)
		if c.cl != nil {
			c.closeDone = make(chan struct{})
		}
	}
	cl, runDone, closeDone := c.cl, c.runDone, c.closeDone
	c.mu.Unlock()
	if cl == nil {
		return nil
	}
	if first {
		go func() {
			defer close(closeDone)
			c.closeErr = c.shutdown(ctx, cl)
		}()
	}
	select {
	case <-closeDone:
	case <-ctx.Done():
		c.conns.Cut(true)
		return fmt.Errorf("kavari: franz consumer: leaving the group: %w", context.Cause(ctx))
	}
	select {
	case <-runDone:
	case <-ctx.Done():
		c.conns.Cut(true)
		return fmt.Errorf("kavari: franz consumer: %w", context.Cause(ctx))
	}
	if c.closeErr != nil {
		return fmt.Errorf("kavari: franz consumer: leaving the group: %w", c.closeErr)
	}
	return nil
}

// shutdown is the first Close's work: revoke, leave, close the client.
func (c *consumer) shutdown(ctx context.Context, cl *kgo.Client) error {
	c.mu.Lock()
	owned := make([]transport.TopicPartition, 0, len(c.owned))
	for tp := range c.owned {
		owned = append(owned, tp)
	}
	c.mu.Unlock()
	sort.Slice(owned, func(i, j int) bool {
		if owned[i].Topic != owned[j].Topic {
			return owned[i].Topic < owned[j].Topic
		}
		return owned[i].Partition < owned[j].Partition
	})
	c.release(cl, owned, false)

	left := make(chan error, 1)
	go func() {
		err := cl.LeaveGroupContext(ctx)
		if err != nil && c.kip848 && c.cfg.InstanceID != "" && errors.Is(err, kerr.InvalidRequest) {
			err = c.leaveStatic848(ctx, cl)
		}
		left <- err
	}()
	grace := time.NewTimer(c.leaveGrace(ctx))
	defer grace.Stop()
	var err error
	select {
	case err = <-left:
	case <-grace.C:
		c.conns.Cut(false)
		err = <-left // LeaveGroupContext returns when ctx ends
	}
	cl.Close()
	return err
}

// leaveGrace is how long Close lets kgo leave before it cuts the
// connections: twice the heartbeat interval, at most half of what is left
// of ctx.
func (c *consumer) leaveGrace(ctx context.Context) time.Duration {
	grace := 2 * c.heartbeatInterval()
	if deadline, ok := ctx.Deadline(); ok {
		grace = min(grace, time.Until(deadline)/2)
	}
	return max(grace, 0)
}

// leaveStatic848 sends a static member's temporary leave (member epoch -2)
// in the KIP-848 protocol. kgo v1.22.3 sends it without the instance id,
// which the broker refuses (INVALID_REQUEST: InstanceId can't be null), so
// the instance stayed owned by the closed member until the session timeout
// and its restart could not join before that.
func (c *consumer) leaveStatic848(ctx context.Context, cl *kgo.Client) error {
	member, _ := cl.GroupMetadata()
	req := kmsg.NewPtrConsumerGroupHeartbeatRequest()
	req.Group = c.cfg.GroupID
	req.MemberID = member
	req.MemberEpoch = -2
	req.InstanceID = kmsg.StringPtr(c.cfg.InstanceID)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return err
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil && !errors.Is(err, kerr.UnknownMemberID) {
		return err
	}
	return nil
}

func flatten(m map[string][]int32) []transport.TopicPartition {
	var tps []transport.TopicPartition
	for topic, parts := range m {
		for _, p := range parts {
			tps = append(tps, transport.TopicPartition{Topic: topic, Partition: p})
		}
	}
	sort.Slice(tps, func(i, j int) bool {
		if tps[i].Topic != tps[j].Topic {
			return tps[i].Topic < tps[j].Topic
		}
		return tps[i].Partition < tps[j].Partition
	})
	return tps
}

func byTopic(tps []transport.TopicPartition) map[string][]int32 {
	m := map[string][]int32{}
	for _, tp := range tps {
		m[tp.Topic] = append(m[tp.Topic], tp.Partition)
	}
	return m
}

func keys(m map[transport.TopicPartition]bool) []transport.TopicPartition {
	out := make([]transport.TopicPartition, 0, len(m))
	for tp := range m {
		out = append(out, tp)
	}
	return out
}

// fetchPartitionBytes is the most a fetch asks of one partition: kgo's
// default, 1 MiB. A record kgo hands over keeps the whole fetch response it
// was read from in memory, and the engine holds records of several fetches
// at once (a partition's pending records and those in flight), so the
// response size multiplies into the peak heap: consuming 1 KiB records from
// 3 partitions, kavari held about 21 MiB of responses (a heap profile at the
// peak, go run ./bench -cpuprofile) and peaked at 105–127 MiB RSS against
// raw franz-go's 42. 512 KiB halved that (58–63 MiB) but, alternated on a
// quiet machine, consumed 1 KiB records 20 % slower (96,000 msg/s against
// 116,000–122,000, raw franz-go 115,000–120,000), so the default stays and
// deliver copies the records' bytes out of the response instead: the peak
// heap went from 36 to 17 MiB and RSS to 68–71 MiB against raw franz-go's
// 46–48 in the same bench.
const fetchPartitionBytes = 1 << 20
