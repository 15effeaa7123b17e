package kavari_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
)

// messages is a slog.Handler that keeps the messages logged at Warn and above.
type messages struct {
	mu   sync.Mutex
	msgs []string
}

func (m *messages) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (m *messages) Handle(_ context.Context, r slog.Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.msgs = append(m.msgs, r.Message)
	return nil
}
func (m *messages) WithAttrs([]slog.Attr) slog.Handler { return m }
func (m *messages) WithGroup(string) slog.Handler      { return m }

func (m *messages) with(sub string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, s := range m.msgs {
		if strings.Contains(s, sub) {
			out = append(out, s)
		}
	}
	return out
}

// New warns that drains are cut earlier than Consume.DrainTimeout only
// where they are: on KafkaGo at the session timeout's drain bound (no
// heartbeats while draining), on FranzGo, which heartbeats while draining,
// only at RebalanceTimeout less the reserve.
func TestNewWarnsOfDrainCutOnlyWhereDrainsAreCut(t *testing.T) {
	// SessionTimeout 10 s, HeartbeatInterval 3 s: the drain bound without
	// heartbeats is 10 − 3 − 2 = 5 s; RebalanceTimeout 30 s leaves 28 s
	// with them.
	for _, c := range []struct {
		name      string
		tr        kavari.Transport
		rebalance time.Duration
		warn      string // what the warning names; "" none
	}{
		{"KafkaGo", kavari.KafkaGo, 30 * time.Second, "session timeout"},
		{"FranzGo", kavari.FranzGo, 30 * time.Second, ""},
		{"FranzGo short RebalanceTimeout", kavari.FranzGo, 9 * time.Second, "RebalanceTimeout"}, // 9 − 2 = 7 s < 8 s
	} {
		t.Run(c.name, func(t *testing.T) {
			log := &messages{}
			k, err := kavari.New(kavari.Config{
				Brokers: []string{"127.0.0.1:1"}, Transport: c.tr, Registry: kavari.NewRegistry(), Logger: slog.New(log),
				Consume: kavari.ConsumeConfig{GroupID: "g", SessionTimeout: 10 * time.Second, HeartbeatInterval: 3 * time.Second,
					RebalanceTimeout: c.rebalance, DrainTimeout: 8 * time.Second},
			})
			require.NoError(t, err)
			require.NoError(t, k.Stop(context.Background()))
			warned := log.with("DrainTimeout")
			if c.warn != "" {
				require.Len(t, warned, 1, "New warns that drains are cut before DrainTimeout")
				assert.Contains(t, warned[0], c.warn)
			} else {
				assert.Empty(t, warned, "FranzGo heartbeats while draining: DrainTimeout is not cut")
			}
		})
	}
}
