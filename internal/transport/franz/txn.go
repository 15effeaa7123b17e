package franz

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kavari-go/kavari/internal/transport"
)

// The transactional side of a consumer (transport.Transactional), used when
// Config.TransactionalID is set. The consumer's client is then a kgo
// GroupTransactSession: one client consumes the group, produces in
// transactions and commits the consumed offsets inside them
// (TxnOffsetCommit, fenced by the group generation, KIP-447), so that a
// transaction's records and offsets become visible together or not at all.
// The session aborts the transaction of a member whose partitions were
// revoked or lost since it began.
//
// What kavari commits is not what kgo polled: records still queued in the
// engine are polled but not handled. End therefore rewrites the offset
// commit the session sends (kgo's PreTxnCommitFnContext) to exactly the
// engine's offsets, with their metadata, fenced to the engine's generation.

// txnSide is a transactional consumer's state.
type txnSide struct {
	// sess is set once, by Run (under consumer.mu, with consumer.cl); an
	// atomic, so that each Send reads it without taking consumer.mu.
	sess atomic.Pointer[kgo.GroupTransactSession]

	// pollMu is held by a poll and the delivery of what it returned: End
	// holds it, so no record is fetched or delivered while a transaction
	// ends and the partitions are rewound after an abort (kgo forbids
	// polling concurrently with End). cancelPoll ends the poll under way.
	pollMu     sync.Mutex
	cancelMu   sync.Mutex
	cancelPoll context.CancelFunc // under cancelMu
	holds      int                // callers of holdPolls, under cancelMu

	// base is where each owned partition resumes after an abort: its
	// committed offset, else the offset its delivery started at (-1 when
	// unknown). Under consumer.mu.
	base map[transport.TopicPartition]int64

	// unsure is set when End failed partway (kgo gave up on the
	// coordinator, the broker being down): the client may still be in
	// that transaction, and whether it committed is not known. The next
	// Begin settles it first (settle). Used by End and Begin only, which
	// the caller runs one at a time.
	unsure error
}

var errTxnCommit = errors.New("kavari: franz consumer: exactly-once: offsets are committed by End, inside a transaction")

// txnOpts are the client options of a transactional consumer: reading
// committed, producing as the publisher does (all in-sync replicas, no
// linger, no compression, kavari's partitioner, a missing topic found
// fast), in transactions.
func txnOpts(cfg transport.Config) []kgo.Opt {
	opts := []kgo.Opt{
		kgo.TransactionalID(cfg.TransactionalID),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(0),
		kgo.ProducerBatchCompression(kgo.NoCompression()), // kgo's default is snappy
		kgo.RecordPartitioner(partitioner(cfg.Partitioner)),
		// kgo's own retries, not the publisher's single try: a produce
		// right after a transaction ended may be told the previous one is
		// still completing (CONCURRENT_TRANSACTIONS), and a failed record
		// can only abort the transaction, never be retried in it.
		kgo.UnknownTopicRetries(unknownTopicTries),
	}
	if cfg.TransactionTimeout > 0 {
		opts = append(opts, kgo.TransactionTimeout(cfg.TransactionTimeout))
	}
	if b := cfg.BatchBytes; b > 0 {
		opts = append(opts, kgo.ProducerBatchMaxBytes(int32(b)))
	}
	if cfg.AllowAutoCreate {
		opts = append(opts, kgo.AllowAutoTopicCreation())
	}
	return opts
}

// newClient builds the consumer's client: a transact session's when the
// consumer is transactional.
func (c *consumer) newClient() (*kgo.Client, error) {
	if c.txn == nil {
		return kgo.NewClient(c.opts...)
	}
	s, err := kgo.NewGroupTransactSession(c.opts...)
	if err != nil {
		return nil, err
	}
	c.txn.sess.Store(s)
	return s.Client(), nil
}

// beginPoll returns the context of the next poll and the function ending
// it (after the delivery of what it returned). A transactional consumer
// holds pollMu in between, and End can cancel the poll; while End holds
// polls, a poll that gets pollMu first is cancelled at once.
func (c *consumer) beginPoll(ctx context.Context) (context.Context, func()) {
	if c.txn == nil {
		return ctx, func() {}
	}
	t := c.txn
	t.pollMu.Lock()
	pctx, cancel := context.WithCancel(ctx)
	t.cancelMu.Lock()
	t.cancelPoll = cancel
	if t.holds > 0 {
		cancel()
	}
	t.cancelMu.Unlock()
	return pctx, func() {
		t.cancelMu.Lock()
		t.cancelPoll = nil
		t.cancelMu.Unlock()
		cancel()
		t.pollMu.Unlock()
	}
}

// holdPolls ends the poll under way and keeps the next from starting until
// the returned function is called.
func (t *txnSide) holdPolls() func() {
	t.cancelMu.Lock()
	t.holds++
	if t.cancelPoll != nil {
		t.cancelPoll()
	}
	t.cancelMu.Unlock()
	t.pollMu.Lock()
	return func() {
		t.cancelMu.Lock()
		t.holds--
		t.cancelMu.Unlock()
		t.pollMu.Unlock()
	}
}

// txnAssigned notes where the assigned parts resume after an abort.
// Called with c.mu held.
func (c *consumer) txnAssignedLocked(parts []transport.Assignment) {
	if c.txn == nil {
		return
	}
	for _, a := range parts {
		switch {
		case a.Offset >= 0:
			c.txn.base[a.TopicPartition] = a.Offset
		case a.Start >= 0:
			c.txn.base[a.TopicPartition] = a.Start
		default:
			c.txn.base[a.TopicPartition] = -1
		}
	}
}

func (c *consumer) session() (*kgo.GroupTransactSession, error) {
	if c.txn == nil {
		return nil, errors.New("kavari: franz consumer: not transactional (no TransactionalID)")
	}
	s := c.txn.sess.Load()
	if s == nil {
		return nil, errNotRunning
	}
	return s, nil
}

// Begin opens a transaction.
func (c *consumer) Begin() error {
	s, err := c.session()
	if err != nil {
		return err
	}
	defer c.txn.holdPolls()()
	if c.txn.unsure != nil {
		if err := c.settle(s); err != nil {
			return fmt.Errorf("kavari: begin transaction: the last transaction ended in an unknown state (%v) and cannot be settled yet: %w", c.txn.unsure, err)
		}
		c.txn.unsure = nil
	}
	if err := s.Begin(); err != nil {
		return fmt.Errorf("kavari: begin transaction: %w", err)
	}
	return nil
}

// settle ends a transaction whose End failed partway: it aborts it (kgo
// retries the end of a transaction whose outcome it does not know as an
// abort; the broker refuses to abort one that committed, which is then
// committed), reads the group's committed offsets of the owned partitions,
// waiting for pending transactional commits to settle (require stable),
// and rewinds the partitions there: whatever the transaction's outcome was,
// its records are handled again exactly from where the group's offsets
// are. Called with polls held.
func (c *consumer) settle(s *kgo.GroupTransactSession) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cl := s.Client()
	if err := cl.AbortBufferedRecords(ctx); err != nil {
		return err
	}
	if err := cl.EndTransaction(ctx, kgo.TryAbort); err != nil {
		return fmt.Errorf("abort: %w", err)
	}
	c.mu.Lock()
	var tps []transport.TopicPartition
	for tp := range c.owned {
		tps = append(tps, tp)
	}
	c.mu.Unlock()
	got, err := fetchCommitted(ctx, cl, c.cfg.GroupID, tps)
	if err != nil {
		return fmt.Errorf("committed offsets: %w", err)
	}
	c.mu.Lock()
	for tp, cp := range got {
		if _, ok := c.owned[tp]; ok && cp.offset >= 0 {
			c.committed[tp] = cp
			c.txn.base[tp] = cp.offset
		}
	}
	c.mu.Unlock()
	c.rewind()
	return nil
}

// fetchCommitted reads group's committed offsets of tps, waiting for
// pending transactional offset commits to settle (RequireStable).
func fetchCommitted(ctx context.Context, cl *kgo.Client, group string, tps []transport.TopicPartition) (map[transport.TopicPartition]commitPoint, error) {
	req := kmsg.NewPtrOffsetFetchRequest()
	req.Group, req.RequireStable = group, true
	idx := map[string]int{}
	for _, tp := range tps {
		i, ok := idx[tp.Topic]
		if !ok {
			t := kmsg.NewOffsetFetchRequestTopic()
			t.Topic = tp.Topic
			req.Topics = append(req.Topics, t)
			i = len(req.Topics) - 1
			idx[tp.Topic] = i
		}
		req.Topics[i].Partitions = append(req.Topics[i].Partitions, tp.Partition)
	}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return nil, err
	}
	out := map[transport.TopicPartition]commitPoint{}
	add := func(topic string, partition int32, offset int64, meta *string, code int16) error {
		if err := kerr.ErrorForCode(code); err != nil {
			return fmt.Errorf("%s/%d: %w", topic, partition, err)
		}
		cp := commitPoint{offset: offset}
		if meta != nil {
			cp.metadata = *meta
		}
		out[transport.TopicPartition{Topic: topic, Partition: partition}] = cp
		return nil
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return nil, err
	}
	for _, g := range resp.Groups {
		if err := kerr.ErrorForCode(g.ErrorCode); err != nil {
			return nil, err
		}
		for _, t := range g.Topics {
			for _, p := range t.Partitions {
				if err := add(t.Topic, p.Partition, p.Offset, p.Metadata, p.ErrorCode); err != nil {
					return nil, err
				}
			}
		}
	}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if err := add(t.Topic, p.Partition, p.Offset, p.Metadata, p.ErrorCode); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// Produce writes recs in the open transaction.
func (c *consumer) Produce(ctx context.Context, recs []*transport.Record) []error {
	s, err := c.session()
	autoCreate := c.cfg.AllowAutoCreate
	errs := make([]error, len(recs))
	if err != nil {
		for i := range errs {
			errs[i] = &transport.ProduceError{Kind: transport.Closed, Err: err}
		}
		return errs
	}
	krs := make([]*kgo.Record, len(recs))
	kv := make([]kgo.Record, len(recs)) // one allocation for the records
	for i, r := range recs {
		setKgoRecord(&kv[i], r)
		krs[i] = &kv[i]
	}
	failed := false
	for i, res := range s.ProduceSync(ctx, krs...) {
		if res.Err != nil {
			errs[i], failed = classifyProduce(res.Err, autoCreate), true
			continue
		}
		recs[i].Partition, recs[i].Offset = res.Record.Partition, res.Record.Offset
	}
	if !failed {
		return nil
	}
	return errs
}

// Send writes recs in the open transaction without waiting: see
// transport.Transactional.
func (c *consumer) Send(ctx context.Context, recs []*transport.Record, done func(i int, partition int32, offset int64, err error)) {
	s, err := c.session()
	if err != nil {
		for i := range recs {
			done(i, -1, -1, &transport.ProduceError{Kind: transport.Closed, Err: err})
		}
		return
	}
	autoCreate := c.cfg.AllowAutoCreate
	kv := make([]kgo.Record, len(recs)) // one allocation for the records
	for i, r := range recs {
		setKgoRecord(&kv[i], r)
		s.Produce(ctx, &kv[i], func(kr *kgo.Record, err error) {
			if err != nil {
				done(i, -1, -1, classifyProduce(err, autoCreate))
				return
			}
			done(i, kr.Partition, kr.Offset, nil)
		})
	}
}

// End ends the open transaction: see transport.Transactional.
func (c *consumer) End(ctx context.Context, gen transport.Generation, offsets []transport.Offset, commit bool) (bool, error) {
	s, err := c.session()
	if err != nil {
		return false, err
	}
	release := c.txn.holdPolls()
	defer release()
	fence := func(req *kmsg.TxnOffsetCommitRequest) error {
		req.Generation, req.MemberID = gen.ID, gen.MemberID
		req.Topics = req.Topics[:0]
		byTopic := map[string]int{}
		for _, o := range offsets {
			i, ok := byTopic[o.Topic]
			if !ok {
				t := kmsg.NewTxnOffsetCommitRequestTopic()
				t.Topic = o.Topic
				req.Topics = append(req.Topics, t)
				i = len(req.Topics) - 1
				byTopic[o.Topic] = i
			}
			p := kmsg.NewTxnOffsetCommitRequestTopicPartition()
			p.Partition, p.Offset, p.LeaderEpoch = o.Partition, o.Offset, -1
			meta := o.Metadata
			p.Metadata = &meta
			req.Topics[i].Partitions = append(req.Topics[i].Partitions, p)
		}
		return nil
	}
	committed, err := s.End(kgo.PreTxnCommitFnContext(ctx, fence), kgo.TransactionEndTry(commit))
	if committed {
		c.mu.Lock()
		for _, o := range offsets {
			if _, ok := c.owned[o.TopicPartition]; ok {
				c.committed[o.TopicPartition] = commitPoint{o.Offset, o.Metadata}
				c.txn.base[o.TopicPartition] = o.Offset
			}
		}
		c.mu.Unlock()
		return true, nil
	}
	if err != nil {
		// kgo gave up partway (no coordinator, the broker down): the
		// transaction may still be open, even committed. The next Begin
		// settles it and rewinds to the group's committed offsets; until
		// then no transaction begins.
		c.txn.unsure = err
		return false, fmt.Errorf("kavari: transaction ended in an unknown state (settled before the next one begins; its records are handled again unless it committed): %w", err)
	}
	c.rewind()
	if err == nil && commit {
		err = errors.New("the commit could not happen: partitions were revoked or lost since the transaction began, or the group refused the offsets (another generation or member)")
	}
	if err != nil {
		return false, fmt.Errorf("kavari: transaction aborted: %w", err)
	}
	return false, nil
}

// rewind, after an abort, moves every owned partition back to where it
// resumes (its committed offset) and has the engine drop what it held of
// them and start them again there: Lost, then Assigned. Called with polls
// held.
func (c *consumer) rewind() {
	c.groupMu.Lock()
	defer c.groupMu.Unlock()
	c.mu.Lock()
	cl := c.cl
	var tps []transport.TopicPartition
	var parts []transport.Assignment
	set := map[string]map[int32]kgo.EpochOffset{}
	for tp := range c.owned {
		tps = append(tps, tp)
		a := transport.Assignment{TopicPartition: tp, Offset: -1, Start: c.txn.base[tp]}
		if cp, ok := c.committed[tp]; ok {
			a.Offset, a.Metadata = cp.offset, cp.metadata
		}
		parts = append(parts, a)
		if a.Start >= 0 {
			if set[tp.Topic] == nil {
				set[tp.Topic] = map[int32]kgo.EpochOffset{}
			}
			set[tp.Topic][tp.Partition] = kgo.EpochOffset{Epoch: -1, Offset: a.Start}
		}
	}
	// A pause belongs to the engine's handling of the partition, which
	// Lost ends: the partition starts again unpaused, as after a release.
	var unpause []transport.TopicPartition
	for tp := range c.owned {
		if c.paused[tp] {
			delete(c.paused, tp)
			unpause = append(unpause, tp)
		}
	}
	c.mu.Unlock()
	if cl == nil || len(tps) == 0 {
		return
	}
	if len(unpause) > 0 {
		cl.ResumeFetchPartitions(byTopic(unpause))
	}
	cl.SetOffsets(set)
	gen := generation(cl)
	c.h.Lost(gen, tps)
	c.h.Assigned(gen, parts)
}
