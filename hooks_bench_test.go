package kavari_test

// A/B of the hooks seam's cost on the consumer, on the in-memory transport:
//
//	go test -run '^$' -bench 'BenchmarkDispatchMemoryHooks' -benchmem .
//
// "none" is BenchmarkDispatchMemory (nothing installed); "hooks" installs a
// hook implementing every HookXxx interface and one middleware, all doing
// nothing but counting.

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/internal/transport"
	"github.com/kavari-go/kavari/internal/transport/memory"
)

// countHook implements every hook interface and counts its calls.
type countHook struct{ n atomic.Int64 }

func (h *countHook) OnPublishBefore(context.Context, kavari.Msg) []kavari.Header {
	h.n.Add(1)
	return nil
}
func (h *countHook) OnPublishAfter(context.Context, *kavari.Record, time.Time, error) {
	h.n.Add(1)
}
func (h *countHook) OnAssigned(map[string][]int)                                { h.n.Add(1) }
func (h *countHook) OnRevoked(map[string][]int, bool)                           { h.n.Add(1) }
func (h *countHook) OnCommitted(map[string]map[int]int64, time.Duration, error) { h.n.Add(1) }
func (h *countHook) OnRetryScheduled(*kavari.Record, time.Duration, error) {
	h.n.Add(1)
}
func (h *countHook) OnDeadLettered(*kavari.Record, kavari.ErrorKind, error) { h.n.Add(1) }
func (h *countHook) OnFetched(string, int, int, int64, int64)               { h.n.Add(1) }

func BenchmarkDispatchMemoryHooks(b *testing.B) {
	const topic = "kt-mem-bench"
	broker := memory.NewBroker()
	broker.CreateTopic(topic, dispatchBenchPartitions)
	broker.CreateTopic(topic+".dlq", 1)
	for i := 0; i < dispatchBenchN; i++ {
		broker.Append(transport.Record{Topic: topic, Partition: int32(i % dispatchBenchPartitions),
			Key: []byte("k" + strconv.Itoa(i%64)), Value: []byte(`{}`),
			Headers: []transport.Header{{Key: kavari.HeaderMsgType, Value: []byte("mem.bench")}}})
	}
	for _, installed := range []bool{false, true} {
		name := "none"
		if installed {
			name = "hooks"
		}
		b.Run(name, func(b *testing.B) {
			dispatchBenchLoop(b, func(hit func()) (stop func()) {
				reg := kavari.NewRegistry()
				if err := kavari.RegisterFuncOn(reg, &memBenchMsg{}, func(context.Context, *memBenchMsg) error {
					hit()
					return nil
				}); err != nil {
					b.Fatal(err)
				}
				cfg := kavari.Config{Brokers: []string{"memory"}, Registry: reg, Logger: testLogger(), Consume: kavari.ConsumeConfig{GroupID: testenv.ID("mem-bench")}}
				if installed {
					h := &countHook{}
					cfg.Hooks = []kavari.Hook{h}
					cfg.Middleware = []kavari.Middleware{func(next kavari.AttemptFunc) kavari.AttemptFunc {
						return func(ctx context.Context, msg any) error { h.n.Add(1); return next(ctx, msg) }
					}}
				}
				k, err := kavari.NewOnTransport(cfg, broker.Transport(transport.Capabilities{}))
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
	}
}
