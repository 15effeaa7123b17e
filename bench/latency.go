package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kavari-go/kavari"
)

// runE2E measures publish-call-to-handler-start latency at a fixed rate: an
// open-loop pacer issues message i at start + i/rate, each publish in its own
// goroutine (so a slow publish never delays the next), with the scheduled
// time in the message; the handler, in the same process, subtracts it from
// its own start time. Latency counts from the scheduled time, so a late pacer
// counts against the system, never for it.
func runE2E(ctx context.Context, s *spec) (*result, error) {
	n := int(int64(s.Rate) * int64(s.Duration) / int64(time.Second))
	lat := make([]int64, n)
	var received, warm atomic.Int64
	done := make(chan struct{})
	// seen records a handled message's latency; seq < 0 is a warm-up message.
	seen := func(start time.Time, seq, sentNs int64) {
		if seq < 0 {
			warm.Add(1)
			return
		}
		if seq < int64(n) && lat[seq] == 0 {
			lat[seq] = max(start.UnixNano()-sentNs, 1)
			if received.Add(1) == int64(n) {
				close(done)
			}
		}
	}
	var publish func(ctx context.Context, v *benchValue) error
	var stop func()
	var assigned func() bool
	var err error
	switch s.Impl {
	case "kavari", implKavariFranz:
		var k *kavari.Client
		reg := kavari.NewRegistry()
		if err := kavari.RegisterFuncOn(reg, &BenchMessage{}, func(_ context.Context, m *BenchMessage) error {
			seen(time.Now(), m.Seq, m.SentNs)
			return nil
		}); err != nil {
			return nil, err
		}
		if k, err = kavari.New(kavariConfig(s, reg)); err != nil {
			return nil, err
		}
		if err := k.Start(ctx); err != nil {
			return nil, err
		}
		publish = func(ctx context.Context, v *benchValue) error {
			_, err := k.Publish(ctx, toMessage(v))
			return err
		}
		assigned = func() bool { return len(k.Health().Assigned[s.Topic]) == s.Partitions }
		stop = func() {
			sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			_ = k.Stop(sctx)
		}
	case "kafka-go":
		w := kafkaGoWriter(s)
		stopConsumer, err := kafkaGoConsume(ctx, s, func(m kafka.Message) {
			start := time.Now()
			var v benchValue
			if json.Unmarshal(m.Value, &v) == nil {
				seen(start, v.Seq, v.SentNs)
			}
		})
		if err != nil {
			return nil, err
		}
		publish = func(ctx context.Context, v *benchValue) error { return w.WriteMessages(ctx, kafkaGoRecord(v)) }
		assigned = func() bool { return true } // the warm-up below proves it
		stop = func() { stopConsumer(); _ = w.Close() }
	case "franz-go", implFranzIdem:
		p, err := newFranzPublisher(s)
		if err != nil {
			return nil, err
		}
		stopConsumer, err := franzConsume(ctx, s, func(r *kgo.Record) {
			start := time.Now()
			var v benchValue
			if json.Unmarshal(r.Value, &v) == nil {
				seen(start, v.Seq, v.SentNs)
			}
		})
		if err != nil {
			p.close()
			return nil, err
		}
		publish = p.sync
		assigned = func() bool { return true } // the warm-up below proves it
		stop = func() { stopConsumer(); p.close() }
	default:
		return nil, fmt.Errorf("unknown impl %q", s.Impl)
	}
	defer stop()
	payload := payloadFor(s.Size)

	// Warm up: wait for the assignment, then until 30 messages with distinct
	// keys (so, very likely, every partition) made the round trip.
	deadline := time.Now().Add(60 * time.Second)
	for !assigned() {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no assignment after 60s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := warmUp(ctx, payload, deadline, &warm, publish); err != nil {
		return nil, err
	}
	start, lastIssued, failed := pace(ctx, s.Rate, n, done, func(ctx context.Context, i int, at time.Time) error {
		return publish(ctx, &benchValue{ID: msgID(i), Seq: int64(i), Payload: payload, SentNs: at.UnixNano()})
	})
	return pacedResult(s, lat, int(received.Load()), failed, start, lastIssued), nil
}

// warmups is the number of round trips a paced run makes before its
// measured messages: with distinct keys, very likely every partition.
const warmups = 30

// warmUp publishes the warm-up messages (Seq -1) and waits until warm
// counted all of them coming back, until deadline (zero: until ctx ends).
func warmUp(ctx context.Context, payload string, deadline time.Time, warm *atomic.Int64, publish func(context.Context, *benchValue) error) error {
	for i := 0; i < warmups; i++ {
		if err := publish(ctx, &benchValue{ID: "warmup-" + strconv.Itoa(i), Seq: -1, Payload: payload}); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	for warm.Load() < warmups {
		if !deadline.IsZero() && time.Now().After(deadline) {
			return fmt.Errorf("warm-up: %d of %d came back", warm.Load(), warmups)
		}
		if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
			return fmt.Errorf("warm-up: %d of %d came back: %w", warm.Load(), warmups, err)
		}
	}
	return nil
}

// pace sends messages 0..n-1 at rate per second from an open-loop pacer
// (message i is due at start + i/rate, each send in its own goroutine, so
// a slow one never delays the next), then waits for done, at most 30 s.
// It returns when the pacer started and issued its last message, and how
// many sends failed.
func pace(ctx context.Context, rate, n int, done <-chan struct{}, send func(ctx context.Context, i int, at time.Time) error) (start, lastIssued time.Time, failed int) {
	var nfailed atomic.Int64
	interval := time.Second / time.Duration(rate)
	start = time.Now().Add(5 * time.Millisecond)
	for i := 0; i < n; i++ {
		at := start.Add(time.Duration(i) * interval)
		if d := time.Until(at); d > 0 {
			time.Sleep(d)
		}
		go func() {
			if err := send(ctx, i, at); err != nil {
				nfailed.Add(1)
			}
		}()
		lastIssued = time.Now()
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
	case <-ctx.Done():
	}
	return start, lastIssued, int(nfailed.Load())
}

// pacedResult is the result of a paced latency run of rate s.Rate that
// issued len(lat) messages from start to lastIssued: lat holds each
// received message's latency in ns (0: not received), got of them
// received, failed publishes failed.
func pacedResult(s *spec, lat []int64, got, failed int, start, lastIssued time.Time) *result {
	n := len(lat)
	var ls []int64
	for _, l := range lat {
		if l > 0 {
			ls = append(ls, l)
		}
	}
	slices.Sort(ls)
	st := &latencyStats{
		Rate: s.Rate, Sent: n, Received: got,
		AchievedRate: float64(n) / lastIssued.Sub(start).Seconds(),
		P50:          pct(ls, 0.50), P99: pct(ls, 0.99), P999: pct(ls, 0.999),
	}
	if len(ls) > 0 {
		st.Max = float64(ls[len(ls)-1]) / 1e6
	}
	res := &result{Count: got, Errors: n - got + failed, Seconds: lastIssued.Sub(start).Seconds(), Latency: st}
	if failed > 0 {
		res.Note = fmt.Sprintf("%d publishes failed", failed)
	}
	return res
}

// pct returns the q-quantile of sorted ns values in milliseconds (nearest rank).
func pct(sorted []int64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	i = min(max(i, 0), len(sorted)-1)
	return float64(sorted[i]) / 1e6
}
