package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kavari-go/kavari"
)

// Exactly-once consume → publish (issue 20), on franz-go: a handler that
// decodes each input and publishes one output, in four forms:
//
//	eos/franz-go/at-least-once        kavari, Consume.ExactlyOnce off,
//	                                  the handler's Publish waits
//	eos/franz-go/at-least-once+async  the same with PublishAsync: the
//	                                  handler returns at once, its record
//	                                  completes at the output's ack
//	eos/franz-go/exactly-once         kavari, Consume.ExactlyOnce on
//	eos/franz-go/raw-txn        a hand-written franz-go GroupTransactSession
//	                            loop: poll, decode, produce without waiting,
//	                            End after each poll
//
// Throughput: the inputs are pre-filled; rate = inputs ÷ (first input
// handled → the last output visible: acknowledged at-least-once, committed
// in its transaction exactly-once). End-to-end (eos-e2e/<rate>/...): paced
// inputs, latency from the scheduled publish to the output read by a
// read_committed consumer.

// eosOutTopic is the topic of the outputs.
const eosOutTopic = "kavari-bench-out"

// BenchOutput is what the pipeline's handler publishes for each input.
type BenchOutput struct {
	kavari.Message `kavari:"topic=kavari-bench-out,key=ID,name=BenchOutput"`
	ID             string `json:"id"`
	Seq            int64  `json:"seq"`
	Payload        string `json:"payload"`
	SentNs         int64  `json:"sent_ns,omitempty"`
}

// eosModes are the pipeline's forms, in the order they run.
var eosModes = []string{"at-least-once", "at-least-once+async", "exactly-once", "raw-txn"}

// eosRates are the paced end-to-end rates (messages per second).
var eosRates = []int{1000}

func eosID(mode string) string { return "eos/franz-go/" + mode }

func eosE2EID(rate int, mode string) string {
	return fmt.Sprintf("eos-e2e/%d/franz-go/%s", rate, mode)
}

// eos runs the exactly-once workloads.
func (b *bench) eos() {
	var ids []string
	for _, m := range eosModes {
		if b.want(eosID(m)) {
			ids = append(ids, eosID(m))
		}
	}
	if len(ids) > 0 {
		if err := b.fill(b.o.eosN, 100, b.o.partitions, nil); err != nil {
			b.fail("eos", err)
			return
		}
		if err := b.adm.fresh(b.ctx, eosOutTopic, b.o.partitions); err != nil {
			b.fail("eos", err)
			return
		}
		for rep := 0; rep < max(b.o.reps, 1); rep++ {
			for _, m := range eosModes {
				if !b.want(eosID(m)) {
					continue
				}
				s := b.base(eosID(m), "eos", "franz-go")
				s.Mode, s.Size, s.Count = m, 100, b.o.eosN
				b.runSpec(s, false)
			}
		}
	}
	for _, rate := range eosRates {
		for _, m := range eosModes {
			id := eosE2EID(rate, m)
			if !b.want(id) {
				continue
			}
			if err := b.adm.fresh(b.ctx, eosOutTopic, b.o.partitions); err != nil {
				b.fail(id, err)
				continue
			}
			s := b.base(id, "eos-e2e", "franz-go")
			s.Mode, s.Size, s.Rate, s.Duration = m, 100, rate, b.o.e2eDuration
			s.Count = int(int64(rate) * int64(s.Duration) / int64(time.Second))
			b.runSpec(s, true)
		}
	}
}

// eosPipeline is one running form of the pipeline.
type eosPipeline struct {
	stop func()
}

// startEOS starts the pipeline of s.Mode on s.Topic. handled runs when a
// handler (or the raw loop) took an input; visible runs with the number of
// inputs whose outputs just became visible (acknowledged at-least-once,
// committed otherwise).
func startEOS(ctx context.Context, s *spec, handled func(), visible func(n int)) (*eosPipeline, error) {
	if s.Mode == "raw-txn" {
		return startRawTxn(ctx, s, handled, visible)
	}
	reg := kavari.NewRegistry()
	var k *kavari.Client
	if err := kavari.RegisterFuncOn(reg, &BenchMessage{}, func(ctx context.Context, m *BenchMessage) error {
		handled()
		out := &BenchOutput{ID: m.ID, Seq: m.Seq, Payload: m.Payload, SentNs: m.SentNs}
		if s.Mode == "at-least-once+async" {
			// The record completes once the output is acknowledged.
			k.PublishAsync(ctx, out, func(_ kavari.Receipt, err error) {
				if err == nil {
					visible(1)
				}
			})
			return nil
		}
		_, err := k.Publish(ctx, out)
		if err == nil && s.Mode == "at-least-once" {
			visible(1)
		}
		return err
	}); err != nil {
		return nil, err
	}
	if err := reg.Declare(&BenchOutput{}); err != nil {
		return nil, err
	}
	ks := *s
	ks.Impl = implKavariFranz
	cfg := kavariConfig(&ks, reg)
	if s.Mode == "exactly-once" {
		cfg.Consume.ExactlyOnce = kavari.ExactlyOnceConfig{TransactionalIDPrefix: s.Group}
		var last sync.Map // partition → committed offset
		cfg.Hooks = append(cfg.Hooks, txnHook(func(ev kavari.TransactionEvent) {
			if !ev.Committed {
				return
			}
			n := 0
			for p, off := range ev.Offsets[s.Topic] {
				prev, _ := last.Swap(p, off)
				if prev != nil {
					n += int(off - prev.(int64))
				} else {
					n += int(off)
				}
			}
			if n > 0 {
				visible(n)
			}
		}))
	}
	var err error
	if k, err = kavari.New(cfg); err != nil {
		return nil, err
	}
	if err := k.Start(ctx); err != nil {
		return nil, err
	}
	return &eosPipeline{stop: func() {
		sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_ = k.Stop(sctx)
	}}, nil
}

// txnHook is a kavari.HookTransaction from a function.
type txnHook func(kavari.TransactionEvent)

func (h txnHook) OnTransaction(ev kavari.TransactionEvent) { h(ev) }

// startRawTxn is what a careful user of raw franz-go writes for the same
// pipeline: a GroupTransactSession (reading committed, acks from all
// in-sync replicas, no linger, no compression, as kavari's), and for each
// poll Begin, decode each record and produce its output without waiting,
// End.
func startRawTxn(ctx context.Context, s *spec, handled func(), visible func(n int)) (*eosPipeline, error) {
	sess, err := kgo.NewGroupTransactSession(
		kgo.SeedBrokers(s.Brokers...),
		kgo.ConsumerGroup(s.Group),
		kgo.ConsumeTopics(s.Topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(500*time.Millisecond),
		kgo.TransactionalID(s.Group),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(0),
		kgo.ProducerBatchCompression(kgo.NoCompression()), // the common settings; kgo's default is snappy
	)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for pctx.Err() == nil {
			fs := sess.PollFetches(pctx)
			if fs.IsClientClosed() {
				return
			}
			recs := fs.Records()
			if len(recs) == 0 {
				continue
			}
			if err := sess.Begin(); err != nil {
				logf("%s: begin: %v", s.ID, err)
				return
			}
			for _, r := range recs {
				handled()
				var v benchValue
				if json.Unmarshal(r.Value, &v) != nil {
					continue
				}
				sess.Produce(pctx, franzRecord(eosOutTopic, &v), nil)
			}
			committed, err := sess.End(pctx, kgo.TryCommit)
			if err != nil {
				if pctx.Err() == nil {
					logf("%s: end: %v", s.ID, err)
				}
				return
			}
			if committed {
				visible(len(recs))
			}
		}
	}()
	return &eosPipeline{stop: func() {
		cancel()
		<-done
		sess.Close()
	}}, nil
}

// runEOS is the throughput workload: s.Count pre-filled inputs.
func runEOS(ctx context.Context, s *spec) (*result, error) {
	c := newCounter(s.Count)
	var n atomic.Int64
	begin := time.Now()
	p, err := startEOS(ctx, s, func() { c.first.CompareAndSwap(0, time.Now().UnixNano()) }, func(k int) {
		if v := n.Add(int64(k)); v >= int64(s.Count) && v-int64(k) < int64(s.Count) {
			c.last.Store(time.Now().UnixNano())
			c.cpuLast.Store(int64(cpuTime()))
			close(c.done)
		}
	})
	if err != nil {
		return nil, err
	}
	err = c.wait(ctx)
	p.stop()
	if err != nil {
		return nil, fmt.Errorf("%d of %d outputs visible: %w", n.Load(), s.Count, err)
	}
	return c.result(begin), nil
}

// runEOSE2E is the end-to-end workload: inputs published at s.Rate (an
// open-loop pacer, as runE2E's), the pipeline, and a read_committed
// consumer of the outputs: latency from an input's scheduled publish to
// its output read.
func runEOSE2E(ctx context.Context, s *spec) (*result, error) {
	n := int(int64(s.Rate) * int64(s.Duration) / int64(time.Second))
	lat := make([]int64, n)
	var received, warm atomic.Int64
	done := make(chan struct{})
	p, err := startEOS(ctx, s, func() {}, func(int) {})
	if err != nil {
		return nil, err
	}
	defer p.stop()
	reader, err := kgo.NewClient(kgo.SeedBrokers(s.Brokers...), kgo.ConsumeTopics(eosOutTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(500*time.Millisecond))
	if err != nil {
		return nil, err
	}
	defer reader.Close()
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		for rctx.Err() == nil {
			fs := reader.PollFetches(rctx)
			now := time.Now().UnixNano()
			fs.EachRecord(func(r *kgo.Record) {
				var v benchValue
				if json.Unmarshal(r.Value, &v) != nil {
					return
				}
				if v.Seq < 0 {
					warm.Add(1)
					return
				}
				if v.Seq < int64(n) && lat[v.Seq] == 0 {
					lat[v.Seq] = max(now-v.SentNs, 1)
					if received.Add(1) == int64(n) {
						close(done)
					}
				}
			})
		}
	}()
	pub, err := newFranzPublisher(s)
	if err != nil {
		return nil, err
	}
	defer pub.close()
	payload := payloadFor(s.Size)
	// Warm up until 30 inputs with distinct keys made the round trip.
	if err := warmUp(ctx, payload, time.Now().Add(60*time.Second), &warm, pub.sync); err != nil {
		return nil, err
	}
	start, lastIssued, failed := pace(ctx, s.Rate, n, done, func(ctx context.Context, i int, at time.Time) error {
		return pub.sync(ctx, &benchValue{ID: msgID(i), Seq: int64(i), Payload: payload, SentNs: at.UnixNano()})
	})
	return pacedResult(s, lat, int(received.Load()), failed, start, lastIssued), nil
}

// eosTarget and eosALOTarget are the targets: exactly-once ≥ 0.9×
// the raw GroupTransactSession loop, and ≥ 0.5× kavari at-least-once.
const (
	eosRawTarget = 0.9
	eosALOTarget = 0.5
)

// evaluateEOS adds the exactly-once targets.
func (r *report) evaluateEOS(add func(name, measured, st string)) {
	for _, t := range []struct {
		name, base string
		target     float64
	}{
		{"kavari exactly-once consume → publish on franz-go ≥ 0.9× a raw franz-go GroupTransactSession loop doing the same decode and publish", "raw-txn", eosRawTarget},
		{"kavari exactly-once consume → publish on franz-go ≥ 0.5× the same pipeline at-least-once", "at-least-once", eosALOTarget},
	} {
		q, ok := r.ratio(eosID("exactly-once"), eosID(t.base))
		if !ok {
			add(t.name, "", notMeasured)
			continue
		}
		add(t.name, fmt.Sprintf("%.2f×", q), status(q >= t.target))
	}
}

// writeEOS writes the exactly-once section.
func (r *report) writeEOS(w func(string, ...any)) {
	var rows []string
	for _, m := range eosModes {
		x := r.res[eosID(m)]
		if x == nil {
			continue
		}
		cpu := "–"
		if x.CPUNsPerMsg > 0 {
			cpu = fmt.Sprintf("%.1f µs", x.CPUNsPerMsg/1000)
		}
		rows = append(rows, fmt.Sprintf("| %s | %s | %s | %s | %s | %.2f s | %.1f MiB |", m, fmtRate(r.rate(eosID(m))),
			fmtRatio(r.ratio(eosID(m), eosID("raw-txn"))), fmtRatio(r.ratio(eosID(m), eosID("at-least-once"))), cpu, x.FirstSeconds, x.PeakRSSMiB))
	}
	var lat []string
	for _, rate := range eosRates {
		for _, m := range eosModes {
			x := r.res[eosE2EID(rate, m)]
			if x == nil || x.Latency == nil {
				continue
			}
			l := x.Latency
			lat = append(lat, fmt.Sprintf("| %s | %s | %.2f ms | %.2f ms | %.2f ms | %.2f ms | %s / %s |", thousands(rate), m, l.P50, l.P99, l.P999, l.Max, thousands(l.Received), thousands(l.Sent)))
		}
	}
	if len(rows) == 0 && len(lat) == 0 {
		return
	}
	w("## Exactly-once consume → publish (franz-go)\n\n")
	if len(rows) > 0 {
		w("| pipeline | inputs/s | ÷ raw GroupTransactSession loop | ÷ kavari at-least-once | CPU per input | join and first fetch | peak RSS |\n")
		w("| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		for _, l := range rows {
			w("%s\n", l)
		}
		w("\n%s inputs of 100 B, pre-filled; the handler decodes each and publishes one output (`Publish` with its context).\n", thousands(r.o.eosN))
		w("Rate = inputs ÷ (first input handled → last output visible: acknowledged at-least-once, committed in its transaction\n")
		w("exactly-once). kavari: defaults on FranzGo, exactly-once with `Consume.ExactlyOnce` (100 ms windows). raw GroupTransactSession\n")
		w("loop: read committed, acks all, no linger; per poll Begin, decode and produce each output without waiting, End.\n")
		w("CPU per input: the worker's user + system CPU time from creating the client to the last output visible, ÷ inputs.\n\n")
	}
	if len(lat) > 0 {
		w("| rate | pipeline | p50 | p99 | p99.9 | max | received / sent |\n| ---: | --- | ---: | ---: | ---: | ---: | ---: |\n")
		for _, l := range lat {
			w("%s\n", l)
		}
		w("\nEnd to end: inputs published at the rate (open loop) for %s; latency from an input's scheduled publish to its output\n", r.o.e2eDuration)
		w("read by a read_committed consumer.\n\n")
	}
}
