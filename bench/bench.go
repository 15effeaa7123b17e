package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"
)

// bench runs the workloads in order and collects their results.
type bench struct {
	o        *options
	ctx      context.Context
	brokers  []string
	adm      *admin
	results  []*result
	micro    *microResults
	py       *pyResults
	failures []string
	groupSeq int
	// exe is the bench binary the workers run: empty for this one, or
	// one built with toolchain (-toolchains), which the microbenchmarks'
	// go test also runs with.
	exe       string
	toolchain string
	// noPython, when set, says why the Python runs are left out of this
	// pass (they ran in the first toolchain's).
	noPython string
}

var sizes = []int{100, 1024}

func sizeName(size int) string {
	if size == 1024 {
		return "1KiB"
	}
	return strconv.Itoa(size) + "B"
}

func (b *bench) want(id string) bool { return b.o.onlyRE.MatchString(id) }

func (b *bench) wantAny(ids ...string) bool {
	for _, id := range ids {
		if b.want(id) {
			return true
		}
	}
	return false
}

func (b *bench) fail(id string, err error) {
	logf("%s: FAILED: %v", id, err)
	b.failures = append(b.failures, fmt.Sprintf("%s: %v", id, err))
}

func (b *bench) group(id string) string {
	b.groupSeq++
	return fmt.Sprintf("bench-%d-%d", time.Now().UnixNano()%1_000_000, b.groupSeq)
}

// base returns a spec with the shared settings.
func (b *bench) base(id, workload, impl string) spec {
	return spec{
		ID: id, Workload: workload, Impl: impl, Brokers: b.brokers, Topic: benchTopic,
		Partitions: b.o.partitions, Callers: b.o.callers, Batch: b.o.batch, Linger: b.o.linger,
		Group: b.group(id),
	}
}

// runSpec runs s in a worker, after giving it a fresh topic unless keepTopic.
func (b *bench) runSpec(s spec, freshTopic bool) *result {
	if b.ctx.Err() != nil {
		return nil
	}
	if freshTopic {
		if err := b.adm.fresh(b.ctx, s.Topic, s.Partitions); err != nil {
			b.fail(s.ID, err)
			return nil
		}
	}
	if s.Count > 0 {
		logf("%s: running (%d messages)...", s.ID, s.Count)
	} else {
		logf("%s: running (%s)...", s.ID, s.Duration)
	}
	if b.o.profile != "" {
		_ = os.MkdirAll(b.o.profile, 0o755)
		s.Profile = filepath.Join(b.o.profile, strings.ReplaceAll(s.ID, "/", "_")+".pprof")
	}
	begin := time.Now()
	res, err := spawn(b.ctx, b.exe, s, b.o.workerTO)
	if err != nil {
		b.fail(s.ID, err)
		return nil
	}
	logf("%s: %s in %s", s.ID, res.oneLine(), time.Since(begin).Round(100*time.Millisecond))
	b.record(res)
	return res
}

// record adds res to the results. A repeated workload keeps its fastest run
// (the one least disturbed by whatever else shares the cores) and the rates
// of all runs.
func (b *bench) record(res *result) {
	for i, prev := range b.results {
		if prev.ID != res.ID {
			continue
		}
		runs := append(prev.Runs, res.MsgsPerSec)
		if res.MsgsPerSec > prev.MsgsPerSec {
			b.results[i] = res
		}
		b.results[i].Runs = runs
		return
	}
	res.Runs = []float64{res.MsgsPerSec}
	b.results = append(b.results, res)
}

func (r *result) oneLine() string {
	switch {
	case r.Retry != nil && r.Latency != nil:
		return fmt.Sprintf("healthy %.0f msg/s; healthy e2e at %d msg/s: p50 %.2f ms, p99 %.2f ms; %d failed once, %d moves (failure → acknowledged move p50 %.2f ms, p99 %.2f ms)",
			r.MsgsPerSec, r.Latency.Rate, r.Latency.P50, r.Latency.P99, r.Retry.Failed, r.Retry.Moves, r.Retry.MoveP50, r.Retry.MoveP99)
	case r.Latency != nil:
		l := r.Latency
		return fmt.Sprintf("p50 %.2f ms, p99 %.2f ms, p999 %.2f ms, %d/%d received", l.P50, l.P99, l.P999, l.Received, l.Sent)
	case r.Parallel != nil:
		p := r.Parallel
		return fmt.Sprintf("wall %.2fs, floor %.2fs (%.2fx), %d order violations", p.WallSeconds, p.FloorSeconds, p.WallSeconds/p.FloorSeconds, p.OrderViolations)
	case r.Idle != nil:
		i := r.Idle
		return fmt.Sprintf("%d goroutines idle (%d before kavari.New) on %d partitions: %.2f per partition, RSS %.1f MiB", i.Goroutines, i.Baseline, i.Partitions, i.PerPart, i.RSSMiB)
	case r.IO != nil:
		return fmt.Sprintf("%.0f msg/s, ceiling %.0f msg/s (%.2fx; %.0f msg/s with the measured mean sleep %.3f ms), peak concurrency %d, RSS %.1f MiB",
			r.MsgsPerSec, r.IO.Ceiling, r.MsgsPerSec/r.IO.Ceiling, r.IO.SleptCeiling, r.IO.MeanSleptMs, r.IO.MaxConcurrent, r.PeakRSSMiB)
	case r.SlowKey != nil:
		return fmt.Sprintf("the other partitions %.0f msg/s, %d of the slow key's %d records done when they were, RSS %.1f MiB",
			r.MsgsPerSec, r.SlowKey.SlowDone, r.SlowKey.SlowTotal, r.PeakRSSMiB)
	case r.RSS != nil:
		return fmt.Sprintf("RSS reference %.1f MiB, final %.1f MiB, flat %v", r.RSS.ReferenceMiB, r.RSS.FinalMiB, r.RSS.Flat)
	}
	line := fmt.Sprintf("%.0f msg/s, %d errors, RSS %.1f MiB, %.1f allocs/msg", r.MsgsPerSec, r.Errors, r.PeakRSSMiB, r.AllocsPerMsg)
	if r.CPUNsPerMsg > 0 {
		line += fmt.Sprintf(", %.2f µs CPU/msg", r.CPUNsPerMsg/1000)
	}
	return line
}

func (b *bench) all() {
	b.warmup()
	b.publish()
	b.consume()
	b.scale()
	b.otel()
	b.idle()
	b.io()
	b.slowKey()
	b.bulk()
	b.latency()
	b.eos()
	b.retry()
	b.parallel()
	b.outbox()
	b.rss()
	b.python()
	b.microbench()
}

// warmup publishes a little with franz-go so the broker's JIT is warm
// before the first measured workload. Not reported.
func (b *bench) warmup() {
	if b.o.only != "" && !b.want("publish") && !b.want("consume") && !b.want("e2e") && !b.want("scale") && !b.want("io") && !b.want("otel") && !b.want(eosID("exactly-once")) && !b.wantAny(outboxDirectID, outboxRelayID, outboxLatencyID) && !b.want("retry/") {
		return
	}
	s := b.base("warmup", "publish", "franz-go")
	s.Mode, s.Size, s.Count = "async", 1024, 200_000
	if err := b.adm.fresh(b.ctx, s.Topic, s.Partitions); err != nil {
		b.fail("warmup", err)
		return
	}
	logf("warming the broker up (%d messages, not reported)...", s.Count)
	if _, err := spawn(b.ctx, b.exe, s, b.o.workerTO); err != nil {
		b.fail("warmup", err)
	}
}

func (b *bench) publish() {
	for rep := 0; rep < max(b.o.reps, 1); rep++ {
		for _, size := range sizes {
			for _, mode := range []string{"sync", "batch", "async"} {
				for _, impl := range publishImpls {
					id := fmt.Sprintf("publish/%s/%s/%s", sizeName(size), mode, impl)
					if !b.want(id) {
						continue
					}
					s := b.base(id, "publish", impl)
					s.Mode, s.Size, s.Duration = mode, size, b.o.pubDuration
					b.runSpec(s, true)
				}
			}
		}
	}
	for _, size := range sizes {
		// One synchronous caller, as the Python kavari publishes: the rate
		// and the latency of each call.
		for _, impl := range publishImpls {
			id := fmt.Sprintf("publish/%s/sync1/%s", sizeName(size), impl)
			if b.want(id) {
				s := b.base(id, "publish", impl)
				s.Mode, s.Size, s.Duration, s.Callers = "sync", size, b.o.pubDuration/2, 1
				b.runSpec(s, true)
			}
		}
	}
}

// publishImpls are the publishing clients: raw kafka-go, raw franz-go (with
// the others' linger and no idempotence, and with kavari's franz-go
// transport's settings), and kavari on each client.
var publishImpls = []string{"kafka-go", "franz-go", implFranzIdem, "kavari", implKavariFranz}

// consumeImpls are the consuming clients; "+json" decodes each value with
// json.Unmarshal into the struct kavari decodes, "+json+validate" also runs
// the validator on it, as kavari does.
var consumeImpls = append([]string{"kafka-go", "kafka-go+json", "kafka-go+json+validate", "franz-go", "franz-go+json", "franz-go+json+validate", "kavari", implKavariFranz}, batchImpls...)

// e2eImpls are the clients of the end-to-end latency workload.
var e2eImpls = []string{"kafka-go", "franz-go", implFranzIdem, "kavari", implKavariFranz}

func (b *bench) consume() {
	for _, size := range sizes {
		var ids []string
		for _, impl := range consumeImpls {
			if id := fmt.Sprintf("consume/%s/%s", sizeName(size), impl); b.want(id) {
				ids = append(ids, id)
			}
		}
		if len(ids) == 0 {
			continue
		}
		// One fresh topic per size, filled once; every consumer reads the
		// same records with its own new group.
		if err := b.fill(b.o.consumeN, size, b.o.partitions, nil); err != nil {
			b.fail(fmt.Sprintf("consume/%s", sizeName(size)), err)
			continue
		}
		for rep := 0; rep < max(b.o.reps, 1); rep++ {
			for _, impl := range consumeImpls {
				id := fmt.Sprintf("consume/%s/%s", sizeName(size), impl)
				if !b.want(id) {
					continue
				}
				s := b.base(id, "consume", impl)
				s.Size, s.Count = size, b.o.consumeN
				b.runSpec(s, false)
			}
		}
	}
}

func (b *bench) latency() {
	for _, rate := range []int{1000, 10_000} {
		for _, impl := range e2eImpls {
			id := fmt.Sprintf("e2e/%d/%s", rate, impl)
			if !b.want(id) {
				continue
			}
			s := b.base(id, "e2e", impl)
			s.Size, s.Rate, s.Duration = 100, rate, b.o.e2eDuration
			s.Count = int(int64(rate) * int64(s.Duration) / int64(time.Second))
			b.runSpec(s, true)
		}
	}
}

func (b *bench) parallel() {
	for _, keys := range []int{1, 10, 100, 10_000} {
		id := fmt.Sprintf("parallel/%d", keys)
		if !b.want(id) {
			continue
		}
		sleeps := parallelSleeps(b.o.pcMessages, b.o.seed)
		err := b.fill(b.o.pcMessages, 100, 1, func(i int, v *benchValue) {
			v.ID = parallelKey(i, keys)
			v.SleepUs = sleeps[i]
		})
		if err != nil {
			b.fail(id, err)
			continue
		}
		s := b.base(id, "parallel", "kavari")
		s.Partitions, s.Size, s.Count, s.Keys, s.MaxInFlight = 1, 100, b.o.pcMessages, keys, b.o.pcInFlight
		b.runSpec(s, false)
	}
}

func (b *bench) rss() {
	if !b.want("rss") {
		return
	}
	s := b.base("rss", "rss", "kavari")
	s.Mode, s.Size, s.Count = "async", b.o.rssSize, b.o.rssN
	b.runSpec(s, true)
}

// fill re-creates the topic with partitions and writes n records of size
// bytes in kavari's wire format (franz-go, acks all); edit adjusts each.
func (b *bench) fill(n, size, partitions int, edit func(i int, v *benchValue)) error {
	return b.fillRecords(n, size, partitions, edit, nil)
}

// fillRecords is fill, with rec adjusting each record (its headers) too.
func (b *bench) fillRecords(n, size, partitions int, edit func(i int, v *benchValue), rec func(i int, r *kgo.Record)) error {
	if err := b.adm.fresh(b.ctx, benchTopic, partitions); err != nil {
		return err
	}
	begin := time.Now()
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(b.brokers...),
		kgo.DefaultProduceTopic(benchTopic),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.ProducerLinger(5*time.Millisecond),
	)
	if err != nil {
		return err
	}
	defer cl.Close()
	payload := payloadFor(size)
	var mu sync.Mutex
	var firstErr error
	for i := 0; i < n; i++ {
		v := &benchValue{ID: msgID(i), Seq: int64(i), Payload: payload}
		if edit != nil {
			edit(i, v)
		}
		r := franzRecord(benchTopic, v)
		if rec != nil {
			rec(i, r)
		}
		cl.Produce(b.ctx, r, func(_ *kgo.Record, err error) {
			mu.Lock()
			if err != nil && firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
		})
	}
	if err := cl.Flush(b.ctx); err != nil {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	if firstErr != nil {
		return fmt.Errorf("fill: %w", firstErr)
	}
	logf("filled %s with %d records of %d B in %s", benchTopic, n, size, time.Since(begin).Round(100*time.Millisecond))
	return nil
}

// admin re-creates topics.
type admin struct{ c *kafka.Client }

func newAdmin(brokers []string) *admin {
	return &admin{c: &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 30 * time.Second}}
}

// fresh deletes topic (if it exists) and creates it again, empty, with
// partitions, then waits until every partition has a leader; it creates
// topic's dead-letter topic if it does not exist.
func (a *admin) fresh(ctx context.Context, topic string, partitions int) error {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if err := a.recreate(ctx, topic, partitions); err != nil {
		return err
	}
	// A kavari consumer needs the dead-letter topic to exist; it stays
	// (nothing is dead-lettered) and is created once.
	resp, err := a.c.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: topic + ".dlq", NumPartitions: 1, ReplicationFactor: 1,
	}}})
	if err == nil {
		err = resp.Errors[topic+".dlq"]
	}
	if err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return fmt.Errorf("create topic %s.dlq: %w", topic, err)
	}
	return nil
}

// recreate deletes topic (if it exists) and creates it again, empty, with
// partitions, then waits until every partition has a leader that serves.
func (a *admin) recreate(ctx context.Context, topic string, partitions int) error {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if _, err := a.c.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{topic}}); err != nil {
		return fmt.Errorf("delete topic %s: %w", topic, err)
	}
	for {
		resp, err := a.c.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
			Topic: topic, NumPartitions: partitions, ReplicationFactor: 1,
		}}})
		if err == nil {
			err = resp.Errors[topic]
		}
		if err == nil {
			break
		}
		// The deletion is still under way.
		if !errors.Is(err, kafka.TopicAlreadyExists) && !errors.Is(err, kafka.UnknownTopicOrPartition) {
			return fmt.Errorf("create topic %s: %w", topic, err)
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return fmt.Errorf("create topic %s: still exists: %w", topic, err)
		}
	}
	for {
		md, err := a.c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
		if err == nil && len(md.Topics) == 1 && md.Topics[0].Error == nil && len(md.Topics[0].Partitions) == partitions {
			ready := true
			for _, p := range md.Topics[0].Partitions {
				if p.Error != nil || p.Leader.Host == "" {
					ready = false
				}
			}
			if ready && a.leadersServe(ctx, topic, partitions) {
				return nil
			}
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return fmt.Errorf("topic %s not ready: %w", topic, err)
		}
	}
}

// leadersServe reports whether every partition's leader answers ListOffsets:
// right after a topic is re-created under the same name, metadata already
// names the leader while it still answers "not leader" to produce requests
// for a moment.
func (a *admin) leadersServe(ctx context.Context, topic string, partitions int) bool {
	var reqs []kafka.OffsetRequest
	for p := 0; p < partitions; p++ {
		reqs = append(reqs, kafka.FirstOffsetOf(p), kafka.LastOffsetOf(p))
	}
	resp, err := a.c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil || len(resp.Topics[topic]) != partitions {
		return false
	}
	for _, po := range resp.Topics[topic] {
		if po.Error != nil {
			return false
		}
	}
	return true
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
