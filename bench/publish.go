package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kavari-go/kavari"
)

// runPublish publishes s.Count messages of s.Size bytes with s.Impl in
// s.Mode: sync (s.Callers goroutines, one message per call), batch (one
// caller, s.Batch messages per call) or async (one caller, callbacks).
func runPublish(ctx context.Context, s *spec) (*result, error) {
	payload := payloadFor(s.Size)
	var p publisher
	var err error
	switch s.Impl {
	case "kavari", implKavariFranz:
		p, err = newKavariPublisher(s)
	case "kafka-go":
		p = newKafkaGoPublisher(s)
	case "franz-go", implFranzIdem:
		p, err = newFranzPublisher(s)
	default:
		err = fmt.Errorf("unknown impl %q", s.Impl)
	}
	if err != nil {
		return nil, err
	}
	defer p.close()
	// One message first, outside the measurement: connections and metadata.
	if err := p.sync(ctx, &benchValue{ID: "warmup", Seq: -1, Payload: payload}); err != nil {
		return nil, fmt.Errorf("warm-up publish: %w", err)
	}
	var acked, failed atomic.Int64
	var firstErr atomic.Value
	fail := func(err error, n int) {
		failed.Add(int64(n))
		firstErr.CompareAndSwap(nil, err.Error())
	}
	begin := time.Now()
	// more reports whether message i is still to be published: the run ends
	// after s.Count messages or, when s.Duration is set, at the deadline.
	deadline := begin.Add(s.Duration)
	more := func(i int) bool {
		return (s.Count <= 0 || i < s.Count) && (s.Duration <= 0 || time.Now().Before(deadline))
	}
	// lat collects the duration of every call of a single synchronous
	// caller (the per-call latency of Publish / WriteMessages / ProduceSync).
	var lat []int64
	switch s.Mode {
	case "sync":
		var next atomic.Int64
		var wg sync.WaitGroup
		single := max(s.Callers, 1) == 1
		for range max(s.Callers, 1) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1) - 1)
					if !more(i) {
						return
					}
					t0 := time.Now()
					err := p.sync(ctx, &benchValue{ID: msgID(i), Seq: int64(i), Payload: payload})
					if single {
						lat = append(lat, max(int64(time.Since(t0)), 1))
					}
					if err != nil {
						fail(err, 1)
						continue
					}
					acked.Add(1)
				}
			}()
		}
		wg.Wait()
	case "batch":
		vs := make([]*benchValue, 0, s.Batch)
		for i := 0; more(i); {
			vs = vs[:0]
			for ; len(vs) < s.Batch && (s.Count <= 0 || i < s.Count); i++ {
				vs = append(vs, &benchValue{ID: msgID(i), Seq: int64(i), Payload: payload})
			}
			if err := p.batch(ctx, vs); err != nil {
				fail(err, len(vs))
				continue
			}
			acked.Add(int64(len(vs)))
		}
	case "async":
		var pending sync.WaitGroup
		cb := func(err error) {
			if err != nil {
				fail(err, 1)
			} else {
				acked.Add(1)
			}
			pending.Done()
		}
		for i := 0; more(i); i++ {
			pending.Add(1)
			p.async(ctx, &benchValue{ID: msgID(i), Seq: int64(i), Payload: payload}, cb)
		}
		pending.Wait()
	default:
		return nil, fmt.Errorf("unknown mode %q", s.Mode)
	}
	elapsed := time.Since(begin)
	res := &result{Count: int(acked.Load()), Errors: int(failed.Load()), Seconds: elapsed.Seconds()}
	if len(lat) > 0 {
		slices.Sort(lat)
		res.Latency = &latencyStats{
			Sent: len(lat), Received: res.Count,
			P50: pct(lat, 0.50), P99: pct(lat, 0.99), P999: pct(lat, 0.999), Max: float64(lat[len(lat)-1]) / 1e6,
		}
	}
	if e, ok := firstErr.Load().(string); ok {
		res.Note = "first error: " + e
	}
	return res, nil
}

// asyncQueue bounds queued asynchronous messages in every client: kavari's
// default AsyncQueue.
const asyncQueue = 10_000

// publisher is one client's way to publish a benchValue.
type publisher interface {
	sync(ctx context.Context, v *benchValue) error
	batch(ctx context.Context, vs []*benchValue) error
	async(ctx context.Context, v *benchValue, cb func(error))
	close()
}

func benchLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// kavariConfig is the configuration every kavari side uses: kavari's
// defaults, with the batch settings of the run, on kafka-go (impl "kavari")
// or franz-go (impl "kavari-franz").
func kavariConfig(s *spec, reg *kavari.Registry) kavari.Config {
	cfg := kavari.Config{
		Brokers:  s.Brokers,
		Registry: reg,
		Logger:   benchLogger(),
		Publish: kavari.PublishConfig{
			BatchTimeout: s.Linger,
			BatchSize:    s.Batch,
			BatchBytes:   1 << 20,
		},
		Consume: kavari.ConsumeConfig{
			GroupID: s.Group,
		},
	}
	if kavariBase(s.Impl) == implKavariFranz {
		cfg.Transport = kavari.FranzGo
		cfg.Publish.BatchTimeout = 0 // FranzGo refuses one: it does not linger
	}
	return cfg
}

// implKavariFranz is the impl name of kavari on its franz-go transport; impl
// "kavari" is kavari on kafka-go, its default.
const implKavariFranz = "kavari-franz"

type kavariPublisher struct{ k *kavari.Client }

func newKavariPublisher(s *spec) (*kavariPublisher, error) {
	k, err := kavari.New(kavariConfig(s, kavari.NewRegistry()))
	if err != nil {
		return nil, err
	}
	return &kavariPublisher{k}, nil
}

func toMessage(v *benchValue) *BenchMessage {
	return &BenchMessage{ID: v.ID, Seq: v.Seq, Payload: v.Payload, SentNs: v.SentNs, SleepUs: v.SleepUs}
}

func (p *kavariPublisher) sync(ctx context.Context, v *benchValue) error {
	_, err := p.k.Publish(ctx, toMessage(v))
	return err
}

func (p *kavariPublisher) batch(ctx context.Context, vs []*benchValue) error {
	msgs := make([]kavari.Msg, len(vs))
	for i, v := range vs {
		msgs[i] = toMessage(v)
	}
	_, err := p.k.PublishBatch(ctx, msgs...)
	return err
}

func (p *kavariPublisher) async(_ context.Context, v *benchValue, cb func(error)) {
	p.k.PublishAsync(context.Background(), toMessage(v), func(_ kavari.Receipt, err error) { cb(err) })
}

func (p *kavariPublisher) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = p.k.Stop(ctx)
}

// kafkaGoWriter is configured as kavari configures its own Writer.
func kafkaGoWriter(s *spec) *kafka.Writer {
	return &kafka.Writer{
		Addr:         kafka.TCP(s.Brokers...),
		Topic:        s.Topic,
		Balancer:     &kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: s.Linger,
		BatchSize:    s.Batch,
		BatchBytes:   1 << 20,
		WriteTimeout: 10 * time.Second,
		ReadTimeout:  10 * time.Second,
		// kafka-go retries failed writes itself (MaxAttempts 10): say so.
		ErrorLogger: kafka.LoggerFunc(func(msg string, args ...any) {
			fmt.Fprintf(os.Stderr, "kafka-go writer: "+msg+"\n", args...)
		}),
	}
}

type kafkaGoPublisher struct {
	// slots bounds the records in kafka-go's async queue, which is itself
	// unbounded, like kavari's AsyncQueue and franz-go's MaxBufferedRecords.
	slots chan struct{}
	w     *kafka.Writer // synchronous
	aw    *kafka.Writer // Async: true, created on first use
	once  sync.Once
	s     *spec
	cbs   sync.Map // key -> callback
}

func newKafkaGoPublisher(s *spec) *kafkaGoPublisher {
	return &kafkaGoPublisher{w: kafkaGoWriter(s), s: s, slots: make(chan struct{}, asyncQueue)}
}

func (p *kafkaGoPublisher) sync(ctx context.Context, v *benchValue) error {
	return p.w.WriteMessages(ctx, kafkaGoRecord(v))
}

func (p *kafkaGoPublisher) batch(ctx context.Context, vs []*benchValue) error {
	recs := make([]kafka.Message, len(vs))
	for i, v := range vs {
		recs[i] = kafkaGoRecord(v)
	}
	return p.w.WriteMessages(ctx, recs...)
}

// async uses kafka-go's own asynchronous mode: WriteMessages returns at once
// (its queue is unbounded) and Completion reports each batch.
func (p *kafkaGoPublisher) async(ctx context.Context, v *benchValue, cb func(error)) {
	p.once.Do(func() {
		p.aw = kafkaGoWriter(p.s)
		p.aw.Async = true
		p.aw.Completion = func(msgs []kafka.Message, err error) {
			for i := range msgs {
				if f, ok := p.cbs.LoadAndDelete(string(msgs[i].Key)); ok {
					<-p.slots
					f.(func(error))(err)
				}
			}
		}
	})
	p.slots <- struct{}{}
	p.cbs.Store(v.ID, cb)
	if err := p.aw.WriteMessages(ctx, kafkaGoRecord(v)); err != nil {
		if _, ok := p.cbs.LoadAndDelete(v.ID); ok {
			<-p.slots
			cb(err)
		}
	}
}

func (p *kafkaGoPublisher) close() {
	_ = p.w.Close()
	if p.aw != nil {
		_ = p.aw.Close()
	}
}

type franzPublisher struct {
	cl    *kgo.Client
	topic string
}

// franzProducerOpts are franz-go's producer options with the settings of the
// other clients: acks all, the same linger and batch bytes, no compression,
// no idempotence (kafka-go has none), Murmur2 for keyed records (franz-go's
// default sticky-key partitioner).
func franzProducerOpts(s *spec) []kgo.Opt {
	return []kgo.Opt{
		kgo.SeedBrokers(s.Brokers...),
		kgo.DefaultProduceTopic(s.Topic),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.DisableIdempotentWrite(),
		kgo.ProducerLinger(s.Linger),
		kgo.ProducerBatchMaxBytes(1 << 20),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.MaxBufferedRecords(asyncQueue),
	}
}

// implFranzIdem is raw franz-go configured as kavari's franz-go transport
// configures its producer, so that kavari on franz-go can be compared with
// the same settings; impl "franz-go" lingers and is not idempotent.
const implFranzIdem = "franz-go+idem"

// franzIdemProducerOpts are the kgo options of kavari's franz-go transport
// (internal/transport/franz: clientOpts and NewProducer) with the run's
// batch bytes: idempotent (kgo's default), acks all, no linger, no
// compression, the sticky-key Murmur2 partitioner (kgo's default), metadata
// at most 250 ms old, no record retries of kgo's own beyond what
// idempotence requires, one unknown-topic retry, retry backoff 100 ms
// doubling to 250 ms. Left out: its logger and its hooks, which only
// observe. MaxBufferedRecords is kgo's default, 10,000, as in the
// transport (kavari bounds its own queue with AsyncQueue).
func franzIdemProducerOpts(s *spec) []kgo.Opt {
	return []kgo.Opt{
		kgo.SeedBrokers(s.Brokers...),
		kgo.MetadataMinAge(250 * time.Millisecond),
		kgo.DefaultProduceTopic(s.Topic),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(0),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		kgo.RecordRetries(0),
		kgo.UnknownTopicRetries(1),
		kgo.RetryBackoffFn(func(tries int) time.Duration {
			d := 100 * time.Millisecond
			for i := 1; i < tries && d < 250*time.Millisecond; i++ {
				d *= 2
			}
			return min(d, 250*time.Millisecond)
		}),
		kgo.ProducerBatchMaxBytes(1 << 20),
		kgo.MaxBufferedRecords(asyncQueue),
	}
}

func newFranzPublisher(s *spec) (*franzPublisher, error) {
	opts := franzProducerOpts(s)
	if s.Impl == implFranzIdem {
		opts = franzIdemProducerOpts(s)
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, err
	}
	return &franzPublisher{cl: cl, topic: s.Topic}, nil
}

func (p *franzPublisher) sync(ctx context.Context, v *benchValue) error {
	return p.cl.ProduceSync(ctx, franzRecord(p.topic, v)).FirstErr()
}

func (p *franzPublisher) batch(ctx context.Context, vs []*benchValue) error {
	recs := make([]*kgo.Record, len(vs))
	for i, v := range vs {
		recs[i] = franzRecord(p.topic, v)
	}
	return p.cl.ProduceSync(ctx, recs...).FirstErr()
}

func (p *franzPublisher) async(ctx context.Context, v *benchValue, cb func(error)) {
	p.cl.Produce(ctx, franzRecord(p.topic, v), func(_ *kgo.Record, err error) { cb(err) })
}

func (p *franzPublisher) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.cl.Flush(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		fmt.Fprintf(os.Stderr, "franz-go flush: %v\n", err)
	}
	p.cl.Close()
}
