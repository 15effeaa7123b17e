package kavari_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
)

// A field a transport cannot honour is rejected by New, naming the field,
// never silently ignored; the same field is accepted where it is honoured.
func TestNewRejectsWhatTheTransportCannotHonour(t *testing.T) {
	base := func(tr kavari.Transport) kavari.Config {
		return kavari.Config{Brokers: []string{"127.0.0.1:1"}, Transport: tr, Registry: kavari.NewRegistry(), Consume: kavari.ConsumeConfig{GroupID: "g"}}
	}
	for _, c := range []struct {
		name   string
		tr     kavari.Transport
		mutate func(*kavari.Config)
		want   string // "" accepted
	}{
		{"KafkaGo InstanceID", kavari.KafkaGo, func(c *kavari.Config) { c.Consume.InstanceID = "a" }, "Consume.InstanceID"},
		{"KafkaGo ConsumerProtocol", kavari.KafkaGo, func(c *kavari.Config) { c.Consume.GroupProtocol = kavari.ConsumerProtocol }, "Consume.GroupProtocol"},
		{"KafkaGo BatchTimeout", kavari.KafkaGo, func(c *kavari.Config) { c.Publish.BatchTimeout = time.Millisecond }, ""},
		{"KafkaGo BatchSize", kavari.KafkaGo, func(c *kavari.Config) { c.Publish.BatchSize = 10 }, ""},
		{"FranzGo InstanceID", kavari.FranzGo, func(c *kavari.Config) { c.Consume.InstanceID = "a" }, ""},
		{"FranzGo ConsumerProtocol", kavari.FranzGo, func(c *kavari.Config) { c.Consume.GroupProtocol = kavari.ConsumerProtocol }, ""},
		{"FranzGo BatchTimeout", kavari.FranzGo, func(c *kavari.Config) { c.Publish.BatchTimeout = time.Millisecond }, "Publish.BatchTimeout"},
		// BatchSize bounds what a PublishAsync writer hands over at once, on both.
		{"FranzGo BatchSize", kavari.FranzGo, func(c *kavari.Config) { c.Publish.BatchSize = 10 }, ""},
		{"FranzGo classic SessionTimeout", kavari.FranzGo, func(c *kavari.Config) { c.Consume.SessionTimeout = 20 * time.Second }, ""},
		{"FranzGo ConsumerProtocol SessionTimeout", kavari.FranzGo, func(c *kavari.Config) {
			c.Consume.GroupProtocol, c.Consume.SessionTimeout = kavari.ConsumerProtocol, 20*time.Second
		}, "Consume.SessionTimeout"},
		{"FranzGo ConsumerProtocol HeartbeatInterval", kavari.FranzGo, func(c *kavari.Config) {
			c.Consume.GroupProtocol, c.Consume.HeartbeatInterval = kavari.ConsumerProtocol, time.Second
		}, "Consume.HeartbeatInterval"},
		{"KafkaGo ReadCommitted", kavari.KafkaGo, func(c *kavari.Config) { c.Consume.Isolation = kavari.ReadCommitted }, "Consume.Isolation ReadCommitted"},
		{"KafkaGo ReadUncommitted", kavari.KafkaGo, func(c *kavari.Config) { c.Consume.Isolation = kavari.ReadUncommitted }, ""},
		{"FranzGo ReadCommitted", kavari.FranzGo, func(c *kavari.Config) { c.Consume.Isolation = kavari.ReadCommitted }, ""},
		{"KafkaGo ExactlyOnce", kavari.KafkaGo, func(c *kavari.Config) { c.Consume.ExactlyOnce.TransactionalIDPrefix = "p" }, "no transactional producer"},
		{"FranzGo ExactlyOnce", kavari.FranzGo, func(c *kavari.Config) { c.Consume.ExactlyOnce.TransactionalIDPrefix = "p" }, ""},
		{"FranzGo ExactlyOnce timeout past the session", kavari.FranzGo, func(c *kavari.Config) {
			c.Consume.ExactlyOnce = kavari.ExactlyOnceConfig{TransactionalIDPrefix: "p", TransactionTimeout: 10 * time.Second}
		}, "TransactionTimeout must be shorter than Consume.SessionTimeout"},
		{"FranzGo ExactlyOnce interval past the timeout", kavari.FranzGo, func(c *kavari.Config) {
			c.Consume.ExactlyOnce = kavari.ExactlyOnceConfig{TransactionalIDPrefix: "p", Interval: 3 * time.Second, TransactionTimeout: 2 * time.Second}
		}, "Interval must be shorter"},
		{"unknown Isolation", kavari.FranzGo, func(c *kavari.Config) { c.Consume.Isolation = 5 }, "unknown Consume.Isolation"},
		{"unknown GroupProtocol", kavari.FranzGo, func(c *kavari.Config) { c.Consume.GroupProtocol = 7 }, "unknown Consume.GroupProtocol"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := base(c.tr)
			c.mutate(&cfg)
			k, err := kavari.New(cfg)
			if c.want == "" {
				require.NoError(t, err)
				require.NoError(t, k.Stop(context.Background()))
				return
			}
			require.Error(t, err)
			assert.Nil(t, k)
			assert.Contains(t, err.Error(), c.want)
			assert.Contains(t, err.Error(), "kavari: invalid Config")
		})
	}
}

func TestGroupProtocolString(t *testing.T) {
	assert.Equal(t, "ClassicProtocol", kavari.ClassicProtocol.String())
	assert.Equal(t, "ConsumerProtocol", kavari.ConsumerProtocol.String())
	assert.Equal(t, "GroupProtocol(9)", kavari.GroupProtocol(9).String())
}
