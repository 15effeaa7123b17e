package kavari_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
)

type tnMsg struct {
	kavari.Message `kavari:"topic=kavari-test-tn,key=ID"`
	Run            string `json:"run"`
	ID             string `json:"id"`
	Fail           bool   `json:"fail"`
}

// TestTopicNameMapsPublishConsumeAndDeadLetters: with Topics.Name adding a
// per-environment prefix, a message is published to the prefixed topic, the
// consumer subscribes to it and handles the message, a failing message is
// dead-lettered to the prefixed topic + ".dlq", and Health shows the mapping.
func TestTopicNameMapsPublishConsumeAndDeadLetters(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("run")
	prefix := testenv.ID("env") + "."
	real := prefix + "kavari-test-tn"
	reg := kavari.NewRegistry()
	var mu sync.Mutex
	handledOn := map[string]string{} // id -> topic of the record
	require.NoError(t, kavari.RegisterFuncOn(reg, &tnMsg{}, func(ctx context.Context, m *tnMsg) error {
		if m.Run != run {
			return nil
		}
		r, _ := kavari.RecordFromContext(ctx)
		mu.Lock()
		handledOn[m.ID] = r.Topic
		mu.Unlock()
		if m.Fail {
			return errors.New("tn: refused")
		}
		return nil
	}))
	var calls sync.Map
	k := newKavari(t, reg, brokers, func(c *kavari.Config) {
		c.Topics.Partitions = 1
		c.Topics.Name = func(topic string) string {
			n, _ := calls.LoadOrStore(topic, new(int))
			*n.(*int)++
			return prefix + topic
		}
		c.Consume.Retry = kavari.NoRetry()
	})
	ctx := context.Background()
	require.NoError(t, k.Start(ctx))
	_, err := k.Publish(ctx, &tnMsg{Run: run, ID: "ok"})
	require.NoError(t, err)
	_, err = k.Publish(ctx, &tnMsg{Run: run, ID: "bad", Fail: true})
	require.NoError(t, err)
	eventually(t, 60*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(handledOn) == 2 }, "both messages handled")
	mu.Lock()
	assert.Equal(t, map[string]string{"ok": real, "bad": real}, handledOn, "published to and consumed from the mapped topic")
	mu.Unlock()

	// The dead letter is on the mapped topic's dead-letter topic.
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: real + ".dlq", Partition: 0, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	dl, err := r.ReadMessage(rctx)
	require.NoError(t, err, "a dead letter on %s.dlq", real)
	assert.Contains(t, string(dl.Value), `"id":"bad"`)
	for _, h := range dl.Headers {
		if h.Key == kavari.HeaderOriginalTopic {
			assert.Equal(t, real, string(h.Value))
		}
	}

	h := k.Health()
	assert.Equal(t, map[string]string{"kavari-test-tn": real}, h.TopicNames)
	assert.Equal(t, []string{real}, h.Topics, "subscribed to the mapped topic")
	n, ok := calls.Load("kavari-test-tn")
	require.True(t, ok)
	assert.Equal(t, 1, *n.(*int), "Topics.Name is called once per tag topic")
}

type tnDupA struct {
	kavari.Message `kavari:"topic=kavari-test-tn-a,name=tn.same"`
	ID             string `json:"id"`
}

type tnDupB struct {
	kavari.Message `kavari:"topic=kavari-test-tn-b,name=tn.same"`
	ID             string `json:"id"`
}

// TestTopicNameTwoTypesOnOneTopicWithOneNameIsDuplicate: two types with the
// same logical name are fine on different tag topics, but a mapping that puts
// both on one real topic could not route their records: Start fails with
// ErrDuplicate.
func TestTopicNameTwoTypesOnOneTopicWithOneNameIsDuplicate(t *testing.T) {
	b := testenv.NewEmbedded(t, testenv.Topics("tn-one", "tn-one.dlq"))
	reg := kavari.NewRegistry()
	require.NoError(t, kavari.RegisterFuncOn(reg, &tnDupA{}, func(context.Context, *tnDupA) error { return nil }))
	require.NoError(t, kavari.RegisterFuncOn(reg, &tnDupB{}, func(context.Context, *tnDupB) error { return nil }))
	k := newKavari(t, reg, b.Addrs(), func(c *kavari.Config) {
		c.Topics.Name = func(string) string { return "tn-one" }
	})
	err := k.Start(context.Background())
	require.Error(t, err)
	assert.ErrorIs(t, err, kavari.ErrDuplicate)
	assert.Contains(t, err.Error(), `"tn.same"`)
	assert.Contains(t, err.Error(), "tn-one")
}

type tnLate struct {
	kavari.Message `kavari:"topic=kavari-test-tn-late"`
	ID             string `json:"id"`
}

// TestTopicNameInvalidResult: a mapping whose result is empty or not a valid
// topic name is an error at New for the types registered then, and at Start
// and Publish for a type registered later.
func TestTopicNameInvalidResult(t *testing.T) {
	b := testenv.NewEmbedded(t)
	for _, bad := range []string{"", "bad name!", strings.Repeat("x", 250)} {
		name := func(topic string) string {
			if topic == "kavari-test-tn-late" {
				return bad
			}
			return topic
		}
		// Registered before New: New refuses the Config.
		reg := kavari.NewRegistry()
		require.NoError(t, kavari.RegisterFuncOn(reg, &tnLate{}, func(context.Context, *tnLate) error { return nil }))
		k, err := kavari.New(kavari.Config{Brokers: b.Addrs(), Registry: reg, Logger: testLogger(), Topics: kavari.TopicConfig{Name: name}})
		require.Error(t, err, "New with Topics.Name(...) = %q", bad)
		assert.Nil(t, k)
		assert.Contains(t, err.Error(), "kavari: invalid Config: Topics.Name")
		assert.Contains(t, err.Error(), `"kavari-test-tn-late"`)

		// Registered after New: Publish and Start fail.
		reg = kavari.NewRegistry()
		k, err = kavari.New(kavari.Config{Brokers: b.Addrs(), Registry: reg, Logger: testLogger(),
			Consume: kavari.ConsumeConfig{GroupID: testenv.ID("g")}, Topics: kavari.TopicConfig{Name: name}})
		require.NoError(t, err)
		require.NoError(t, kavari.RegisterFuncOn(reg, &tnLate{}, func(context.Context, *tnLate) error { return nil }))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err = k.Publish(ctx, &tnLate{ID: "a"})
		require.Error(t, err, "Publish with Topics.Name(...) = %q", bad)
		assert.Contains(t, err.Error(), "Topics.Name")
		err = k.Start(ctx)
		require.Error(t, err, "Start with Topics.Name(...) = %q", bad)
		assert.Contains(t, err.Error(), "Topics.Name")
		cancel()
		require.NoError(t, k.Stop(context.Background()))
	}
}
