// Package embedded runs franz-go's kfake broker inside a test process. It is
// kavaritest's embedded broker with the kfake cluster in reach, for kavari's
// own tests: fault injection (ControlKey, SleepControl, coordinator moves),
// and packages that kavaritest, which imports kavari, cannot serve without an
// import cycle (the transports' tests, testenv).
package embedded

import (
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Broker is a running embedded broker.
type Broker struct {
	c *kfake.Cluster
}

// Option configures a Broker.
type Option func(*options)

type options struct {
	partitions int32
	topics     []string
	brokers    int
	extra      []kfake.Opt
}

// Partitions sets the partition count of seeded and auto-created topics
// (default 3).
func Partitions(n int) Option { return func(o *options) { o.partitions = int32(n) } }

// Topics creates topics up front (auto-creation is on in any case).
func Topics(names ...string) Option {
	return func(o *options) { o.topics = append(o.topics, names...) }
}

// Brokers sets how many brokers the embedded cluster has (default 1).
func Brokers(n int) Option { return func(o *options) { o.brokers = n } }

// Kfake passes options straight to kfake.
func Kfake(opts ...kfake.Opt) Option {
	return func(o *options) { o.extra = append(o.extra, opts...) }
}

// Start starts an embedded broker on loopback. Close it when done.
func Start(opts ...Option) (*Broker, error) {
	o := options{partitions: 3, brokers: 1}
	for _, opt := range opts {
		opt(&o)
	}
	kopts := []kfake.Opt{
		kfake.NumBrokers(o.brokers),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(int(o.partitions)),
	}
	if len(o.topics) > 0 {
		kopts = append(kopts, kfake.SeedTopics(o.partitions, o.topics...))
	}
	c, err := kfake.NewCluster(append(kopts, o.extra...)...)
	if err != nil {
		return nil, fmt.Errorf("kavaritest: start embedded broker: %w", err)
	}
	return &Broker{c: c}, nil
}

// NewBroker starts an embedded broker for test t and closes it when t ends.
func NewBroker(t testing.TB, opts ...Option) *Broker {
	t.Helper()
	b, err := Start(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// Addrs returns the bootstrap addresses.
func (b *Broker) Addrs() []string { return b.c.ListenAddrs() }

// Cluster returns the kfake cluster, for fault injection.
func (b *Broker) Cluster() *kfake.Cluster { return b.c }

// Close stops the broker.
func (b *Broker) Close() { b.c.Close() }
