package kavari_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
)

// Two services disagree about the codec of a type: one publishes Mix as text
// and MixInt as JSON, the other reads Mix as JSON and MixInt as text.
type ktMixTextOut struct {
	kavari.Message `kavari:"topic=kavari-test-codec-mix,name=Mix,key=Payload,codec=text"`
	Payload        string
}

type ktMixJSONIn struct {
	kavari.Message `kavari:"topic=kavari-test-codec-mix,name=Mix"`
	Run            string `json:"run"`
}

type ktMixJSONOut struct {
	kavari.Message `kavari:"topic=kavari-test-codec-mix,name=MixInt,key=ID"`
	ID             string `json:"id"`
	N              int    `json:"n"`
}

type ktMixTextIn struct {
	kavari.Message `kavari:"topic=kavari-test-codec-mix,name=MixInt,codec=text"`
	N              int
}

// TestCodecMismatchDeadLetters: plain text reaching a JSON type, and JSON
// reaching a text type, are dead-lettered with kind decode; no handler runs.
func TestCodecMismatchDeadLetters(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("mix")
	const topic = "kavari-test-codec-mix"

	con := kavari.NewRegistry()
	var handled atomic.Int32
	require.NoError(t, kavari.RegisterFuncOn(con, &ktMixJSONIn{}, func(context.Context, *ktMixJSONIn) error { handled.Add(1); return nil }))
	require.NoError(t, kavari.RegisterFuncOn(con, &ktMixTextIn{}, func(context.Context, *ktMixTextIn) error { handled.Add(1); return nil }))
	consumer := newKavari(t, con, brokers, func(c *kavari.Config) { c.Topics.Partitions = 1 })

	pub := kavari.NewRegistry()
	require.NoError(t, pub.Declare(&ktMixTextOut{}))
	require.NoError(t, pub.Declare(&ktMixJSONOut{}))
	publisher := newKavari(t, pub, brokers, func(c *kavari.Config) { c.Topics.Partitions = 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	require.NoError(t, consumer.Start(ctx))
	_, err := publisher.Publish(ctx, &ktMixTextOut{Payload: run + "-text"})
	require.NoError(t, err)
	_, err = publisher.Publish(ctx, &ktMixJSONOut{ID: run + "-json", N: 5})
	require.NoError(t, err)

	dls := readTopic(t, brokers, topic+".dlq", 2, func(m kafka.Message) bool { return strings.HasPrefix(string(m.Key), run) })
	byKey := map[string]kafka.Message{}
	for _, m := range dls {
		byKey[string(m.Key)] = m
	}
	text, js := byKey[run+"-text"], byKey[run+"-json"]
	assert.Equal(t, string(kavari.KindDecode), header(text, kavari.HeaderErrorKind))
	assert.Equal(t, run+"-text", string(text.Value), "the dead letter keeps the value")
	assert.Equal(t, "text/plain; charset=utf-8", header(text, kavari.HeaderContentType))
	assert.Contains(t, header(text, kavari.HeaderOriginalError), "is not the JSON of ktMixJSONIn")
	assert.Equal(t, string(kavari.KindDecode), header(js, kavari.HeaderErrorKind))
	assert.Equal(t, "application/json", header(js, kavari.HeaderContentType))
	assert.Contains(t, header(js, kavari.HeaderOriginalError), "is not the text of ktMixTextIn")
	assert.Zero(t, handled.Load(), "no handler ran")
}
