package kavari_test

// Benchmark of the consumer's dispatch overhead per message, on the embedded
// broker (no network beyond loopback, no JVM):
//
//	go test -run '^$' -bench BenchmarkDispatch -benchmem .
//
// Each iteration consumes the same pre-produced records with a no-op handler:
// "kavari" through a Client (group join, fetch, decode, validate, lanes,
// offset tracking, commits), "kafka-go" through one raw partition Reader per
// partition (fetch only). ns/msg is first to last handled record; allocs/msg
// and B/msg count every allocation of the iteration, including the embedded
// broker's, which is the same for both, so the difference between the two
// lines is kavari's cost per message. go run ./bench reports it.

import (
	"context"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/internal/transport"
	"github.com/kavari-go/kavari/internal/transport/memory"
)

const (
	dispatchBenchTopic      = "kt-dispatch-bench"
	dispatchBenchPartitions = 3
	dispatchBenchN          = 20_000
)

// dispatchBenchMsg is about 100 bytes of JSON, like bench/'s 100 B workloads.
type dispatchBenchMsg struct {
	kavari.Message `kavari:"topic=kt-dispatch-bench,key=ID,name=dispatch.bench"`
	ID             string `json:"id" validate:"required"`
	Seq            int    `json:"seq" validate:"gte=0"`
	Payload        string `json:"payload"`
}

func BenchmarkDispatch(b *testing.B) {
	broker := testenv.NewEmbedded(b, testenv.Partitions(dispatchBenchPartitions), testenv.Topics(dispatchBenchTopic, dispatchBenchTopic+".dlq"))
	brokers := broker.Addrs()
	dispatchBenchFill(b, brokers)

	b.Run("kavari", func(b *testing.B) {
		dispatchBenchLoop(b, func(hit func()) (stop func()) {
			reg := kavari.NewRegistry()
			if err := kavari.RegisterFuncOn(reg, &dispatchBenchMsg{}, func(context.Context, *dispatchBenchMsg) error {
				hit()
				return nil
			}); err != nil {
				b.Fatal(err)
			}
			k, err := kavari.New(kavari.Config{
				Brokers:  brokers,
				Registry: reg,
				Logger:   testLogger(),
				Consume: kavari.ConsumeConfig{
					GroupID:           testenv.ID("dispatch-bench"),
					HeartbeatInterval: 500 * time.Millisecond,
				},
			})
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
	})

	b.Run("kafka-go", func(b *testing.B) {
		dispatchBenchLoop(b, func(hit func()) (stop func()) {
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			for p := 0; p < dispatchBenchPartitions; p++ {
				r := kafka.NewReader(kafka.ReaderConfig{
					Brokers: brokers, Topic: dispatchBenchTopic, Partition: p,
					MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 500 * time.Millisecond, // as kavari's readers
				})
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer r.Close()
					for {
						if _, err := r.FetchMessage(ctx); err != nil {
							return
						}
						hit()
					}
				}()
			}
			return func() { cancel(); wg.Wait() }
		})
	})
}

// dispatchBenchLoop runs start once per iteration, waits until it handled
// dispatchBenchN records, and reports ns/msg and allocs/msg.
func dispatchBenchLoop(b *testing.B, start func(hit func()) (stop func())) {
	b.ReportAllocs()
	var busy time.Duration
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	iterations := 0
	for b.Loop() {
		iterations++
		var n atomic.Int64
		var first, last atomic.Int64
		done := make(chan struct{})
		stop := start(func() {
			now := time.Now().UnixNano()
			first.CompareAndSwap(0, now)
			if n.Add(1) == dispatchBenchN {
				last.Store(now)
				close(done)
			}
		})
		select {
		case <-done:
		case <-time.After(2 * time.Minute):
			b.Fatalf("%d of %d records handled", n.Load(), dispatchBenchN)
		}
		stop()
		busy += time.Duration(last.Load() - first.Load())
	}
	runtime.ReadMemStats(&ms1)
	msgs := float64(iterations * dispatchBenchN)
	b.ReportMetric(float64(busy.Nanoseconds())/msgs, "ns/msg")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/msgs, "allocs/msg")
	b.ReportMetric(float64(ms1.TotalAlloc-ms0.TotalAlloc)/msgs, "B/msg")
}

// dispatchBenchFill publishes dispatchBenchN messages with kavari, so the
// records carry kavari's headers.
func dispatchBenchFill(b *testing.B, brokers []string) {
	b.Helper()
	k, err := kavari.New(kavari.Config{Brokers: brokers, Registry: kavari.NewRegistry(), Logger: testLogger()})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	defer func() { _ = k.Stop(ctx) }()
	payload := strings.Repeat("x", 60)
	batch := make([]kavari.Msg, 0, 1000)
	for i := 0; i < dispatchBenchN; i++ {
		batch = append(batch, &dispatchBenchMsg{ID: "m-" + strconv.Itoa(i), Seq: i, Payload: payload})
		if len(batch) == cap(batch) || i == dispatchBenchN-1 {
			if _, err := k.PublishBatch(ctx, batch...); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
}

// memBenchMsg has no fields and no validation: with the value {} decoding
// and validating it cost next to nothing, so BenchmarkDispatchMemory
// measures the engine (feeder, lanes, workers, offset tracking, commits)
// and the in-memory transport's delivery.
type memBenchMsg struct {
	kavari.Message `kavari:"topic=kt-mem-bench,name=mem.bench"`
}

// BenchmarkDispatchMemory is BenchmarkDispatch's kavari line on the
// in-memory transport with a no-op handler and a near-free decode:
//
//	go test -run '^$' -bench BenchmarkDispatchMemory -benchmem .
func BenchmarkDispatchMemory(b *testing.B) { dispatchMemoryBench(b) }

// BenchmarkDispatchMemoryPool compares the worker pool's two ways of
// running quick lanes, alternated in one run: "capped" (the default: at most
// GOMAXPROCS workers run quick lanes, the others queue) and "eager" (a worker
// woken or started for every lane, as for slow records).
//
//	go test -run '^$' -bench BenchmarkDispatchMemoryPool -benchtime 20x -count 5 .
func BenchmarkDispatchMemoryPool(b *testing.B) {
	b.Run("capped", dispatchMemoryBench)
	b.Run("eager", func(b *testing.B) {
		defer kavari.SetWorkerSlowRecord(0)()
		dispatchMemoryBench(b)
	})
}

func dispatchMemoryBench(b *testing.B) {
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
		if err := kavari.RegisterFuncOn(reg, &memBenchMsg{}, func(context.Context, *memBenchMsg) error {
			hit()
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		k, err := kavari.NewOnTransport(kavari.Config{
			Brokers:  []string{"memory"},
			Registry: reg,
			Logger:   testLogger(),
			Consume: kavari.ConsumeConfig{
				GroupID: testenv.ID("mem-bench"),
			},
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
