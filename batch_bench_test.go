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
// batch handler instead of a single one: the engine's cost per record when
// records are handed over in batches (MaxBatchRecords 100). ns/msg runs
// from the first record handled to the last, so with the default
// MaxBatchWait ("wait10ms") each partition's last, partial batch waits its
// 10 ms at the end of the burst; "wait1us" shows the engine's own cost.
//
//	go test -run '^$' -bench 'BenchmarkDispatchMemory(Batch)?$' -benchtime 20x .
func BenchmarkDispatchMemoryBatch(b *testing.B) {
	b.Run("wait10ms", func(b *testing.B) { benchBatch(b, 0, 0) })
	b.Run("wait1us", func(b *testing.B) { benchBatch(b, time.Microsecond, 0) })
	// A simulated bulk write of 2 ms per call: at most MaxBatchRecords
	// (100) ÷ 2 ms × 3 partitions (each batch holds every key of its
	// partition, so PerKey runs one batch per partition) = 150,000
	// records/s, 6.7 µs/msg.
	b.Run("bulk2ms", func(b *testing.B) { benchBatch(b, 0, 2*time.Millisecond) })
}

func benchBatch(b *testing.B, wait, write time.Duration) {
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
			if write > 0 {
				time.Sleep(write)
			}
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
			Consume:  kavari.ConsumeConfig{GroupID: testenv.ID("mem-bench-batch"), MaxBatchWait: wait},
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
