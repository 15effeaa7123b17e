package kavari_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/transport"
)

type recHandlerA struct{ note func(context.Context, string) }

func (h *recHandlerA) Handle(ctx context.Context, m *engMsg) error {
	h.note(ctx, "A")
	if m.N == 1 {
		return errors.New("boom")
	}
	return nil
}

type recHandlerB struct{ note func(context.Context, string) }

func (h *recHandlerB) Handle(ctx context.Context, m *engMsg) error {
	h.note(ctx, "B")
	return nil
}

// TestRecordNamesItsHandler: RecordFromContext's Record.Handler names the
// handler the context belongs to, on every attempt and for each of two
// handlers of one type, with and without middleware; middleware sees the
// same name.
func TestRecordNamesItsHandler(t *testing.T) {
	for _, withMW := range []bool{false, true} {
		t.Run(fmt.Sprintf("middleware=%v", withMW), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := engBroker(1)
				for n := range 2 {
					b.Append(engRecord(0, "k", n))
				}
				var mu sync.Mutex
				var got []string
				note := func(ctx context.Context, who string) {
					r, ok := kavari.RecordFromContext(ctx)
					require.True(t, ok)
					mu.Lock()
					got = append(got, fmt.Sprintf("%s@%d attempt=%d handler=%s", who, r.Offset, r.Attempt, r.Handler))
					mu.Unlock()
				}
				reg := kavari.NewRegistry()
				require.NoError(t, kavari.RegisterOn(reg, &engMsg{}, func() *recHandlerA { return &recHandlerA{note} }))
				require.NoError(t, kavari.RegisterOn(reg, &engMsg{}, func() *recHandlerB { return &recHandlerB{note} }))
				cfg := kavari.Config{
					Brokers:  []string{"memory"},
					Registry: reg,
					Logger:   testLogger(),
					Consume: kavari.ConsumeConfig{
						GroupID:        "g",
						CommitInterval: 100 * time.Millisecond,
						Retry:          kavari.ConstantRetry(10*time.Millisecond, 2),
					},
				}
				if withMW {
					cfg.Middleware = []kavari.Middleware{func(next kavari.AttemptFunc) kavari.AttemptFunc {
						return func(ctx context.Context, msg any) error {
							note(ctx, "mw")
							return next(ctx, msg)
						}
					}}
				}
				k, err := kavari.NewOnTransport(cfg, b.Transport(transport.Capabilities{}))
				require.NoError(t, err)
				require.NoError(t, k.Start(context.Background()))
				time.Sleep(time.Second)
				synctest.Wait()
				require.NoError(t, stopNow(t, k))

				const a, bn = "*kavari_test.recHandlerA", "*kavari_test.recHandlerB"
				var want []string
				add := func(who string, off, attempt int, h string) {
					if withMW {
						want = append(want, fmt.Sprintf("mw@%d attempt=%d handler=%s", off, attempt, h))
					}
					want = append(want, fmt.Sprintf("%s@%d attempt=%d handler=%s", who, off, attempt, h))
				}
				add("A", 0, 1, a)
				add("B", 0, 1, bn)
				add("A", 1, 1, a)
				add("A", 1, 2, a)
				add("B", 1, 1, bn)
				mu.Lock()
				defer mu.Unlock()
				assert.Equal(t, want, got)
			})
		})
	}
}
