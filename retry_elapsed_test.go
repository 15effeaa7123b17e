package kavari_test

import (
	"context"
	"errors"
	"regexp"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
)

type elapsedMsg struct {
	kavari.Message `kavari:"topic=kavari-test-elapsed,key=ID"`
	Run            string `json:"run"`
	ID             string `json:"id"`
}

// A handler's RetryError counts its first attempt, which runs before the
// retry loop: two attempts of 300 ms with a 100 ms wait take at least
// 700 ms; left out, the first attempt would make it about 400 ms. (The
// consumer runs on a broker, outside a synctest bubble: real time, with
// only a lower bound that the sleeps guarantee.)
func TestHandlerRetryElapsedIncludesFirstAttempt(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("run")
	reg := kavari.NewRegistry()
	require.NoError(t, kavari.RegisterFuncOn(reg, &elapsedMsg{}, func(ctx context.Context, m *elapsedMsg) error {
		if m.Run != run {
			return nil
		}
		time.Sleep(300 * time.Millisecond)
		return errors.New("slow failure")
	}))
	k := newKavari(t, reg, brokers, func(c *kavari.Config) {
		c.Consume.Retry = kavari.ConstantRetry(100*time.Millisecond, 2)
	})
	require.NoError(t, k.Start(context.Background()))
	_, err := k.Publish(context.Background(), &elapsedMsg{Run: run, ID: "e"})
	require.NoError(t, err)
	dl := readTopic(t, brokers, "kavari-test-elapsed.dlq", 1, func(m kafka.Message) bool { return containsRun(m.Value, run) })
	assert.Equal(t, "2", header(dl[0], kavari.HeaderAttempts))
	orig := header(dl[0], kavari.HeaderOriginalError)
	m := regexp.MustCompile(`gave up after 2 attempts in (\S+):`).FindStringSubmatch(orig)
	require.NotNil(t, m, orig)
	elapsed, err := time.ParseDuration(m[1])
	require.NoError(t, err, orig)
	assert.GreaterOrEqual(t, elapsed, 700*time.Millisecond, orig)
}
