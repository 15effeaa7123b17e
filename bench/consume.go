package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-playground/validator/v10"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kavari-go/kavari"
)

// counter counts handled records and remembers when the first and the
// s.Count-th were handled.
type counter struct {
	want        int64
	n           atomic.Int64
	first, last atomic.Int64 // unix ns
	// cpuStart and cpuLast are the process's CPU time when the counter was
	// made (before the client) and when the last record was handled.
	cpuStart time.Duration
	cpuLast  atomic.Int64
	done     chan struct{}
}

func newCounter(want int) *counter {
	return &counter{want: int64(want), done: make(chan struct{}), cpuStart: cpuTime()}
}

func (c *counter) hit() {
	now := time.Now().UnixNano()
	c.first.CompareAndSwap(0, now)
	if c.n.Add(1) == c.want {
		c.last.Store(now)
		c.cpuLast.Store(int64(cpuTime()))
		close(c.done)
	}
}

// hitN counts n records handled at once (a batch).
func (c *counter) hitN(n int) {
	now := time.Now().UnixNano()
	c.first.CompareAndSwap(0, now)
	if v := c.n.Add(int64(n)); v >= c.want && v-int64(n) < c.want {
		c.last.Store(now)
		c.cpuLast.Store(int64(cpuTime()))
		close(c.done)
	}
}

func (c *counter) wait(ctx context.Context) error {
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%d of %d records handled: %w", c.n.Load(), c.want, ctx.Err())
	}
}

func (c *counter) result(begin time.Time) *result {
	first, last := c.first.Load(), c.last.Load()
	res := &result{
		Count:        int(c.want),
		Seconds:      time.Duration(last - first).Seconds(),
		FirstSeconds: time.Duration(first - begin.UnixNano()).Seconds(),
	}
	if c.want > 0 {
		res.CPUNsPerMsg = float64(c.cpuLast.Load()-int64(c.cpuStart)) / float64(c.want)
	}
	return res
}

// runConsume consumes the s.Count records pre-filled on s.Topic with a
// no-op handler, committing as each client does by default.
func runConsume(ctx context.Context, s *spec) (*result, error) {
	c := newCounter(s.Count)
	begin := time.Now()
	var stop func()
	var err error
	switch s.Impl {
	case "kavari", implKavariFranz:
		stop, err = kavariConsume(ctx, s, func(context.Context, *BenchMessage) error { c.hit(); return nil }, nil)
	case "kafka-go":
		stop, err = kafkaGoConsume(ctx, s, func(kafka.Message) { c.hit() })
	case "kafka-go+json":
		// Raw kafka-go whose handler decodes the value, as any real handler
		// must: kavari's decoding without its validation and dispatch.
		stop, err = kafkaGoConsume(ctx, s, func(m kafka.Message) {
			var v benchValue
			if json.Unmarshal(m.Value, &v) == nil {
				c.hit()
			}
		})
	case "kafka-go+json+validate":
		// Raw kafka-go doing what kavari does to a record before its
		// handler: decode into the same struct, then validate it.
		v := newRawValidator()
		stop, err = kafkaGoConsume(ctx, s, func(m kafka.Message) {
			if v.decode(m.Value) {
				c.hit()
			}
		})
	case "franz-go":
		stop, err = franzConsume(ctx, s, func(*kgo.Record) { c.hit() })
	case "franz-go+json":
		// Raw franz-go decoding each value, as kafka-go+json.
		stop, err = franzConsume(ctx, s, func(r *kgo.Record) {
			var v benchValue
			if json.Unmarshal(r.Value, &v) == nil {
				c.hit()
			}
		})
	case "franz-go+json+validate":
		// Raw franz-go decoding and validating, as kafka-go+json+validate.
		v := newRawValidator()
		stop, err = franzConsume(ctx, s, func(r *kgo.Record) {
			if v.decode(r.Value) {
				c.hit()
			}
		})
	case "kavari" + batchSuffix, implKavariFranz + batchSuffix, "kavari" + poisonSuffix, implKavariFranz + poisonSuffix:
		stop, err = runBatchConsume(ctx, s, c)
	default:
		stop, err = runOtelConsume(ctx, s, c)
	}
	if err != nil {
		return nil, err
	}
	err = c.wait(ctx)
	stop()
	if err != nil {
		return nil, err
	}
	return c.result(begin), nil
}

// rawValidator is what a user of a raw client writes to get kavari's checks
// on a consumed record: json.Unmarshal into the message struct kavari
// decodes (BenchMessage) and go-playground/validator's Struct on it, with
// the validator configured as kavari's (validate/validate.go: required
// structs enabled, JSON field names in reports).
type rawValidator struct{ v *validator.Validate }

func newRawValidator() *rawValidator {
	v := validator.New(validator.WithRequiredStructEnabled())
	v.RegisterTagNameFunc(func(f reflect.StructField) string {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			return ""
		}
		return name
	})
	return &rawValidator{v: v}
}

// decode reports whether value decodes into a BenchMessage that validates.
// Records are handled one at a time per partition reader, and Validate is
// safe for concurrent use.
func (r *rawValidator) decode(value []byte) bool {
	var m BenchMessage
	return json.Unmarshal(value, &m) == nil && r.v.Struct(&m) == nil
}

// kavariConsume starts a kavari consumer of BenchMessage with handler fn.
// tune, when set, adjusts the configuration.
func kavariConsume(ctx context.Context, s *spec, fn func(context.Context, *BenchMessage) error, tune func(*kavari.Config)) (stop func(), err error) {
	reg := kavari.NewRegistry()
	if err := kavari.RegisterFuncOn(reg, &BenchMessage{}, fn); err != nil {
		return nil, err
	}
	cfg := kavariConfig(s, reg)
	if tune != nil {
		tune(&cfg)
	}
	k, err := kavari.New(cfg)
	if err != nil {
		return nil, err
	}
	if err := k.Start(ctx); err != nil {
		return nil, err
	}
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_ = k.Stop(sctx)
	}, nil
}

// kafkaGoConsume is what a careful user of raw kafka-go writes: a
// ConsumerGroup, one partition Reader per assigned partition (configured as
// kavari configures its readers), handle inline, CommitOffsets every second
// and once at the end. It handles one generation (the bench has one member).
func kafkaGoConsume(ctx context.Context, s *spec, handle func(kafka.Message)) (stop func(), err error) {
	g, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:                s.Group,
		Brokers:           s.Brokers,
		Topics:            []string{s.Topic},
		StartOffset:       kafka.FirstOffset,
		HeartbeatInterval: 3 * time.Second,
		SessionTimeout:    30 * time.Second,
		RebalanceTimeout:  30 * time.Second,
		JoinGroupBackoff:  time.Second,
		Timeout:           10 * time.Second,
	})
	if err != nil {
		return nil, err
	}
	gctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for gctx.Err() == nil {
			gen, err := g.Next(gctx)
			if err != nil {
				if gctx.Err() != nil || errors.Is(err, kafka.ErrGroupClosed) {
					return
				}
				time.Sleep(100 * time.Millisecond)
				continue
			}
			runKafkaGoGeneration(gen, s, handle)
		}
	}()
	return func() {
		cancel()
		_ = g.Close()
		wg.Wait()
	}, nil
}

func runKafkaGoGeneration(gen *kafka.Generation, s *spec, handle func(kafka.Message)) {
	type part struct {
		id   int
		next atomic.Int64 // offset to commit; -1 before the first record
	}
	var parts []*part
	var readers sync.WaitGroup
	for _, a := range gen.Assignments[s.Topic] {
		p := &part{id: a.ID}
		p.next.Store(-1)
		parts = append(parts, p)
		readers.Add(1)
		gen.Start(func(ctx context.Context) {
			defer readers.Done()
			r := kafka.NewReader(kafka.ReaderConfig{
				Brokers:        s.Brokers,
				Topic:          s.Topic,
				Partition:      a.ID,
				MinBytes:       1,
				MaxBytes:       10 << 20,
				MaxWait:        500 * time.Millisecond,
				ReadBackoffMin: 100 * time.Millisecond,
				ReadBackoffMax: 2 * time.Second,
			})
			defer r.Close()
			_ = r.SetOffset(a.Offset)
			for {
				m, err := r.FetchMessage(ctx)
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					continue
				}
				handle(m)
				p.next.Store(m.Offset + 1)
			}
		})
	}
	commit := func() {
		offsets := map[int]int64{}
		for _, p := range parts {
			if n := p.next.Load(); n >= 0 {
				offsets[p.id] = n
			}
		}
		if len(offsets) > 0 {
			_ = gen.CommitOffsets(map[string]map[int]int64{s.Topic: offsets})
		}
	}
	gen.Start(func(ctx context.Context) {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				commit()
			case <-ctx.Done():
				readers.Wait()
				commit()
				return
			}
		}
	})
}

// franzConsume is franz-go's consumer group with its defaults (autocommit
// every 5 s and on close) and the fetch wait of the others; extra adds
// options (hooks).
func franzConsume(ctx context.Context, s *spec, handle func(*kgo.Record), extra ...kgo.Opt) (stop func(), err error) {
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(s.Brokers...),
		kgo.ConsumerGroup(s.Group),
		kgo.ConsumeTopics(s.Topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(500 * time.Millisecond),
	}, extra...)...)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for pctx.Err() == nil {
			fs := cl.PollFetches(pctx)
			if fs.IsClientClosed() {
				return
			}
			fs.EachRecord(handle)
		}
	}()
	return func() {
		cancel()
		<-done
		cl.Close()
	}, nil
}
