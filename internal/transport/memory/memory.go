// Package memory is an in-process transport for kavari's engine tests: topics
// with partitions and offsets, a consumer group coordinator with generations
// and fenced commits (with metadata), Pause/Resume, and deterministic
// delivery, without a broker. It is for tests only.
//
// Rebalances are eager unless Capabilities.Cooperative is set: every member
// revokes all of its partitions (each Revoked returns before anything is
// assigned again), then the partitions are dealt to the members in order. With
// Cooperative, only the partitions that move are revoked.
package memory

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/kavari-go/kavari/internal/transport"
)

// ErrFenced is the error of a commit from a generation that is over, or
// from a member no longer in the group.
var ErrFenced = errors.New("kavari: memory: commit fenced: the generation is over")

// Broker holds the topics and the consumer groups. Its zero value is not
// usable: create one with NewBroker. It is safe for concurrent use.
type Broker struct {
	// Partitions is the partition count of auto-created topics (default 1).
	Partitions int
	// Batch bounds the records of one Records call (default 64).
	Batch int
	// FailProduce, when set, is asked before each record is appended; a
	// non-nil error fails the record (wrap it in a *transport.ProduceError
	// to choose its kind; otherwise it is Retriable).
	FailProduce func(rec *transport.Record) error
	// FailCommit, when set, is asked before each commit; a non-nil error
	// refuses it.
	FailCommit func(gen transport.Generation, offsets []transport.Offset) error
	// MaxMetadataBytes, when positive, is the broker's
	// offset.metadata.max.bytes: a committed offset whose metadata is
	// longer is refused (transport.ErrMetadataTooLarge); the others of the
	// commit are stored.
	MaxMetadataBytes int

	mu        sync.Mutex
	delivered map[transport.TopicPartition]int64
	pauses    map[transport.TopicPartition]int64
	unlinger  map[string]int64 // records written with transport.WithoutLinger, per topic
	writes    map[string]int64 // Produce calls that wrote to a topic, per topic
	topics    map[string][][]transport.Record
	groups    map[string]*group
	changed   chan struct{} // closed and replaced at every append
}

type group struct {
	rebalance sync.Mutex // one rebalance at a time
	gen       int32
	members   []*Consumer // in join order
	committed map[transport.TopicPartition]transport.Offset
}

// NewBroker returns an empty broker.
func NewBroker() *Broker {
	return &Broker{topics: map[string][][]transport.Record{}, groups: map[string]*group{}, changed: make(chan struct{}),
		delivered: map[transport.TopicPartition]int64{}, pauses: map[transport.TopicPartition]int64{}, unlinger: map[string]int64{}, writes: map[string]int64{}}
}

// CreateTopic creates topic with n partitions, if it does not exist.
func (b *Broker) CreateTopic(topic string, n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.topics[topic]; !ok {
		b.topics[topic] = make([][]transport.Record, n)
	}
}

// Append appends rec to its topic's partition rec.Partition (creating the
// topic with that many partitions when missing) and returns its offset.
func (b *Broker) Append(rec transport.Record) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	ps := b.topics[rec.Topic]
	for len(ps) <= int(rec.Partition) {
		ps = append(ps, nil)
	}
	rec.Offset = int64(len(ps[rec.Partition]))
	if rec.Time.IsZero() {
		rec.Time = time.Now()
	}
	ps[rec.Partition] = append(ps[rec.Partition], rec)
	b.topics[rec.Topic] = ps
	close(b.changed)
	b.changed = make(chan struct{})
	return rec.Offset
}

// Records returns a copy of the records of topic's partition p.
func (b *Broker) Records(topic string, p int32) []transport.Record {
	b.mu.Lock()
	defer b.mu.Unlock()
	ps := b.topics[topic]
	if int(p) >= len(ps) {
		return nil
	}
	return slices.Clone(ps[p])
}

// Delivered returns how many records of tp consumers were given (Records),
// counting redeliveries: a paused partition stops growing it.
func (b *Broker) Delivered(tp transport.TopicPartition) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.delivered[tp]
}

// Unlingered returns how many records of topic were written with a context
// marked transport.WithoutLinger (this broker does not linger either way).
func (b *Broker) Unlingered(topic string) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.unlinger[topic]
}

// Writes returns how many Produce calls wrote records to topic.
func (b *Broker) Writes(topic string) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.writes[topic]
}

// Pauses returns how many times consumers were asked to pause tp.
func (b *Broker) Pauses(tp transport.TopicPartition) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pauses[tp]
}

// Committed returns group's committed offset of tp (ok false when none).
func (b *Broker) Committed(groupID string, tp transport.TopicPartition) (transport.Offset, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	g := b.groups[groupID]
	if g == nil {
		return transport.Offset{}, false
	}
	o, ok := g.committed[tp]
	return o, ok
}

// Generation returns group's current generation id.
func (b *Broker) Generation(groupID string) int32 {
	b.mu.Lock()
	defer b.mu.Unlock()
	if g := b.groups[groupID]; g != nil {
		return g.gen
	}
	return 0
}

// Transport returns a transport on b with capabilities caps.
func (b *Broker) Transport(caps transport.Capabilities) transport.Adapter {
	return &Transport{b: b, caps: caps}
}

// Transport is the in-memory transport. Its broker has no transactions:
// every record is committed, so Config.ReadCommitted changes nothing, and a
// test that wants New to accept Isolation ReadCommitted on it sets
// Capabilities.ReadCommitted.
type Transport struct {
	b    *Broker
	caps transport.Capabilities
}

// Capabilities returns what the transport was created with.
func (t *Transport) Capabilities() transport.Capabilities { return t.caps }

// NewProducer returns a producer appending to the broker.
func (t *Transport) NewProducer(cfg transport.Config) (transport.Producer, error) {
	return &producer{b: t.b, cfg: cfg}, nil
}

// NewAdmin returns the broker's admin.
func (t *Transport) NewAdmin(cfg transport.Config) (transport.Admin, error) {
	return &admin{b: t.b}, nil
}

// NewConsumer returns a member of cfg.GroupID.
func (t *Transport) NewConsumer(cfg transport.Config) (transport.Consumer, error) {
	return &Consumer{b: t.b, cfg: cfg, caps: t.caps, paused: map[transport.TopicPartition]bool{},
		closed: make(chan struct{}), wake: make(chan struct{}, 1)}, nil
}

type producer struct {
	b      *Broker
	cfg    transport.Config
	mu     sync.Mutex
	closed bool
	next   uint32
}

func (p *producer) Produce(ctx context.Context, recs []*transport.Record) []error {
	var errs []error
	fail := func(i int, err error) {
		if errs == nil {
			errs = make([]error, len(recs))
		}
		errs[i] = err
	}
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	for i, r := range recs {
		if closed {
			fail(i, &transport.ProduceError{Kind: transport.Closed, Err: errors.New("kavari: memory: producer closed")})
			continue
		}
		if err := ctx.Err(); err != nil {
			fail(i, &transport.ProduceError{Kind: transport.Permanent, Err: err})
			continue
		}
		if f := p.b.FailProduce; f != nil {
			if err := f(r); err != nil {
				var pe *transport.ProduceError
				if !errors.As(err, &pe) {
					err = &transport.ProduceError{Kind: transport.Retriable, Err: err}
				}
				fail(i, err)
				continue
			}
		}
		if err := p.append(r); err != nil {
			fail(i, err)
		} else {
			p.b.mu.Lock()
			if transport.NoLinger(ctx) {
				p.b.unlinger[r.Topic]++
			}
			if !slices.ContainsFunc(recs[:i], func(o *transport.Record) bool { return o.Topic == r.Topic }) {
				p.b.writes[r.Topic]++
			}
			p.b.mu.Unlock()
		}
	}
	return errs
}

func (p *producer) append(r *transport.Record) error {
	b := p.b
	b.mu.Lock()
	defer b.mu.Unlock()
	parts, ok := b.topics[r.Topic]
	if !ok {
		if !p.cfg.AllowAutoCreate {
			return &transport.ProduceError{Kind: transport.UnknownTopic, Err: fmt.Errorf("kavari: memory: unknown topic %q", r.Topic)}
		}
		parts = make([][]transport.Record, max(b.Partitions, 1))
		b.topics[r.Topic] = parts
	}
	var part int32
	if r.Key != nil {
		part = partitionOf(p.cfg.Partitioner, r.Key, len(parts))
	} else {
		p.next++
		part = int32(p.next % uint32(len(parts)))
	}
	rec := *r
	rec.Partition, rec.Offset = part, int64(len(parts[part]))
	if rec.Time.IsZero() {
		rec.Time = time.Now()
	}
	parts[part] = append(parts[part], rec)
	r.Partition, r.Offset = rec.Partition, rec.Offset
	close(b.changed)
	b.changed = make(chan struct{})
	return nil
}

// partitionOf is the partition of key among n with partitioner part, as
// both adapters pick it: kafka-go's Murmur2Balancer or CRC32Balancer.
func partitionOf(part transport.Partitioner, key []byte, n int) int32 {
	ids := make([]int, n)
	for i := range ids {
		ids[i] = i
	}
	msg := kafka.Message{Key: key}
	if part == transport.CRC32 {
		return int32(kafka.CRC32Balancer{}.Balance(msg, ids...))
	}
	return int32(kafka.Murmur2Balancer{}.Balance(msg, ids...))
}

func (p *producer) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	return nil
}

type admin struct{ b *Broker }

func (a *admin) CreateTopics(_ context.Context, partitions, _ int, topics ...string) error {
	for _, t := range topics {
		a.b.CreateTopic(t, partitions)
	}
	return nil
}

func (a *admin) MissingTopics(_ context.Context, topics ...string) ([]string, error) {
	a.b.mu.Lock()
	defer a.b.mu.Unlock()
	var missing []string
	for _, t := range topics {
		if _, ok := a.b.topics[t]; !ok {
			missing = append(missing, t)
		}
	}
	return missing, nil
}

func (a *admin) EndOffsets(_ context.Context, tps ...transport.TopicPartition) (map[transport.TopicPartition]int64, error) {
	a.b.mu.Lock()
	defer a.b.mu.Unlock()
	out := map[transport.TopicPartition]int64{}
	for _, tp := range tps {
		ps := a.b.topics[tp.Topic]
		if int(tp.Partition) >= len(ps) {
			return nil, fmt.Errorf("kavari: memory: unknown partition %s/%d", tp.Topic, tp.Partition)
		}
		out[tp] = int64(len(ps[tp.Partition]))
	}
	return out, nil
}

func (a *admin) Close() error { return nil }

// Consumer is one member of a group on the broker.
type Consumer struct {
	b    *Broker
	cfg  transport.Config
	caps transport.Capabilities
	id   string

	// deliver is held while records are delivered and while the
	// assignment changes, so no record of an old assignment is delivered
	// after a new one.
	deliver  sync.Mutex
	mu       sync.Mutex
	h        transport.GroupHandler
	gen      transport.Generation
	assigned []transport.TopicPartition
	pos      map[transport.TopicPartition]int64
	paused   map[transport.TopicPartition]bool
	wake     chan struct{}

	closeOnce sync.Once
	closed    chan struct{}
	runDone   chan struct{}
}

var memberSeq struct {
	sync.Mutex
	n int
}

// Run joins the group, delivers records until ctx ends or Close, then
// revokes its partitions and leaves.
func (c *Consumer) Run(ctx context.Context, h transport.GroupHandler) error {
	c.mu.Lock()
	c.h = h
	c.runDone = make(chan struct{})
	c.mu.Unlock()
	defer close(c.runDone)
	memberSeq.Lock()
	memberSeq.n++
	c.id = fmt.Sprintf("member-%d", memberSeq.n)
	memberSeq.Unlock()

	c.b.join(c)
	defer c.b.leave(c)
	bl, _ := h.(transport.Backlogger)
	if !c.caps.WaitsForBacklog {
		bl = nil
	}
	for {
		c.b.mu.Lock()
		changed := c.b.changed
		c.b.mu.Unlock()
		delivered := c.deliverOnce()
		// With WaitsForBacklog nothing more is delivered, to any
		// partition, while one delivered to has a backlog.
		for _, tp := range delivered {
			if bl == nil {
				break
			}
			if ch := bl.Backlog(tp); ch != nil {
				select {
				case <-ch:
				case <-ctx.Done():
					return nil
				case <-c.closed:
					return nil
				}
			}
		}
		if len(delivered) == 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-c.closed:
				return nil
			case <-changed:
			case <-c.wake:
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-c.closed:
			return nil
		default:
		}
	}
}

// deliverOnce delivers one batch to each assigned, unpaused partition that
// has records past its position, and returns those partitions.
func (c *Consumer) deliverOnce() []transport.TopicPartition {
	c.deliver.Lock()
	defer c.deliver.Unlock()
	c.mu.Lock()
	tps := slices.Clone(c.assigned)
	c.mu.Unlock()
	batch := max(c.b.Batch, 1)
	if c.b.Batch == 0 {
		batch = 64
	}
	var delivered []transport.TopicPartition
	for _, tp := range tps {
		c.mu.Lock()
		paused, pos := c.paused[tp], c.pos[tp]
		c.mu.Unlock()
		if paused {
			continue
		}
		c.b.mu.Lock()
		log := c.b.topics[tp.Topic][tp.Partition]
		hw := int64(len(log))
		n := min(hw-pos, int64(batch))
		if n <= 0 {
			c.b.mu.Unlock()
			continue
		}
		copies := slices.Clone(log[pos : pos+n])
		recs := make([]*transport.Record, n)
		for i := range copies {
			recs[i] = &copies[i]
		}
		c.b.delivered[tp] += int64(len(recs))
		c.b.mu.Unlock()
		if len(recs) == 0 {
			continue
		}
		delivered = append(delivered, tp)
		c.mu.Lock()
		c.pos[tp] = pos + int64(len(recs))
		c.mu.Unlock()
		c.h.Records(tp, recs, hw)
	}
	return delivered
}

// Pause stops delivering tps.
func (c *Consumer) Pause(tps ...transport.TopicPartition) {
	c.mu.Lock()
	for _, tp := range tps {
		c.paused[tp] = true
	}
	c.mu.Unlock()
	c.b.mu.Lock()
	for _, tp := range tps {
		c.b.pauses[tp]++
	}
	c.b.mu.Unlock()
}

// Resume delivers tps again.
func (c *Consumer) Resume(tps ...transport.TopicPartition) {
	c.mu.Lock()
	for _, tp := range tps {
		delete(c.paused, tp)
	}
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Commit stores offsets for the group, fenced by gen.
func (c *Consumer) Commit(_ context.Context, gen transport.Generation, offsets []transport.Offset) error {
	if f := c.b.FailCommit; f != nil {
		if err := f(gen, offsets); err != nil {
			return err
		}
	}
	b := c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	g := b.groups[c.cfg.GroupID]
	if g == nil || g.gen != gen.ID || !slices.Contains(g.members, c) {
		return ErrFenced
	}
	var errs []error
	for _, o := range offsets {
		if !c.caps.CommitMetadata {
			o.Metadata = ""
		}
		if b.MaxMetadataBytes > 0 && len(o.Metadata) > b.MaxMetadataBytes {
			errs = append(errs, fmt.Errorf("kavari: memory: commit %s/%d: %w (%d bytes, at most %d)", o.Topic, o.Partition, transport.ErrMetadataTooLarge, len(o.Metadata), b.MaxMetadataBytes))
			continue
		}
		g.committed[o.TopicPartition] = o
	}
	return errors.Join(errs...)
}

// Close leaves the group (revoking the partitions first), bounded by ctx.
func (c *Consumer) Close(ctx context.Context) error {
	c.closeOnce.Do(func() { close(c.closed) })
	c.mu.Lock()
	done := c.runDone
	c.mu.Unlock()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func (b *Broker) group(id string) *group {
	b.mu.Lock()
	defer b.mu.Unlock()
	g := b.groups[id]
	if g == nil {
		g = &group{committed: map[transport.TopicPartition]transport.Offset{}}
		b.groups[id] = g
	}
	return g
}

func (b *Broker) join(c *Consumer) {
	g := b.group(c.cfg.GroupID)
	g.rebalance.Lock()
	defer g.rebalance.Unlock()
	b.mu.Lock()
	members := append(slices.Clone(g.members), c)
	b.mu.Unlock()
	b.rebalance(g, members)
}

func (b *Broker) leave(c *Consumer) {
	g := b.group(c.cfg.GroupID)
	g.rebalance.Lock()
	defer g.rebalance.Unlock()
	b.mu.Lock()
	members := slices.DeleteFunc(slices.Clone(g.members), func(m *Consumer) bool { return m == c })
	b.mu.Unlock()
	// The leaving member revokes everything and commits; the others get
	// its partitions.
	c.revoke(nil)
	b.rebalance(g, members)
}

// rebalance moves group g to a new generation with members, dealing the
// partitions of their topics in order.
func (b *Broker) rebalance(g *group, members []*Consumer) {
	b.mu.Lock()
	var all []transport.TopicPartition
	topics := map[string]bool{}
	for _, m := range members {
		for _, t := range m.cfg.Topics {
			topics[t] = true
		}
	}
	names := make([]string, 0, len(topics))
	for t := range topics {
		names = append(names, t)
	}
	sort.Strings(names)
	for _, t := range names {
		for p := range b.topics[t] {
			all = append(all, transport.TopicPartition{Topic: t, Partition: int32(p)})
		}
	}
	want := map[*Consumer][]transport.TopicPartition{}
	for i, tp := range all {
		if len(members) > 0 {
			m := members[i%len(members)]
			want[m] = append(want[m], tp)
		}
	}
	b.mu.Unlock()

	// Revoke: everything (eager), or what moves (cooperative).
	for _, m := range members {
		keep := want[m]
		if !m.caps.Cooperative {
			keep = nil
		}
		m.revoke(keep)
	}
	b.mu.Lock()
	g.gen++
	g.members = members
	gen := g.gen
	committed := maps(g.committed)
	b.mu.Unlock()
	for _, m := range members {
		m.assign(transport.Generation{ID: gen, MemberID: m.id}, want[m], committed)
	}
}

func maps(m map[transport.TopicPartition]transport.Offset) map[transport.TopicPartition]transport.Offset {
	out := make(map[transport.TopicPartition]transport.Offset, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Expire ends groupID's generation as a session timeout would: every member
// loses its partitions (Lost: no chance to commit, and commits of the old
// generation are fenced), then the members get them again in a new
// generation.
func (b *Broker) Expire(groupID string) {
	g := b.group(groupID)
	g.rebalance.Lock()
	defer g.rebalance.Unlock()
	b.mu.Lock()
	g.gen++ // the old generation's commits are refused from now on
	members := slices.Clone(g.members)
	b.mu.Unlock()
	for _, m := range members {
		m.lose()
	}
	b.rebalance(g, members)
}

// Disconnect ends groupID's generation as a coordinator that went away
// would: every member revokes all its partitions (Revoked, whose commits
// FailCommit may refuse) and gets none until the group rebalances again (a
// member joins or leaves).
func (b *Broker) Disconnect(groupID string) {
	g := b.group(groupID)
	g.rebalance.Lock()
	defer g.rebalance.Unlock()
	b.mu.Lock()
	members := slices.Clone(g.members)
	b.mu.Unlock()
	for _, m := range members {
		m.revoke(nil)
	}
}

// lose takes every partition from the member without a revoke.
func (c *Consumer) lose() {
	c.deliver.Lock()
	c.mu.Lock()
	gone := c.assigned
	c.assigned = nil
	for _, tp := range gone {
		delete(c.pos, tp)
		delete(c.paused, tp)
	}
	gen, h := c.gen, c.h
	c.mu.Unlock()
	c.deliver.Unlock()
	if len(gone) > 0 && h != nil {
		h.Lost(gen, gone)
	}
}

// revoke revokes the member's partitions that are not in keep, waiting for
// its Revoked.
func (c *Consumer) revoke(keep []transport.TopicPartition) {
	c.deliver.Lock()
	c.mu.Lock()
	var gone, kept []transport.TopicPartition
	for _, tp := range c.assigned {
		if slices.Contains(keep, tp) {
			kept = append(kept, tp)
		} else {
			gone = append(gone, tp)
			delete(c.pos, tp)
			delete(c.paused, tp)
		}
	}
	c.assigned = kept
	gen, h := c.gen, c.h
	c.mu.Unlock()
	c.deliver.Unlock()
	if len(gone) > 0 && h != nil {
		h.Revoked(gen, gone)
	}
}

// assign gives the member tps in gen (those it does not hold yet are
// Assigned, from the committed offsets).
func (c *Consumer) assign(gen transport.Generation, tps []transport.TopicPartition, committed map[transport.TopicPartition]transport.Offset) {
	c.mu.Lock()
	var added []transport.Assignment
	for _, tp := range tps {
		if slices.Contains(c.assigned, tp) {
			continue
		}
		a := transport.Assignment{TopicPartition: tp, Offset: -1}
		c.b.mu.Lock()
		end := int64(len(c.b.topics[tp.Topic][tp.Partition]))
		c.b.mu.Unlock()
		if o, ok := committed[tp]; ok {
			a.Offset, a.Metadata = o.Offset, o.Metadata
			if a.Offset > end { // past the log's end, as on Kafka: its start, without the metadata
				a.Offset, a.Metadata = 0, ""
			}
		}
		// Where delivery starts is fixed now, before Assigned: a record
		// appended once Assigned was called is delivered.
		switch {
		case a.Offset >= 0:
			a.Start = a.Offset
		case c.cfg.StartOffset == transport.Latest:
			a.Start = end
		default:
			a.Start = 0
		}
		added = append(added, a)
	}
	c.gen = gen
	h := c.h
	c.mu.Unlock()
	h.Assigned(gen, added)
	c.deliver.Lock()
	c.mu.Lock()
	if c.pos == nil {
		c.pos = map[transport.TopicPartition]int64{}
	}
	for _, a := range added {
		c.pos[a.TopicPartition] = a.Start
		c.assigned = append(c.assigned, a.TopicPartition)
	}
	c.mu.Unlock()
	c.deliver.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}
