package kavari_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
)

type ktTransportMsg struct {
	kavari.Message `kavari:"topic=kt-transports,key=Key"`
	Key            string `json:"key" validate:"required"`
	Run            string `json:"run"`
	N              int    `json:"n"`
}

// TestEveryTransportRoundTrips: on each transport a Client publishes keyed
// messages, handles every one in per-key order, and stops cleanly.
func TestEveryTransportRoundTrips(t *testing.T) {
	for _, tr := range []kavari.Transport{kavari.KafkaGo, kavari.FranzGo} {
		t.Run(tr.String(), func(t *testing.T) {
			brokers, _ := testenv.Brokers(t)
			run := testenv.ID("run")
			reg := kavari.NewRegistry()
			var mu sync.Mutex
			last := map[string]int{}
			got := 0
			done := make(chan struct{})
			const keys, per = 4, 25
			require.NoError(t, kavari.RegisterFuncOn(reg, &ktTransportMsg{}, func(_ context.Context, m *ktTransportMsg) error {
				if m.Run != run {
					return nil
				}
				mu.Lock()
				defer mu.Unlock()
				if prev, ok := last[m.Key]; ok && m.N <= prev {
					t.Errorf("key %s: %d after %d", m.Key, m.N, prev)
				}
				last[m.Key] = m.N
				if got++; got == keys*per {
					close(done)
				}
				return nil
			}))
			k, err := kavari.New(kavari.Config{
				Brokers:   brokers,
				Registry:  reg,
				Logger:    ktLogger(),
				Transport: tr,
				Consume: kavari.ConsumeConfig{
					GroupID: testenv.ID("kt-transports"),
				},
				Topics: kavari.TopicConfig{
					Create: true,
				},
			})
			require.NoError(t, err)
			ctx := context.Background()
			require.NoError(t, k.Start(ctx))
			for n := range per {
				for key := range keys {
					_, err := k.Publish(ctx, &ktTransportMsg{Key: "k" + strconv.Itoa(key), Run: run, N: n})
					require.NoError(t, err)
				}
			}
			select {
			case <-done:
			case <-time.After(60 * time.Second):
				mu.Lock()
				t.Fatalf("handled %d of %d", got, keys*per)
			}
			stopCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			require.NoError(t, k.Stop(stopCtx))
		})
	}
}

// TestInstanceIDNeedsStaticMembership: New accepts an InstanceID on FranzGo
// and rejects it on KafkaGo, which has no static membership.
func TestInstanceIDNeedsStaticMembership(t *testing.T) {
	cfg := kavari.Config{Brokers: []string{"localhost:9092"}, Registry: kavari.NewRegistry(), Consume: kavari.ConsumeConfig{GroupID: "g", InstanceID: "a"}}
	_, err := kavari.New(cfg)
	require.ErrorContains(t, err, "InstanceID")
	cfg.Transport = kavari.FranzGo
	k, err := kavari.New(cfg)
	require.NoError(t, err)
	require.NoError(t, k.Stop(context.Background()))
}

// TestHealthFollowsCooperativeRebalance: on FranzGo (cooperative) a member
// that only loses partitions when another joins reports the partitions it
// kept and the group's new generation, as the joiner does.
func TestHealthFollowsCooperativeRebalance(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	group := testenv.ID("kt-coop")
	member := func() *kavari.Client {
		reg := kavari.NewRegistry()
		require.NoError(t, kavari.RegisterFuncOn(reg, &ktTransportMsg{}, func(context.Context, *ktTransportMsg) error { return nil }))
		k, err := kavari.New(kavari.Config{
			Brokers:   brokers,
			Registry:  reg,
			Logger:    ktLogger(),
			Transport: kavari.FranzGo,
			Consume: kavari.ConsumeConfig{
				GroupID:           group,
				SessionTimeout:    6 * time.Second,
				HeartbeatInterval: 500 * time.Millisecond,
			},
			Topics: kavari.TopicConfig{
				Create: true,
			},
		})
		require.NoError(t, err)
		require.NoError(t, k.Start(context.Background()))
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = k.Stop(ctx)
		})
		return k
	}
	count := func(h kavari.Health) int { return len(h.Assigned["kt-transports"]) }
	k1 := member()
	require.Eventually(t, func() bool { return count(k1.Health()) == 3 }, 60*time.Second, 20*time.Millisecond, "k1 holds the 3 partitions")
	k2 := member()
	require.Eventually(t, func() bool { return count(k2.Health()) > 0 }, 60*time.Second, 20*time.Millisecond, "k2 gets partitions")
	var h1, h2 kavari.Health
	ok := assert.Eventually(t, func() bool {
		h1, h2 = k1.Health(), k2.Health()
		return count(h1)+count(h2) == 3 && h1.Generation == h2.Generation
	}, 60*time.Second, 20*time.Millisecond)
	if !ok {
		t.Errorf("k1 reports %v in generation %d, k2 %v in generation %d", h1.Assigned, h1.Generation, h2.Assigned, h2.Generation)
	}
}
