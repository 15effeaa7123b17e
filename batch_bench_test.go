package kavari_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/internal/transport"
	"github.com/kavari-go/kavari/internal/transport/memory"
)

// BenchmarkDispatchMemoryBatch is BenchmarkDispatchMemory with a no-op
// batch handler (default batch bounds) instead of a single one: the
// engine's cost per record when records are handed over in batches.
//
//	go test -run '^$' -bench 'BenchmarkDispatchMemory(Batch)?$' -benchtime 20x .
func BenchmarkDispatchMemoryBatch(b *testing.B) {
	const topic = "kt-mem-bench"
	broker := memory.NewBroker()
	broker.CreateTopic(topic, dispatchBenchPartitions)
	broker.CreateTopic(topic+".dlq", 1)
	for i := 0; i < dispatchBenchN; i++ {
		broker.Append(transport.Record{Topic: topic, Partition: int32(i % dispatchBenchPartitions),
			Key: []byte("k" + strconv.Itoa(i%64)), Value: []byte(`{}`),
			Headers: []transport.Header{{Key: kavari.HeaderMsgType, Value: []byte("mem.bench")}}})
	}
	dispatchBenchLoop(b, func(hit func()) (stop func()) {
		reg := kavari.NewRegistry()
		if err := kavari.RegisterBatchFuncOn(reg, &memBenchMsg{}, func(_ context.Context, ms []*memBenchMsg) error {
			for range ms {
				hit()
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		k, err := kavari.NewOnTransport(kavari.Config{
			Brokers:  []string{"memory"},
			Registry: reg,
			Logger:   testLogger(),
			Consume:  kavari.ConsumeConfig{GroupID: testenv.ID("mem-bench-batch")},
		}, broker.Transport(transport.Capabilities{}))
		if err != nil {
			b.Fatal(err)
		}
		if err := k.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		return func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := k.Stop(ctx); err != nil {
				b.Error(err)
			}
		}
	})
}
