package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/kavari-go/kavari"
	"github.com/segmentio/kafka-go"
)

// Headers a replay adds. A replayed record that fails again is dead-lettered
// with them (kavari copies every header it does not own), so the next replay
// sees how often the record went round.
const (
	// headerReplayCount counts the replays of a record: 1 on the first,
	// incremented from the dead letter's value on each later one.
	headerReplayCount = "kavari_replay_count"
	// headerReplayedFrom names the dead letter a replayed record was read
	// from, "topic/partition/offset": two replayed records with the same
	// ce_id and the same kavari_replayed_from come from replaying one dead
	// letter twice.
	headerReplayedFrom = "kavari_replayed_from"
)

// deadLetterHeaders are what kavari adds to a dead letter; a replay removes
// them (and the previous replay headers, replaced by new values).
var deadLetterHeaders = map[string]bool{
	kavari.HeaderOriginalError:     true,
	kavari.HeaderOriginalTopic:     true,
	kavari.HeaderOriginalPartition: true,
	kavari.HeaderOriginalOffset:    true,
	kavari.HeaderAttempts:          true,
	kavari.HeaderErrorKind:         true,
	kavari.HeaderHandler:           true,
	kavari.HeaderTruncated:         true,
	kavari.HeaderDroppedHeaders:    true,
	kavari.HeaderRetryTier:         true, // retry topics' (Consume.RetryTopics): a replay starts afresh
	kavari.HeaderRetryDue:          true,
	kavari.HeaderRetryHandlers:     true,
	kavari.HeaderRetryHistory:      true,
	headerReplayCount:              true,
	headerReplayedFrom:             true,
}

// replayCount returns the kavari_replay_count of headers hs: 0 when absent.
func replayCount(hs []kafka.Header) (int, error) {
	n := 0
	for _, h := range hs {
		if h.Key == headerReplayCount {
			v, err := strconv.Atoi(string(h.Value))
			if err != nil || v < 0 {
				return 0, fmt.Errorf("malformed %s %q", headerReplayCount, h.Value)
			}
			n = v
		}
	}
	return n, nil
}

// replay is a dead letter ready to be republished.
type replay struct {
	Topic     string // the original topic
	Partition int    // the original partition; -1 when unknown
	Count     int    // the new kavari_replay_count
	Record    message
}

// message is a record to publish; kafka.Record's byte readers are built per
// produce request, so a retried request sends the same bytes.
type message struct {
	Key, Value []byte
	Headers    []kafka.Header
}

// refusal says why a dead letter is not replayed.
type refusal struct {
	reason string
	loop   bool // the loop guard refused it
}

func (r *refusal) Error() string { return r.reason }

// planReplay returns the record that replays dead letter r: the original
// topic, key and value, the user and CloudEvents headers (same ce_id), the
// dead-letter headers removed and kavari_replay_count incremented. It
// refuses a record that is not a kavari dead letter, whose value or headers were dropped
// or that was replayed maxReplays times already.
func planReplay(r *record, maxReplays int) (*replay, *refusal) {
	topic, ok := r.header(kavari.HeaderOriginalTopic)
	if !ok || topic == "" {
		return nil, &refusal{reason: "no " + kavari.HeaderOriginalTopic + " header: not a kavari dead letter, not replayed"}
	}
	if size, ok := r.header(kavari.HeaderTruncated); ok {
		return nil, &refusal{reason: "its value (" + size + " bytes) was dropped when it was dead-lettered (" + kavari.HeaderTruncated + ")"}
	}
	if names, ok := r.header(kavari.HeaderDroppedHeaders); ok {
		// Without them (msg_type among them when "*") the original cannot be
		// rebuilt.
		return nil, &refusal{reason: "its original headers " + names + " were dropped when it was dead-lettered (" + kavari.HeaderDroppedHeaders + ")"}
	}
	n, err := replayCount(r.Headers)
	if err != nil {
		return nil, &refusal{reason: err.Error()}
	}
	if n >= maxReplays {
		return nil, &refusal{loop: true, reason: fmt.Sprintf("replayed %d times already (--max-replays %d)", n, maxReplays)}
	}
	part := -1
	if s, ok := r.header(kavari.HeaderOriginalPartition); ok {
		if p, err := strconv.Atoi(s); err == nil && p >= 0 {
			part = p
		}
	}
	hs := make([]kafka.Header, 0, len(r.Headers)+2)
	for _, h := range r.Headers {
		if !deadLetterHeaders[h.Key] {
			hs = append(hs, h)
		}
	}
	hs = append(hs,
		kafka.Header{Key: headerReplayCount, Value: strconv.AppendInt(nil, int64(n+1), 10)},
		kafka.Header{Key: headerReplayedFrom, Value: fmt.Appendf(nil, "%s/%d/%d", r.Topic, r.Partition, r.Offset)},
	)
	return &replay{Topic: topic, Partition: part, Count: n + 1, Record: message{Key: r.Key, Value: r.Value, Headers: hs}}, nil
}

type replayFlags struct {
	connFlags
	kinds      string
	types      string
	partition  int
	fromOffset int64
	toOffset   int64
	since      string
	until      string
	dryRun     bool
	maxReplays int
	progress   bool
	group      string
}

// replayFilter selects the dead letters to replay.
type replayFilter struct {
	kinds, types map[string]bool
	partition    int
	from, to     int64 // offsets in the dead-letter partition, inclusive; to < 0: no bound
	since, until time.Time
}

func (f *replayFilter) match(r *record) bool {
	if f.kinds != nil {
		k, _ := r.header(kavari.HeaderErrorKind)
		if !f.kinds[k] {
			return false
		}
	}
	if f.types != nil {
		t, _ := r.header(kavari.HeaderMsgType)
		if !f.types[t] {
			return false
		}
	}
	if !f.since.IsZero() && r.Time.Before(f.since) {
		return false
	}
	if !f.until.IsZero() && r.Time.After(f.until) {
		return false
	}
	return true
}

func runReplay(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var f replayFlags
	fs := newFlagSet("dlq replay", "kavari dlq replay TOPIC.dlq [flags]\n\n"+
		"Republishes dead letters to their original topic and partition (acks=all) with\n"+
		"their original key, value and user and CloudEvents headers (same ce_id); the\n"+
		"dead-letter headers are removed and kavari_replay_count is incremented. A dead\n"+
		"letter replayed --max-replays times already is refused (loop guard), as is a\n"+
		"record without kavari_original_topic. Refusals are reported, never guessed.")
	f.register(fs.FlagSet)
	fs.StringVar(&f.kinds, "kind", "", "replay only these error kinds (comma-separated: handler,validation,decode,unknown_type)")
	fs.StringVar(&f.types, "type", "", "replay only these msg_type values (comma-separated)")
	fs.IntVar(&f.partition, "partition", -1, "read only this partition of the dead-letter topic; -1 means all")
	fs.Int64Var(&f.fromOffset, "from-offset", -1, "first dead-letter offset to replay (in each partition read)")
	fs.Int64Var(&f.toOffset, "to-offset", -1, "last dead-letter offset to replay, inclusive")
	fs.StringVar(&f.since, "since", "", "replay only dead letters written at or after this time (RFC 3339 or a duration ago)")
	fs.StringVar(&f.until, "until", "", "replay only dead letters written at or before this time (RFC 3339 or a duration ago)")
	fs.BoolVar(&f.dryRun, "dry-run", false, "print what would be replayed; publish nothing")
	fs.IntVar(&f.maxReplays, "max-replays", 3, "loop guard: refuse dead letters already replayed this many times")
	fs.StringVar(&f.group, "group", "", "checkpoint: start after the dead letters a replay under this consumer group name read, and commit this replay's progress to it")
	fs.BoolVar(&f.progress, "progress", false, "print progress to stderr every second (default when stderr is a terminal)")
	pos, err := fs.parse(args, 1, stdout)
	if err != nil {
		return exitCode(err, stderr)
	}
	if !f.progress {
		if st, err := os.Stderr.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 && stderr == io.Writer(os.Stderr) {
			f.progress = true
		}
	}
	return exitCode(runReplayFlags(ctx, pos[0], &f, stdout, stderr), stderr)
}

func (f *replayFlags) filter() (*replayFilter, error) {
	if f.maxReplays < 1 {
		return nil, usagef("dlq replay: --max-replays %d: want at least 1", f.maxReplays)
	}
	if f.toOffset >= 0 && f.fromOffset > f.toOffset {
		return nil, usagef("dlq replay: --from-offset %d is after --to-offset %d", f.fromOffset, f.toOffset)
	}
	flt := &replayFilter{kinds: splitList(f.kinds), types: splitList(f.types), partition: f.partition, from: f.fromOffset, to: f.toOffset}
	now := time.Now()
	var err error
	if f.since != "" {
		if flt.since, err = parseTime(f.since, now); err != nil {
			return nil, usagef("dlq replay: --since %v", err)
		}
	}
	if f.until != "" {
		if flt.until, err = parseTime(f.until, now); err != nil {
			return nil, usagef("dlq replay: --until %v", err)
		}
	}
	return flt, nil
}

// replayStats are the counts a replay reports.
type replayStats struct {
	Topic         string `json:"topic"`
	DryRun        bool   `json:"dry_run"`
	Read          int    `json:"read"`
	Filtered      int    `json:"skipped_by_filter"`
	Replayed      int    `json:"replayed"`
	RefusedLoop   int    `json:"refused_loop_guard"`
	RefusedOrigin int    `json:"refused_no_origin"`
	RefusedOther  int    `json:"refused_other"`
	// MayHaveBeenWritten counts the replays whose produce request failed
	// in a way that leaves them possibly stored (not counted in Replayed).
	MayHaveBeenWritten int     `json:"may_have_been_written"`
	Seconds            float64 `json:"seconds"`
}

// refusedJSON is the -o json line of a refused dead letter.
type refusedJSON struct {
	Refused   string `json:"refused"`
	Topic     string `json:"topic"`
	Partition int    `json:"partition"`
	Offset    int64  `json:"offset"`
	ID        string `json:"ce_id,omitempty"`
}

// plannedJSON is the -o json line of a dead letter a dry run would replay.
type plannedJSON struct {
	WouldReplay string  `json:"would_replay"` // topic/partition/offset of the dead letter
	To          string  `json:"to"`
	Partition   int     `json:"partition"`
	Key         *string `json:"key"`
	Type        string  `json:"type,omitempty"`
	ID          string  `json:"ce_id,omitempty"`
	ReplayCount int     `json:"replay_count"`
}

// replayer republishes dead letters, batching per target partition.
type replayer struct {
	c *conn
	// send sends one produce request: c.client.Produce; tests fake it.
	send    func(context.Context, *kafka.ProduceRequest) (*kafka.ProduceResponse, error)
	out     io.Writer
	errOut  io.Writer
	json    bool
	dryRun  bool
	max     int
	targets map[string][]int // partitions of each original topic
	batches map[topicPartition][]message
	pending int
	bytes   int

	mu    sync.Mutex // guards stats for the progress line
	stats replayStats
}

type topicPartition struct {
	topic     string
	partition int
}

// progressEvery is how often --progress prints; tests shorten it.
var progressEvery = time.Second

const (
	batchRecords = 500
	batchBytes   = 512 << 10
)

func runReplayFlags(ctx context.Context, topic string, f *replayFlags, stdout, stderr io.Writer) error {
	flt, err := f.filter()
	if err != nil {
		return err
	}
	c, err := f.connect()
	if err != nil {
		return err
	}
	parts, first, end, err := c.span(ctx, "dlq replay", topic, flt.partition)
	if err != nil {
		return err
	}
	if !flt.since.IsZero() {
		// Skip what was written before --since without reading it.
		at, err := c.offsets(ctx, topic, parts, flt.since.UnixMilli())
		if err != nil {
			return err
		}
		for _, p := range parts {
			if at[p] < 0 {
				at[p] = end[p]
			}
			first[p] = max(first[p], at[p])
		}
	}
	if f.group != "" {
		done, err := c.committed(ctx, f.group, topic, parts)
		if err != nil {
			return err
		}
		for _, p := range parts {
			first[p] = max(first[p], done[p])
		}
	}
	total := int64(0)
	for _, p := range parts {
		first[p] = min(first[p], end[p])
		if flt.from > first[p] {
			first[p] = min(flt.from, end[p])
		}
		if flt.to >= 0 && flt.to+1 < end[p] {
			end[p] = max(flt.to+1, first[p])
		}
		total += end[p] - first[p]
	}
	rp := &replayer{
		c: c, send: c.client.Produce, out: stdout, errOut: stderr, json: f.json(), dryRun: f.dryRun, max: f.maxReplays,
		targets: map[string][]int{}, batches: map[topicPartition][]message{},
		stats: replayStats{Topic: topic, DryRun: f.dryRun},
	}
	begin := time.Now()
	if f.progress {
		done := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			rp.showProgress(done, begin, total)
		}()
		defer func() { close(done); wg.Wait() }()
	}
	for _, p := range parts {
		next := first[p]
		err := c.read(ctx, topic, p, first[p], end[p], func(r *record) error {
			next = r.Offset + 1
			return rp.handle(ctx, r, flt)
		})
		if err == nil {
			err = rp.flush(ctx)
		}
		if err == nil {
			err = ctx.Err()
		}
		if err == nil && f.group != "" && !f.dryRun && next > first[p] {
			err = c.commit(ctx, f.group, topic, p, next)
		}
		if err != nil {
			rp.summary(begin)
			if errors.Is(err, context.Canceled) {
				return errors.New("kavari: dlq replay: interrupted; the summary counts what the broker acknowledged, the batch in flight may have been written too")
			}
			return err
		}
	}
	return rp.summary(begin)
}

// committed returns the offsets group committed for topic's partitions:
// where the next replay under that group starts (0 when none).
func (c *conn) committed(ctx context.Context, group, topic string, parts []int) (map[int]int64, error) {
	out := make(map[int]int64, len(parts))
	err := c.op(ctx, "offsets of group "+group, func(ctx context.Context) error {
		resp, err := c.client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
		if err != nil {
			return err
		}
		if errors.Is(resp.Error, kafka.GroupIdNotFound) {
			return nil // nothing committed yet
		}
		if resp.Error != nil {
			return resp.Error
		}
		for _, p := range resp.Topics[topic] {
			if errors.Is(p.Error, kafka.GroupIdNotFound) {
				continue
			}
			if p.Error != nil {
				return fmt.Errorf("partition %d: %w", p.Partition, p.Error)
			}
			out[p.Partition] = max(p.CommittedOffset, 0)
		}
		return nil
	})
	return out, err
}

// commit records under group that the dead letters of topic/partition
// before offset next were replayed.
func (c *conn) commit(ctx context.Context, group, topic string, partition int, next int64) error {
	return c.op(ctx, "commit to group "+group, func(ctx context.Context) error {
		resp, err := c.client.OffsetCommit(ctx, &kafka.OffsetCommitRequest{
			GroupID: group, GenerationID: -1,
			Topics: map[string][]kafka.OffsetCommit{topic: {{Partition: partition, Offset: next, Metadata: "kavari dlq replay"}}},
		})
		if err != nil {
			return err
		}
		for _, p := range resp.Topics[topic] {
			if p.Error != nil {
				return p.Error
			}
		}
		return nil
	})
}

// handle decides about one dead letter and queues its replay.
func (rp *replayer) handle(ctx context.Context, r *record, flt *replayFilter) error {
	rp.mu.Lock()
	rp.stats.Read++
	rp.mu.Unlock()
	if !flt.match(r) {
		rp.count(func(s *replayStats) { s.Filtered++ })
		return nil
	}
	plan, ref := planReplay(r, rp.max)
	if ref == nil {
		parts, err := rp.partitionsOf(ctx, plan.Topic)
		if err != nil {
			ref = &refusal{reason: err.Error()}
		} else if plan.Partition < 0 || plan.Partition >= len(parts) {
			// Unknown, or the topic lost partitions: place it by key as
			// kavari's default partitioner (Murmur2) does.
			plan.Partition = kafka.Murmur2Balancer{}.Balance(kafka.Message{Key: r.Key}, parts...)
		}
	}
	if ref != nil {
		return rp.refuse(r, ref)
	}
	if rp.dryRun {
		rp.count(func(s *replayStats) { s.Replayed++ })
		return rp.printPlan(r, plan)
	}
	tp := topicPartition{plan.Topic, plan.Partition}
	rp.batches[tp] = append(rp.batches[tp], plan.Record)
	rp.pending++
	rp.bytes += len(r.Key) + len(r.Value)
	if rp.pending >= batchRecords || rp.bytes >= batchBytes {
		return rp.flush(ctx)
	}
	return nil
}

func (rp *replayer) count(f func(*replayStats)) {
	rp.mu.Lock()
	f(&rp.stats)
	rp.mu.Unlock()
}

func (rp *replayer) partitionsOf(ctx context.Context, topic string) ([]int, error) {
	if ps, ok := rp.targets[topic]; ok {
		return ps, nil
	}
	ps, err := rp.c.partitions(ctx, topic)
	if err != nil {
		var ke kafka.Error
		if !errors.As(err, &ke) {
			return nil, err // the cluster, not the topic: stop
		}
		return nil, fmt.Errorf("original topic %s: %v", topic, ke)
	}
	rp.targets[topic] = ps
	return ps, nil
}

func (rp *replayer) refuse(r *record, ref *refusal) error {
	rp.count(func(s *replayStats) {
		switch {
		case ref.loop:
			s.RefusedLoop++
		case !hasHeader(r, kavari.HeaderOriginalTopic):
			s.RefusedOrigin++
		default:
			s.RefusedOther++
		}
	})
	id, _ := r.header(kavari.HeaderID)
	if rp.json {
		return json.NewEncoder(rp.out).Encode(refusedJSON{Refused: ref.reason, Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, ID: id})
	}
	_, err := fmt.Fprintf(rp.errOut, "kavari: refused %s/%d/%d (ce_id %s): %s\n", r.Topic, r.Partition, r.Offset, dash(id), ref.reason)
	return err
}

func hasHeader(r *record, key string) bool {
	v, ok := r.header(key)
	return ok && v != ""
}

func (rp *replayer) printPlan(r *record, p *replay) error {
	id, _ := r.header(kavari.HeaderID)
	typ, _ := r.header(kavari.HeaderMsgType)
	from := fmt.Sprintf("%s/%d/%d", r.Topic, r.Partition, r.Offset)
	if rp.json {
		j := plannedJSON{WouldReplay: from, To: p.Topic, Partition: p.Partition, Type: typ, ID: id, ReplayCount: p.Count}
		if r.Key != nil {
			k := string(r.Key)
			j.Key = &k
		}
		return json.NewEncoder(rp.out).Encode(j)
	}
	_, err := fmt.Fprintf(rp.out, "would replay %s -> %s/%d key=%s type=%s ce_id=%s replay_count=%d\n",
		from, p.Topic, p.Partition, printable(r.Key), dash(typ), dash(id), p.Count)
	return err
}

// flush publishes the queued replays, acks=all, one produce request per
// target partition, retrying transient errors.
func (rp *replayer) flush(ctx context.Context) error {
	for tp, recs := range rp.batches {
		err := rp.produce(ctx, tp, recs)
		if err != nil {
			return err
		}
		delete(rp.batches, tp)
		rp.count(func(s *replayStats) { s.Replayed += len(recs) })
	}
	rp.pending, rp.bytes = 0, 0
	return nil
}

func (rp *replayer) produce(ctx context.Context, tp topicPartition, msgs []message) error {
	var err error
	recs := make([]kafka.Record, len(msgs))
	for attempt := 1; attempt <= 5; attempt++ {
		for i, m := range msgs {
			recs[i] = kafka.Record{Key: kafka.NewBytes(m.Key), Value: kafka.NewBytes(m.Value), Headers: m.Headers}
		}
		err = rp.c.op(ctx, fmt.Sprintf("publish %d replays to %s/%d", len(recs), tp.topic, tp.partition), func(ctx context.Context) error {
			resp, err := rp.send(ctx, &kafka.ProduceRequest{
				Topic: tp.topic, Partition: tp.partition, RequiredAcks: kafka.RequireAll,
				Records: kafka.NewRecordReader(recs...),
			})
			if err != nil {
				return err
			}
			return resp.Error
		})
		if err == nil || ctx.Err() != nil {
			return err
		}
		if mayHaveBeenStored(err) {
			// Sending it again could store a second copy, and counting it
			// as replayed could be false: say what is known.
			rp.count(func(s *replayStats) { s.MayHaveBeenWritten += len(msgs) })
			return fmt.Errorf("%w: these %d replays may have been written; not counted as replayed and not sent again (a second copy could be stored): look for them in %s/%d (header %s) before replaying these dead letters again",
				err, len(msgs), tp.topic, tp.partition, headerReplayedFrom)
		}
		var ke kafka.Error
		if !errors.As(err, &ke) || !ke.Temporary() {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
		}
	}
	return err
}

// mayHaveBeenStored reports whether a failed produce request may
// nonetheless have stored its records, as kavari's publisher judges it:
// the broker's own request timeout and NOT_ENOUGH_REPLICAS_AFTER_APPEND
// come after the leader appended; a connection broken or timed out
// mid-request may have delivered it. Another broker answer rejected the
// request, and a dial that failed sent nothing.
func mayHaveBeenStored(err error) bool {
	var ke kafka.Error
	if errors.As(err, &ke) {
		return ke == kafka.RequestTimedOut || ke == kafka.NotEnoughReplicasAfterAppend
	}
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, io.ErrClosedPipe) {
		return false
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return false // never connected
	}
	var dnsErr *net.DNSError
	return !errors.As(err, &dnsErr)
}

func (rp *replayer) showProgress(done <-chan struct{}, begin time.Time, total int64) {
	t := time.NewTicker(progressEvery)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			rp.mu.Lock()
			s := rp.stats
			rp.mu.Unlock()
			el := time.Since(begin).Seconds()
			fmt.Fprintf(rp.errOut, "replay: read %d/%d, replayed %d (%.0f/s), refused %d, skipped %d\n",
				s.Read, total, s.Replayed, float64(s.Replayed)/el, s.RefusedLoop+s.RefusedOrigin+s.RefusedOther, s.Filtered)
		}
	}
}

func (rp *replayer) summary(begin time.Time) error {
	rp.mu.Lock()
	s := rp.stats
	rp.mu.Unlock()
	s.Seconds = time.Since(begin).Seconds()
	if rp.json {
		return json.NewEncoder(rp.out).Encode(s)
	}
	verb := "replayed"
	if s.DryRun {
		verb = "would replay"
	}
	unsure := ""
	if s.MayHaveBeenWritten > 0 {
		unsure = fmt.Sprintf(", may have been written %d (not counted as replayed)", s.MayHaveBeenWritten)
	}
	_, err := fmt.Fprintf(rp.out, "%s: read %d, %s %d%s, refused %d (loop guard %d, not kavari dead letters %d, other %d), skipped by filter %d, in %.1fs\n",
		s.Topic, s.Read, verb, s.Replayed, unsure, s.RefusedLoop+s.RefusedOrigin+s.RefusedOther, s.RefusedLoop, s.RefusedOrigin, s.RefusedOther, s.Filtered, s.Seconds)
	return err
}
