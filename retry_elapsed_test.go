package kavari_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
)

// stepClock is a kavari.Clock whose timers fire at once and move Now forward
// by their duration; Advance moves it as a slow attempt would.
type stepClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *stepClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func (c *stepClock) NewTimer(d time.Duration) kavari.Timer {
	c.Advance(d)
	t := &stepTimer{ch: make(chan time.Time, 1)}
	t.ch <- c.Now()
	return t
}

type stepTimer struct{ ch chan time.Time }

func (t *stepTimer) C() <-chan time.Time { return t.ch }
func (t *stepTimer) Stop() bool          { return false }

type elapsedMsg struct {
	kavari.Message `kavari:"topic=kavari-test-elapsed,key=ID"`
	Run            string `json:"run"`
	ID             string `json:"id"`
}

// A handler's RetryError counts its first attempt, which runs before the
// retry loop: two attempts of 10 s with a 1 s wait took 21 s, not 11 s.
func TestHandlerRetryElapsedIncludesFirstAttempt(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("run")
	clk := &stepClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	reg := kavari.NewRegistry()
	require.NoError(t, kavari.RegisterFuncOn(reg, &elapsedMsg{}, func(ctx context.Context, m *elapsedMsg) error {
		if m.Run != run {
			return nil
		}
		clk.Advance(10 * time.Second)
		return errors.New("slow failure")
	}))
	k := newKavari(t, reg, brokers, func(c *kavari.Config) {
		c.Clock = clk
		c.ConsumerRetry = kavari.ConstantRetry(time.Second, 2)
	})
	require.NoError(t, k.Start(context.Background()))
	require.NoError(t, k.Publish(context.Background(), &elapsedMsg{Run: run, ID: "e"}))
	dl := readTopic(t, brokers, "kavari-test-elapsed.dlq", 1, func(m kafka.Message) bool { return containsRun(m.Value, run) })
	assert.Equal(t, "2", header(dl[0], kavari.HeaderAttempts))
	assert.Contains(t, header(dl[0], kavari.HeaderOriginalError), "gave up after 2 attempts in 21s")
}
