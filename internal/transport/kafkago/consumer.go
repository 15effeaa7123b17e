package kafkago

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/kavari-go/kavari/internal/transport"
)

// Consumer is a member of a consumer group on kafka-go's ConsumerGroup, with
// one partition Reader per assigned partition. Rebalances are eager: every
// partition is revoked when a generation ends, and no heartbeats are sent
// from then on, so Revoked must return within the session timeout.
type Consumer struct {
	cfg    transport.Config
	group  *kafka.ConsumerGroup
	dialer *kafka.Dialer
	conns  *connSet // the group's and the readers' connections; Close cuts them

	mu    sync.Mutex
	gen   *kafka.Generation // the current generation; nil between generations
	genID int32
	gates map[transport.TopicPartition]*gate

	inGen     atomic.Int32 // generations whose Revoked has not returned
	closeOnce sync.Once
	groupDone chan struct{} // closed when the group's Close returned: it left the group
	runDone   chan struct{} // closed when Run returns
	running   atomic.Bool
}

// gate holds a partition's reader while the partition is paused.
type gate struct {
	paused bool
	resume chan struct{} // closed by Resume
}

// NewConsumer returns a Consumer for cfg; kafka-go starts joining the group
// at once, in the background.
func (Transport) NewConsumer(cfg transport.Config) (transport.Consumer, error) {
	conns := newConnSet()
	d, err := newDialer(cfg, conns)
	if err != nil {
		return nil, err
	}
	start := kafka.FirstOffset
	if cfg.StartOffset == transport.Latest {
		start = kafka.LastOffset
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	log := cfg.Logger
	group, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:                    cfg.GroupID,
		Brokers:               cfg.Brokers,
		Dialer:                d,
		Topics:                cfg.Topics,
		HeartbeatInterval:     cfg.HeartbeatInterval,
		SessionTimeout:        cfg.SessionTimeout,
		RebalanceTimeout:      cfg.RebalanceTimeout,
		JoinGroupBackoff:      time.Second,
		WatchPartitionChanges: true,
		StartOffset:           start,
		Timeout:               10 * time.Second,
		ErrorLogger: kafka.LoggerFunc(func(msg string, args ...any) {
			if log != nil {
				log.Debug("kavari: group: " + fmt.Sprintf(msg, args...))
			}
		}),
	})
	if err != nil {
		return nil, fmt.Errorf("kavari: consumer group: %w", err)
	}
	return &Consumer{cfg: cfg, group: group, dialer: d, conns: conns, gates: map[transport.TopicPartition]*gate{},
		runDone: make(chan struct{}), groupDone: make(chan struct{})}, nil
}

// Run consumes generation after generation until ctx ends or Close is
// called. Group errors are reported to h.Error; kafka-go joins again with
// backoff. When Run returns, the last generation's Revoked has returned.
func (c *Consumer) Run(ctx context.Context, h transport.GroupHandler) error {
	c.running.Store(true)
	defer close(c.runDone)
	stop := context.AfterFunc(ctx, func() { _ = c.group.Close() })
	defer stop()
	for {
		gen, err := c.group.Next(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, kafka.ErrGroupClosed) {
				break
			}
			h.Error(joinError(c.cfg.GroupID, err))
			continue
		}
		c.generation(gen, h)
	}
	// Closing the group ends the generation and waits for its goroutines:
	// the revoke below, with its drain and final commit.
	_ = c.group.Close()
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

// generation starts one generation's work: a reader per assigned partition,
// and a goroutine that revokes every partition when the generation ends.
func (c *Consumer) generation(kg *kafka.Generation, h transport.GroupHandler) {
	c.inGen.Add(1)
	g := transport.Generation{ID: kg.ID, MemberID: kg.MemberID}
	var parts []transport.Assignment
	topics := make([]string, 0, len(kg.Assignments))
	for t := range kg.Assignments {
		topics = append(topics, t)
	}
	sort.Strings(topics)
	for _, t := range topics {
		for _, a := range kg.Assignments[t] {
			off := a.Offset
			if off < 0 {
				off = -1
			}
			parts = append(parts, transport.Assignment{TopicPartition: transport.TopicPartition{Topic: t, Partition: int32(a.ID)}, Offset: off})
		}
	}
	c.mu.Lock()
	c.gen, c.genID = kg, kg.ID
	c.gates = map[transport.TopicPartition]*gate{}
	c.mu.Unlock()
	h.Assigned(g, parts)

	var readers sync.WaitGroup
	var closes []chan struct{}
	var closesMu sync.Mutex
	readers.Add(len(parts))
	for _, a := range parts {
		start := a.Offset
		if start < 0 {
			start = kafka.FirstOffset
			if c.cfg.StartOffset == transport.Latest {
				start = kafka.LastOffset
			}
		}
		kg.Start(func(ctx context.Context) {
			defer readers.Done()
			closed := c.read(ctx, h, a.TopicPartition, start)
			closesMu.Lock()
			closes = append(closes, closed)
			closesMu.Unlock()
		})
	}
	kg.Start(func(ctx context.Context) {
		defer c.inGen.Add(-1)
		<-ctx.Done() // returning earlier would end the generation
		readers.Wait()
		tps := make([]transport.TopicPartition, len(parts))
		for i, a := range parts {
			tps[i] = a.TopicPartition
		}
		h.Revoked(g, tps)
		c.mu.Lock()
		if c.gen == kg {
			c.gen = nil
		}
		c.mu.Unlock()
		closesMu.Lock()
		defer closesMu.Unlock()
		timeout := time.After(5 * time.Second)
		for _, ch := range closes {
			select {
			case <-ch:
			case <-timeout:
				c.cfg.Logger.Warn("kavari: partition reader did not close in time")
				return
			}
		}
	})
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
	for c.wait(ctx, tp) {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			h.Error(err)
			log.Warn("kavari: fetch failed", "topic", tp.Topic, "partition", tp.Partition, "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		// A fetch under way when the partition was paused may return a
		// record fetched after the pause: hold it until Resume.
		if !c.wait(ctx, tp) {
			break
		}
		// One allocation for the record and the slice that delivers it.
		f := &fetched{rec: transport.Record{Topic: m.Topic, Partition: int32(m.Partition), Offset: m.Offset, Key: m.Key,
			Value: m.Value, Headers: fromHeaders(m.Headers), Time: m.Time}}
		f.one[0] = &f.rec
		h.Records(tp, f.one[:], m.HighWaterMark)
	}
	closed := make(chan struct{})
	go func() { _ = r.Close(); close(closed) }()
	return closed
}

// fetched is a fetched record and the one-element slice Records gets it in.
type fetched struct {
	rec transport.Record
	one [1]*transport.Record
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

// Commit commits offsets in generation gen, through that generation's
// coordinator connection; it fails when gen is no longer the current one.
func (c *Consumer) Commit(ctx context.Context, gen transport.Generation, offsets []transport.Offset) error {
	c.mu.Lock()
	kg := c.gen
	c.mu.Unlock()
	if kg == nil || kg.ID != gen.ID {
		return fmt.Errorf("kavari: commit fenced: generation %d is over", gen.ID)
	}
	if kg.MemberID != gen.MemberID {
		return fmt.Errorf("kavari: commit fenced: member %q is not this member (%q)", gen.MemberID, kg.MemberID)
	}
	m := map[string]map[int]int64{}
	for _, o := range offsets {
		if m[o.Topic] == nil {
			m[o.Topic] = map[int]int64{}
		}
		m[o.Topic][int(o.Partition)] = o.Offset
	}
	err := kg.CommitOffsets(m)
	var kerr kafka.Error
	if err != nil && !errors.As(err, &kerr) {
		// Not the broker's answer: a network error or timeout, after which
		// the commit may have been applied.
		return fmt.Errorf("%w: %w", transport.ErrCommitUnconfirmed, err)
	}
	return err
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
// then every connection is cut. When ctx ends first the connections are cut
// at once, which ends the group's and the readers' requests. When the member
// is not in a generation, a JoinGroup under way is given a moment to be
// answered (joinGrace): kafka-go then learns its member id and leaves the
// group, where a cut join leaves the member the coordinator registered
// until its session times out (found by the fault test
// TestStartStopInterleavingsLeaveNoZombie); a join held longer (it may wait
// RebalanceTimeout + 10 s) is cut. It may be called more than once.
func (c *Consumer) Close(ctx context.Context) error {
	c.closeOnce.Do(func() {
		go func() { _ = c.group.Close(); close(c.groupDone) }()
	})
	if c.inGen.Load() == 0 {
		t := time.NewTimer(c.joinGrace(ctx))
		select {
		case <-c.groupDone:
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		if c.inGen.Load() == 0 { // else a generation started: Run's revoke drains it
			c.conns.closeAll()
		}
	}
	if !c.running.Load() {
		c.conns.closeAll()
		return nil
	}
	select {
	case <-c.runDone:
		c.conns.closeAll()
		return nil
	case <-ctx.Done():
		c.conns.closeAll()
		return context.Cause(ctx)
	}
}
