package kafkago_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/internal/transport"
	"github.com/kavari-go/kavari/internal/transport/kafkago"
)

// Produce reports each acknowledged record's partition and offset (from the
// Writer's Completion), and classifies an unknown topic.
func TestProduceSetsPartitionAndOffset(t *testing.T) {
	b := testenv.NewEmbedded(t, testenv.Partitions(2), testenv.Topics("kg-receipts"))
	p, err := kafkago.New().NewProducer(transport.Config{Brokers: b.Addrs(), ClientID: "test", BatchTimeout: time.Millisecond, BatchSize: 100, BatchBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	recs := []*transport.Record{
		{Topic: "kg-receipts", Key: []byte("a"), Value: []byte("1"), Offset: -1, Partition: -1},
		{Topic: "kg-receipts", Key: []byte("a"), Value: []byte("2"), Offset: -1, Partition: -1},
		{Topic: "kg-receipts", Key: []byte("a"), Value: []byte("3"), Offset: -1, Partition: -1},
	}
	if errs := p.Produce(ctx, recs); errs != nil {
		t.Fatal(errors.Join(errs...))
	}
	for i, r := range recs {
		if r.Partition != recs[0].Partition || r.Partition < 0 {
			t.Errorf("record %d: partition %d, want %d (same key)", i, r.Partition, recs[0].Partition)
		}
		if r.Offset != int64(i) {
			t.Errorf("record %d: offset %d, want %d", i, r.Offset, i)
		}
	}
}

// A Produce call whose context is marked WithoutLinger is sent at once: with
// a BatchTimeout of an hour, it is acknowledged all the same (without the
// mark, the batch would wait for the hour, past the test's context).
func TestProduceWithoutLingerSendsAtOnce(t *testing.T) {
	b := testenv.NewEmbedded(t, testenv.Partitions(2), testenv.Topics("kg-nolinger"))
	p, err := kafkago.New().NewProducer(transport.Config{Brokers: b.Addrs(), ClientID: "test", BatchTimeout: time.Hour, BatchSize: 100, BatchBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	recs := []*transport.Record{
		{Topic: "kg-nolinger", Key: []byte("a"), Value: []byte("1"), Offset: -1, Partition: -1},
		{Topic: "kg-nolinger", Key: []byte("b"), Value: []byte("2"), Offset: -1, Partition: -1},
	}
	if errs := p.Produce(transport.WithoutLinger(ctx), recs); errs != nil {
		t.Fatal(errors.Join(errs...))
	}
	for i, r := range recs {
		if r.Offset < 0 {
			t.Errorf("record %d: offset %d, want it acknowledged", i, r.Offset)
		}
	}
}
