package kavari_test

import (
	"context"
	"testing"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/internal/testkit"
)

type encodedOrder struct {
	kavari.Message `kavari:"topic=encoded-orders,key=OrderID"`
	OrderID        string `json:"order_id" validate:"required"`
	Amount         int64  `json:"amount" validate:"gt=0"`
}

// Encode validates and encodes without sending; PublishEncoded sends the
// record later with the same ce_id, key, value and headers, through the
// Client's topic mapping.
func TestEncodeThenPublishEncoded(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("enc")
	reg := kavari.NewRegistry()
	require.NoError(t, reg.Declare(&encodedOrder{}))
	k := testkit.NewClient(t, reg, brokers, func(c *kavari.Config) {
		c.Topics.Name = func(topic string) string { return run + "-" + topic }
	})
	ctx := context.Background()

	_, err := k.Encode(ctx, &encodedOrder{OrderID: "o-1"})
	require.ErrorIs(t, err, kavari.ErrInvalid)

	ctx = kavari.WithHeaders(ctx, kavari.Header{Key: "tenant", Value: []byte("t1")})
	e, err := k.Encode(ctx, &encodedOrder{OrderID: "o-1", Amount: 5})
	require.NoError(t, err)
	require.Equal(t, run+"-encoded-orders", e.Topic)
	require.Equal(t, []byte("o-1"), e.Key)
	require.JSONEq(t, `{"order_id":"o-1","amount":5}`, string(e.Value))
	require.NotEmpty(t, e.ID())

	rs, err := k.PublishEncoded(ctx, e, e)
	require.NoError(t, err)
	require.Len(t, rs, 2)
	for _, r := range rs {
		require.Equal(t, e.ID(), r.ID)
		require.Equal(t, e.Topic, r.Topic)
		require.GreaterOrEqual(t, r.Offset, int64(0))
	}
	msgs := testkit.ReadTopic(t, brokers, e.Topic, 2, func(kafka.Message) bool { return true })
	for _, m := range msgs {
		require.Equal(t, e.ID(), testkit.Header(m, kavari.HeaderID))
		require.Equal(t, "t1", testkit.Header(m, "tenant"))
		require.Equal(t, "encodedOrder", testkit.Header(m, kavari.HeaderMsgType))
		require.Equal(t, e.Value, m.Value)
	}

	missing := e
	missing.Topic = run + "-nowhere"
	_, err = k.PublishEncoded(ctx, missing)
	var be *kavari.BatchError
	require.ErrorAs(t, err, &be)
	require.ErrorIs(t, err, kavari.ErrUnknownTopic)
}
