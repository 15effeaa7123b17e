package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// fakeWriter answers the replayer's produce requests with errs, one per
// request, then success; it counts the records it was sent.
type fakeWriter struct {
	errs     []error // an error per request: a kafka.Error is the broker's answer, others the request's
	requests int
	records  int
}

func (f *fakeWriter) send(_ context.Context, req *kafka.ProduceRequest) (*kafka.ProduceResponse, error) {
	f.requests++
	n := 0
	for {
		_, err := req.Records.ReadRecord()
		if err != nil {
			break
		}
		n++
	}
	f.records += n
	var err error
	if len(f.errs) > 0 {
		err, f.errs = f.errs[0], f.errs[1:]
	}
	var ke kafka.Error
	if errors.As(err, &ke) {
		return &kafka.ProduceResponse{Error: ke}, nil
	}
	if err != nil {
		return nil, err
	}
	return &kafka.ProduceResponse{}, nil
}

func fakeReplayer(w *fakeWriter, out, errOut io.Writer) *replayer {
	rp := &replayer{
		c:    &conn{addrs: []string{"fake:9092"}, timeout: 5 * time.Second},
		send: w.send, out: out, errOut: errOut,
		targets: map[string][]int{}, batches: map[topicPartition][]message{},
		stats: replayStats{Topic: "orders.dlq"},
	}
	tp := topicPartition{"orders", 2}
	rp.batches[tp] = []message{{Key: []byte("a"), Value: []byte("1")}, {Key: []byte("b"), Value: []byte("2")}}
	rp.pending = 2
	return rp
}

// REQUEST_TIMED_OUT and NOT_ENOUGH_REPLICAS_AFTER_APPEND come after the
// leader appended the batch, as does a connection broken mid-request: the
// batch may have been written. The replay does not send it again (a second
// copy), does not count it as replayed, and says so; it stops with an
// error. An error that rejects the request before anything is written is
// retried, and the batch counted once.
func TestReplayMayHaveBeenWritten(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"REQUEST_TIMED_OUT", kafka.RequestTimedOut},
		{"NOT_ENOUGH_REPLICAS_AFTER_APPEND", kafka.NotEnoughReplicasAfterAppend},
		{"connection reset", fmt.Errorf("write: %w", syscall.ECONNRESET)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &fakeWriter{errs: []error{tc.err}}
			var out, errOut bytes.Buffer
			rp := fakeReplayer(w, &out, &errOut)
			err := rp.flush(context.Background())
			if err == nil {
				t.Fatalf("flush = nil after %v; the writer got %d requests, %d records", tc.err, w.requests, w.records)
			}
			if !strings.Contains(err.Error(), "may have been written") {
				t.Errorf("error %q does not say the batch may have been written", err)
			}
			if w.requests != 1 {
				t.Errorf("%d produce requests, want 1: a batch that may be stored is not sent again", w.requests)
			}
			if rp.stats.Replayed != 0 || rp.stats.MayHaveBeenWritten != 2 {
				t.Errorf("replayed %d, may have been written %d; want 0 and 2", rp.stats.Replayed, rp.stats.MayHaveBeenWritten)
			}
			if err := rp.summary(time.Now()); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out.String(), "replayed 0") || !strings.Contains(out.String(), "may have been written 2") {
				t.Errorf("summary %q", out.String())
			}
		})
	}
	t.Run("NOT_LEADER_FOR_PARTITION is retried", func(t *testing.T) {
		w := &fakeWriter{errs: []error{kafka.NotLeaderForPartition, kafka.NotEnoughReplicas}}
		var out, errOut bytes.Buffer
		rp := fakeReplayer(w, &out, &errOut)
		if err := rp.flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		if w.requests != 3 || rp.stats.Replayed != 2 || rp.stats.MayHaveBeenWritten != 0 {
			t.Errorf("%d requests, replayed %d, may have been written %d; want 3, 2, 0", w.requests, rp.stats.Replayed, rp.stats.MayHaveBeenWritten)
		}
	})
}
