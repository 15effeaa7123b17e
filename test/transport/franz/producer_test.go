// The franz-go adapter's tests that need franz-go's kfake in process
// (kavaritest's embedded broker and its kfake cluster, for fault injection):
// the kavari module, where the adapter lives, does not require kfake.
package franz_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kavari-go/kavari/internal/transport"
	"github.com/kavari-go/kavari/internal/transport/franz"
	"github.com/kavari-go/kavari/kavaritest"
)

// TestProduceContextEndsInFlight: when ctx ends while the produce request is
// at the broker, Produce returns at once with MayHaveBeenWritten, and kgo
// still settles the record: it is written exactly once.
func TestProduceContextEndsInFlight(t *testing.T) {
	b := kavaritest.NewBroker(t, kavaritest.Topics("inflight"), kavaritest.Partitions(1))
	release := make(chan struct{})
	arrived := make(chan struct{})
	var once sync.Once
	b.Cluster().ControlKey(kmsg.Produce.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		b.Cluster().DropControl()
		once.Do(func() { close(arrived) })
		b.Cluster().SleepControl(func() { <-release })
		return nil, nil, false // then the broker handles it
	})
	tr := franz.New()
	cfg := transport.Config{Brokers: b.Addrs()}
	p, err := tr.NewProducer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan []error, 1)
	go func() {
		done <- p.Produce(ctx, []*transport.Record{{Topic: "inflight", Key: []byte("k"), Value: []byte("v")}})
	}()
	<-arrived
	cancel()
	errs := <-done
	var pe *transport.ProduceError
	if len(errs) != 1 || !errors.As(errs[0], &pe) || !pe.MayHaveBeenWritten || pe.Kind != transport.Retriable || !errors.Is(errs[0], context.Canceled) {
		t.Fatalf("Produce with ctx cancelled in flight = %v, want a retriable error that may have been written", errs)
	}
	close(release)

	adm, err := tr.NewAdmin(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	tp := transport.TopicPartition{Topic: "inflight", Partition: 0}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ends, err := adm.EndOffsets(context.Background(), tp)
		if err == nil && ends[tp] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("end offset %v, %v: want the record written once", ends, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A later produce on the same producer still works (the idempotent
	// sequence was kept).
	if errs := p.Produce(context.Background(), []*transport.Record{{Topic: "inflight", Key: []byte("k"), Value: []byte("w")}}); errs != nil {
		t.Fatalf("Produce after: %v", errs)
	}
}

// TestProduceUncompressed: the franz-go producer sends record batches
// uncompressed, as the kafka-go transport does (kavari has no compression
// setting; kgo's own default would be snappy).
func TestProduceUncompressed(t *testing.T) {
	b := kavaritest.NewBroker(t, kavaritest.Topics("plain"), kavaritest.Partitions(1))
	codecs := make(chan int16, 16)
	b.Cluster().ControlKey(kmsg.Produce.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		b.Cluster().KeepControl()
		for _, tp := range req.(*kmsg.ProduceRequest).Topics {
			for _, pp := range tp.Partitions {
				// A record batch: base offset (8), length (4), leader epoch
				// (4), magic (1), CRC (4), then attributes, whose low 3 bits
				// are the compression codec.
				if len(pp.Records) >= 23 {
					select {
					case codecs <- (int16(pp.Records[21])<<8 | int16(pp.Records[22])) & 0x07:
					default:
					}
				}
			}
		}
		return nil, nil, false
	})
	p, err := franz.New().NewProducer(transport.Config{Brokers: b.Addrs()})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	value := make([]byte, 4096) // zeros: snappy would shrink them a lot
	if errs := p.Produce(ctx, []*transport.Record{{Topic: "plain", Key: []byte("k"), Value: value}}); errs != nil {
		t.Fatal(errs)
	}
	select {
	case codec := <-codecs:
		if codec != 0 {
			t.Fatalf("record batch compression codec %d, want 0 (none)", codec)
		}
	default:
		t.Fatal("the broker saw no produce request")
	}
}

// TestProduceWithoutDeadlineFailsWhenTheBrokerDoesNotAnswer: a Produce whose
// ctx has no deadline still returns, after the write timeout (franz.SetWriteTimeoutForTest), while the broker
// holds the request (a frozen broker): retriable, MayHaveBeenWritten, as the
// kafka-go transport's WriteTimeout does. kgo alone would wait for the
// in-flight request's outcome without bound (idempotence).
func TestProduceWithoutDeadlineFailsWhenTheBrokerDoesNotAnswer(t *testing.T) {
	defer franz.SetWriteTimeoutForTest(300 * time.Millisecond)()
	b := kavaritest.NewBroker(t, kavaritest.Topics("frozen"), kavaritest.Partitions(1))
	release := make(chan struct{})
	var once sync.Once
	defer once.Do(func() { close(release) })
	b.Cluster().ControlKey(kmsg.Produce.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		b.Cluster().DropControl()
		b.Cluster().SleepControl(func() { <-release })
		return nil, nil, false
	})
	p, err := franz.New().NewProducer(transport.Config{Brokers: b.Addrs()})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	done := make(chan []error, 1)
	go func() {
		done <- p.Produce(context.Background(), []*transport.Record{{Topic: "frozen", Value: []byte("v")}})
	}()
	select {
	case errs := <-done:
		var pe *transport.ProduceError
		if len(errs) != 1 || !errors.As(errs[0], &pe) || !pe.MayHaveBeenWritten || pe.Kind != transport.Retriable || !errors.Is(errs[0], context.DeadlineExceeded) {
			t.Fatalf("Produce while the broker holds the request = %v, want a retriable error that may have been written", errs)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Produce without a deadline never returned while the broker held the request (hang guard)")
	}
	once.Do(func() { close(release) })
}

// TestProduceAgainWaitsForTheWriteInFlight: an attempt that ends while the
// broker holds the produce request leaves the record's kgo write in
// InFlight; the next attempts at the same record wait for that write
// instead of producing the record again, and the one that sees the broker's
// answer succeeds. The record is stored once (a second kgo record would get
// a new sequence number, and the broker would store both).
func TestProduceAgainWaitsForTheWriteInFlight(t *testing.T) {
	defer franz.SetWriteTimeoutForTest(200 * time.Millisecond)()
	b := kavaritest.NewBroker(t, kavaritest.Topics("again"), kavaritest.Partitions(1))
	release := make(chan struct{})
	var once sync.Once
	defer once.Do(func() { close(release) })
	produces := make(chan struct{}, 16)
	b.Cluster().ControlKey(kmsg.Produce.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		b.Cluster().KeepControl()
		produces <- struct{}{}
		if len(produces) == 1 {
			b.Cluster().SleepControl(func() { <-release })
		}
		return nil, nil, false
	})
	tr := franz.New()
	cfg := transport.Config{Brokers: b.Addrs()}
	p, err := tr.NewProducer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	rec := &transport.Record{Topic: "again", Key: []byte("k"), Value: []byte("v")}
	for i := 0; i < 3; i++ {
		errs := p.Produce(context.Background(), []*transport.Record{rec})
		var pe *transport.ProduceError
		if len(errs) != 1 || !errors.As(errs[0], &pe) || !pe.MayHaveBeenWritten || pe.Kind != transport.Retriable {
			t.Fatalf("attempt %d while the broker holds the request = %v, want a retriable error that may have been written", i, errs)
		}
		if rec.InFlight == nil {
			t.Fatalf("attempt %d: the write in flight was not kept", i)
		}
	}
	once.Do(func() { close(release) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if errs := p.Produce(ctx, []*transport.Record{rec}); errs != nil {
		t.Fatalf("attempt after the broker answered: %v", errs)
	}
	if rec.InFlight != nil || rec.Offset != 0 {
		t.Fatalf("after success: InFlight %v, offset %d; want nil, 0", rec.InFlight, rec.Offset)
	}
	adm, err := tr.NewAdmin(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	tp := transport.TopicPartition{Topic: "again", Partition: 0}
	ends, err := adm.EndOffsets(ctx, tp)
	if err != nil || ends[tp] != 1 {
		t.Fatalf("end offset %v, %v: want the record stored once", ends, err)
	}
	if n := len(produces); n != 1 {
		t.Fatalf("%d produce requests reached the broker, want 1", n)
	}
}

// TestProduceEndsWhenTheBrokerIsUnreachable: an attempt whose record is in
// flight when its broker goes away ends at kgo's first refused dial to that
// broker (as a kafka-go attempt ends at its refused dial), not at
// writeTimeout, and the write stays in InFlight for the next attempt.
func TestProduceEndsWhenTheBrokerIsUnreachable(t *testing.T) {
	defer franz.SetWriteTimeoutForTest(time.Hour)()
	b := kavaritest.NewBroker(t, kavaritest.Topics("gone"), kavaritest.Partitions(1))
	arrived := make(chan struct{})
	var once sync.Once
	p, err := franz.New().NewProducer(transport.Config{Brokers: b.Addrs()})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if errs := p.Produce(ctx, []*transport.Record{{Topic: "gone", Value: []byte("first")}}); errs != nil {
		t.Fatal(errs)
	}
	b.Cluster().ControlKey(kmsg.Produce.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		b.Cluster().KeepControl()
		once.Do(func() { close(arrived) })
		b.Cluster().SleepControl(func() { time.Sleep(time.Hour) }) // never answered
		return nil, nil, false
	})
	rec := &transport.Record{Topic: "gone", Value: []byte("v")}
	done := make(chan []error, 1)
	go func() { done <- p.Produce(context.Background(), []*transport.Record{rec}) }()
	<-arrived
	go b.Close() // the broker goes away: connections closed, dials refused
	select {
	case errs := <-done:
		var pe *transport.ProduceError
		if len(errs) != 1 || !errors.As(errs[0], &pe) || !pe.MayHaveBeenWritten || pe.Kind != transport.Retriable || !strings.Contains(errs[0].Error(), "unreachable") {
			t.Fatalf("Produce when the broker went away = %v, want a retriable error that may have been written, naming the unreachable broker", errs)
		}
		if rec.InFlight == nil {
			t.Fatal("the write in flight was not kept")
		}
	case <-ctx.Done():
		t.Fatal("Produce still waiting 30 s after its broker went away (hang guard; the attempt should end at the first refused dial)")
	}
}
