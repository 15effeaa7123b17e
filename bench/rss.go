package main

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"
)

// runRSS publishes s.Count messages with PublishAsync while the same process
// consumes them with kavari, sampling RSS every 250 ms. RSS is flat when the
// highest sample of the second half of the messages is within 10 % (at least
// 8 MiB) of the highest sample of the first half, after a 10 % warm-up.
func runRSS(ctx context.Context, s *spec) (*result, error) {
	c := newCounter(s.Count)
	begin := time.Now()
	stop, err := kavariConsume(ctx, s, func(context.Context, *BenchMessage) error { c.hit(); return nil }, nil)
	if err != nil {
		return nil, err
	}
	defer stop()
	p, err := newKavariPublisher(s)
	if err != nil {
		return nil, err
	}
	defer p.close()

	var samples []rssSample
	sample := func() {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		samples = append(samples, rssSample{
			Seconds: time.Since(begin).Seconds(), Handled: int(c.n.Load()),
			RSSMiB:   float64(procStatusKiB("VmRSS")) / 1024,
			HeapMiB:  float64(ms.HeapInuse) / (1 << 20),
			Routines: runtime.NumGoroutine(),
		})
	}
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				sample()
			case <-c.done:
				sample()
				return
			case <-ctx.Done():
				return
			}
		}
	}()

	payload := payloadFor(s.Size)
	var failed atomic.Int64
	for i := 0; i < s.Count; i++ {
		p.async(ctx, &benchValue{ID: msgID(i), Seq: int64(i), Payload: payload}, func(err error) {
			if err != nil {
				failed.Add(1)
			}
		})
	}
	if err := c.wait(ctx); err != nil {
		return nil, err
	}
	<-sampled

	st := &rssStats{Samples: samples}
	for _, x := range samples {
		switch f := float64(x.Handled) / float64(s.Count); {
		case f < 0.10:
		case f <= 0.50:
			st.ReferenceMiB = max(st.ReferenceMiB, x.RSSMiB)
		default:
			st.FinalMiB = max(st.FinalMiB, x.RSSMiB)
		}
	}
	st.Flat = st.ReferenceMiB > 0 && st.FinalMiB <= st.ReferenceMiB+max(0.10*st.ReferenceMiB, 8)
	elapsed := time.Since(begin)
	res := &result{Count: s.Count, Errors: int(failed.Load()), Seconds: elapsed.Seconds(), RSS: st}
	if failed.Load() > 0 {
		res.Note = fmt.Sprintf("%d publishes failed", failed.Load())
	}
	return res, nil
}
