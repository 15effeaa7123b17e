package kafkago

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/kavari-go/kavari/internal/transport"
	"github.com/kavari-go/kavari/internal/transport/conntrack"
)

// Consumer is a member of a consumer group, running the group protocol on
// a kafka.Client (group.go), with one kafka-go partition Reader per
// assigned partition. Rebalances are eager: every partition is revoked when
// a generation ends, and no heartbeats are sent from then on, so Revoked
// must return within the session timeout.
type Consumer struct {
	cfg    transport.Config
	cl     *kafka.Client // on tr
	tr     *guardedTransport
	dialer *kafka.Dialer
	conns  *conntrack.Set // the group's and the readers' connections; Close cuts them

	mu       sync.Mutex
	gen      *membership // the current generation; nil between generations
	gates    map[transport.TopicPartition]*gate
	memberID string // as the coordinator knows this member; "" before the first join

	closeOnce sync.Once
	closing   chan struct{} // closed by Close
	grace     atomic.Int64  // how long Close lets a JoinGroup under way be answered (ns)
	runDone   chan struct{} // closed when Run returns
	running   atomic.Bool
}

// gate holds a partition's reader while the partition is paused.
type gate struct {
	paused bool
	resume chan struct{} // closed by Resume
}

// NewConsumer returns a Consumer for cfg; it joins the group when Run is
// called.
func (Adapter) NewConsumer(cfg transport.Config) (transport.Consumer, error) {
	conns := newConnSet()
	d, err := newDialer(cfg, conns)
	if err != nil {
		return nil, err
	}
	tr, err := newTransport(cfg, conns)
	if err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.GroupID == "" {
		return nil, errors.New("kavari: consumer group: no group id")
	}
	gt := &guardedTransport{tr: tr}
	return &Consumer{cfg: cfg, cl: &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Transport: gt}, tr: gt, dialer: d,
		conns: conns, gates: map[transport.TopicPartition]*gate{},
		closing: make(chan struct{}), runDone: make(chan struct{})}, nil
}

func (c *Consumer) member() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.memberID
}

func (c *Consumer) setMember(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.memberID = id
}

// Run consumes generation after generation until ctx ends or Close is
// called. Group errors are reported to h.Error, and the member joins again
// with backoff. When Run returns, the last generation's Revoked has
// returned and the member left the group.
func (c *Consumer) Run(ctx context.Context, h transport.GroupHandler) error {
	c.running.Store(true)
	defer close(c.runDone)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-c.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	for ctx.Err() == nil {
		// A JoinGroup under way when Close is called is given a moment
		// to be answered (see Close), so the member knows its id and
		// leaves the group.
		joinCtx, cancelJoin := context.WithCancel(context.WithoutCancel(ctx))
		stopJoin := context.AfterFunc(ctx, func() {
			time.AfterFunc(time.Duration(c.grace.Load()), cancelJoin)
		})
		m, err := c.join(ctx, joinCtx)
		stopJoin()
		cancelJoin()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			h.Error(joinError(c.cfg.GroupID, err))
			c.cfg.Logger.Debug("kavari: group: "+err.Error(), "group", c.cfg.GroupID)
			t := time.NewTimer(joinBackoff)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
			continue
		}
		c.generation(ctx, m, h)
	}
	// The member leaves on connections of its own: Close cuts them at its
	// deadline.
	c.leave(context.Background())
	return nil
}

// joinError labels an error of kafka-go's ConsumerGroup.Next: joining the
// group failed (finding the coordinator, JoinGroup, SyncGroup or the
// committed offsets).
func joinError(group string, err error) error {
	switch {
	case errors.Is(err, kafka.InconsistentGroupProtocol):
		return fmt.Errorf("kavari: kafka-go consumer: join group %q: %w (the group's members offer no common assignor: this member offers range and roundrobin)", group, err)
	case strings.Contains(err.Error(), "unable to read metadata for member"):
		// kafka-go, leading the group, reads each member's subscription
		// as the version 0 it writes itself and fails on a later one
		// (librdkafka's): its error has no type to match.
		return fmt.Errorf("kavari: kafka-go consumer: join group %q: %w (kafka-go reads only version-0 subscriptions: members of other clients such as librdkafka cannot share a group with KafkaGo members; use Transport FranzGo)", group, err)
	}
	return fmt.Errorf("kavari: kafka-go consumer: join group %q: %w", group, err)
}

// shutdown cuts every connection and closes the client's pools; later
// requests fail at once.
func (c *Consumer) shutdown() {
	c.conns.Cut(true)
	c.tr.shutdown()
}

// generation runs one generation: a reader per assigned partition, the
// heartbeats and the partition watch, until the generation ends (or ctx
// does); then it revokes every partition.
func (c *Consumer) generation(ctx context.Context, m *membership, h transport.GroupHandler) {
	g := transport.Generation{ID: m.id, MemberID: m.memberID}
	var parts []transport.Assignment
	for _, t := range slices.Sorted(maps.Keys(m.assigned)) {
		for _, p := range m.assigned[t] {
			a := transport.Assignment{TopicPartition: transport.TopicPartition{Topic: t, Partition: int32(p)}, Offset: -1, Start: -1}
			if off, ok := m.offsets[t][p]; ok && off >= 0 {
				a.Offset, a.Start = off, off
			} else if start, ok := m.starts[t][p]; ok && start >= 0 {
				a.Start = start
			}
			parts = append(parts, a)
		}
	}
	c.mu.Lock()
	c.gen = m
	c.gates = map[transport.TopicPartition]*gate{}
	c.mu.Unlock()
	h.Assigned(g, parts)
	for _, err := range m.outOfRange { // for Health, in the generation
		c.cfg.Logger.Warn(err.Error())
		h.Error(err)
	}

	gctx, end := context.WithCancel(ctx)
	defer end()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); c.heartbeat(gctx, m, h, end) }()
	go func() { defer wg.Done(); c.watchPartitions(gctx, m, end) }()
	var readers sync.WaitGroup
	closes := make([]chan struct{}, len(parts))
	readers.Add(len(parts))
	for i, a := range parts {
		start := a.Start
		if start < 0 {
			start = kafka.FirstOffset
			if c.cfg.StartOffset == transport.Latest {
				start = kafka.LastOffset
			}
		}
		go func() {
			defer readers.Done()
			closes[i] = c.read(gctx, h, a.TopicPartition, start)
		}()
	}
	<-gctx.Done()
	readers.Wait()
	wg.Wait()
	tps := make([]transport.TopicPartition, len(parts))
	for i, a := range parts {
		tps[i] = a.TopicPartition
	}
	h.Revoked(g, tps)
	c.mu.Lock()
	if c.gen == m {
		c.gen = nil
	}
	c.mu.Unlock()
	timeout := time.After(5 * time.Second)
	for _, ch := range closes {
		select {
		case <-ch:
		case <-timeout:
			c.cfg.Logger.Warn("kavari: partition reader did not close in time")
			return
		}
	}
}

// read fetches partition tp from offset and delivers each record to h until
// ctx ends, waiting while the partition is paused. It returns a channel
// closed once the reader is closed.
func (c *Consumer) read(ctx context.Context, h transport.GroupHandler, tp transport.TopicPartition, offset int64) chan struct{} {
	log := c.cfg.Logger
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:        c.cfg.Brokers,
		Topic:          tp.Topic,
		Partition:      int(tp.Partition),
		Dialer:         c.dialer,
		MinBytes:       1,
		MaxBytes:       10 << 20,
		MaxWait:        500 * time.Millisecond,
		ReadBackoffMin: 100 * time.Millisecond,
		ReadBackoffMax: 2 * time.Second,
		ErrorLogger: kafka.LoggerFunc(func(msg string, args ...any) {
			h.Error(fmt.Errorf(msg, args...))
			log.Debug("kavari: fetch: "+fmt.Sprintf(msg, args...), "topic", tp.Topic, "partition", tp.Partition)
		}),
	})
	if err := r.SetOffset(offset); err != nil {
		log.Error("kavari: cannot position reader", "topic", tp.Topic, "partition", tp.Partition, "offset", offset, "err", err)
	}
	var run []*transport.Record // reused: the engine copies the pointers
	for c.wait(ctx, tp) {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			c.fetchFailed(ctx, h, tp, err)
			continue
		}
		// The records kafka-go already holds go with this one, in one
		// Records call: the engine then takes its locks and wakes the
		// partition's feeder once per run, not once per record.
		var hw int64
		run, hw, err = c.gather(r, tp, m, run[:0])
		// A fetch under way when the partition was paused may return a
		// record fetched after the pause: hold the run until Resume.
		if !c.wait(ctx, tp) {
			break
		}
		if len(run) > 0 {
			h.Records(tp, run, hw)
			clear(run)
		}
		if err != nil && ctx.Err() == nil {
			c.fetchFailed(ctx, h, tp, err)
		}
	}
	closed := make(chan struct{})
	go func() { _ = r.Close(); close(closed) }()
	return closed
}

// maxRun bounds the records one Records call delivers (the engine's
// buffering beyond a partition's share is at most this many).
const maxRun = 64

// runMisses is how many times in a row gather may find nothing before it
// ends a run: a FetchMessage with an ended context picks at random between
// a record kafka-go holds and the context, so one miss does not mean there
// is none.
const runMisses = 4

// readyNow is an ended context: FetchMessage with it returns a record only
// if kafka-go holds one already.
var readyNow = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// gather returns first and the records kafka-go already holds after it
// (at most maxRun, without waiting), skipping transaction markers, and the
// high watermark the last of them came with, and the error a FetchMessage
// returned instead of a record, if any.
func (c *Consumer) gather(r *kafka.Reader, tp transport.TopicPartition, first kafka.Message, run []*transport.Record) ([]*transport.Record, int64, error) {
	batch := make([]transport.Record, 0, 8)
	hw := first.HighWaterMark
	add := func(m kafka.Message) {
		hw = m.HighWaterMark
		if isMarker(m) {
			return
		}
		batch = append(batch, transport.Record{Topic: m.Topic, Partition: int32(m.Partition), Offset: m.Offset, Key: m.Key,
			Value: m.Value, Headers: fromHeaders(m.Headers), Time: m.Time})
	}
	add(first)
	var err error
	for misses := 0; len(batch) < maxRun && misses < runMisses && !c.paused(tp); {
		m, ferr := r.FetchMessage(readyNow)
		if ferr != nil {
			if !errors.Is(ferr, context.Canceled) {
				err = ferr
				break
			}
			misses++
			continue
		}
		misses = 0
		add(m)
	}
	// batch may have grown past its first array: point into the last one.
	for i := range batch {
		run = append(run, &batch[i])
	}
	return run, hw, err
}

// paused reports whether tp is paused now.
func (c *Consumer) paused(tp transport.TopicPartition) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.gates[tp]
	return g != nil && g.paused
}

// fetchFailed reports a failed fetch and waits a second (or until ctx
// ends) before the next.
func (c *Consumer) fetchFailed(ctx context.Context, h transport.GroupHandler, tp transport.TopicPartition, err error) {
	h.Error(err)
	c.cfg.Logger.Warn("kavari: fetch failed", "topic", tp.Topic, "partition", tp.Partition, "err", err)
	select {
	case <-ctx.Done():
	case <-time.After(time.Second):
	}
}

// wait waits while tp is paused; false when ctx ended.
func (c *Consumer) wait(ctx context.Context, tp transport.TopicPartition) bool {
	for {
		c.mu.Lock()
		var resume chan struct{}
		if g := c.gates[tp]; g != nil && g.paused {
			resume = g.resume
		}
		c.mu.Unlock()
		if resume == nil {
			return ctx.Err() == nil
		}
		select {
		case <-resume:
		case <-ctx.Done():
			return false
		}
	}
}

// Pause stops fetching tps; a record a fetch under way returns is held
// until Resume.
func (c *Consumer) Pause(tps ...transport.TopicPartition) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, tp := range tps {
		g := c.gates[tp]
		if g == nil {
			g = &gate{}
			c.gates[tp] = g
		}
		if !g.paused {
			g.paused, g.resume = true, make(chan struct{})
		}
	}
}

// Resume starts fetching tps again.
func (c *Consumer) Resume(tps ...transport.TopicPartition) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, tp := range tps {
		if g := c.gates[tp]; g != nil && g.paused {
			g.paused = false
			close(g.resume)
		}
	}
}

// Commit commits offsets in generation gen, through the group
// coordinator (dialled again after a broken connection: a network error
// costs a retried commit, see commit); it fails when gen is no longer the
// current one, or when the coordinator refuses.
func (c *Consumer) Commit(ctx context.Context, gen transport.Generation, offsets []transport.Offset) error {
	c.mu.Lock()
	m := c.gen
	c.mu.Unlock()
	if m == nil || m.id != gen.ID {
		return fmt.Errorf("kavari: commit fenced: generation %d is over", gen.ID)
	}
	if m.memberID != gen.MemberID {
		return fmt.Errorf("kavari: commit fenced: member %q is not this member (%q)", gen.MemberID, m.memberID)
	}
	if len(offsets) == 0 {
		return nil
	}
	if err := c.commit(ctx, m, gen, offsets); err != nil {
		return fmt.Errorf("kavari: commit: %w", err)
	}
	return nil
}

// joinGrace is how long Close lets a JoinGroup under way be answered: two
// heartbeat intervals (the other members rejoin at their next heartbeat),
// at most half of what is left of ctx; nothing once ctx ended.
func (c *Consumer) joinGrace(ctx context.Context) time.Duration {
	if ctx.Err() != nil {
		return 0
	}
	grace := 2 * c.cfg.HeartbeatInterval
	if deadline, ok := ctx.Deadline(); ok {
		grace = min(grace, time.Until(deadline)/2)
	}
	return max(grace, 0)
}

// Close leaves the group: the current generation ends (its Revoked runs),
// the member leaves, then every connection is cut. When ctx ends first the
// connections are cut at once, which ends the group's and the readers'
// requests. A JoinGroup under way is given a moment to be answered
// (joinGrace), so that the member learns its id and leaves the group, where
// a cut join leaves the member the coordinator registered until its
// session times out (found by the fault test
// TestStartStopInterleavingsLeaveNoZombie); a join held longer (it may wait
// RebalanceTimeout + 10 s) is cut. It may be called more than once.
func (c *Consumer) Close(ctx context.Context) error {
	c.closeOnce.Do(func() {
		c.grace.Store(int64(c.joinGrace(ctx)))
		close(c.closing)
	})
	if !c.running.Load() {
		c.shutdown()
		return nil
	}
	select {
	case <-c.runDone:
		c.shutdown()
		return nil
	case <-ctx.Done():
		c.shutdown()
		return context.Cause(ctx)
	}
}

// isMarker reports whether m is a transaction marker (a control record
// that commits or aborts a transaction), which kafka-go's reader hands over
// like any record: it does not read the control flag of a record batch. A
// marker has no headers, a 4-byte key (version 0, type 0 abort or 1
// commit) and a 6-byte value (version 0, coordinator epoch). A record of a
// producer with that shape and no headers is skipped as well: it has no
// msg_type, so kavari would only have dead-lettered it.
func isMarker(m kafka.Message) bool {
	k, v := m.Key, m.Value
	return len(m.Headers) == 0 && len(k) == 4 && k[0] == 0 && k[1] == 0 && k[2] == 0 && k[3] <= 1 &&
		len(v) == 6 && v[0] == 0 && v[1] == 0
}
