package kavari

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type tnAllocMsg struct {
	Message `kavari:"topic=kavari-test-tn-alloc,key=ID"`
	ID      string `json:"id"`
}

// TestTopicNameCostsPublishingNothing: with Config.Topics.Name set, encoding
// a message for publishing allocates exactly as much as without it, and the
// function runs once per tag topic, not per message.
func TestTopicNameCostsPublishingNothing(t *testing.T) {
	calls := 0
	names := newTopicNames(func(topic string) string { calls++; return "env." + topic }, ".dlq")
	plain := newEncoder("s", 0, time.Now)
	mapped := newEncoder("s", 0, time.Now).withNames(names)
	ctx := context.Background()
	msg := &tnAllocMsg{ID: "a"}
	rec, err := mapped.encode(ctx, msg)
	require.NoError(t, err)
	assert.Equal(t, "env.kavari-test-tn-alloc", rec.Topic)
	rec, err = plain.encode(ctx, msg)
	require.NoError(t, err)
	assert.Equal(t, "kavari-test-tn-alloc", rec.Topic)

	encode := func(e *encoder) func() {
		return func() {
			if _, err := e.encode(ctx, msg); err != nil {
				t.Fatal(err)
			}
		}
	}
	assert.Equal(t, testing.AllocsPerRun(500, encode(plain)), testing.AllocsPerRun(500, encode(mapped)), "allocations per encode, without and with Topics.Name")
	assert.Equal(t, 1, calls, "Topics.Name calls")
}
