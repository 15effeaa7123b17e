// Package kavaritest runs an embedded Kafka broker (franz-go's kfake) inside
// the test process, so tests of code that uses kavari need no Kafka:
//
//	func TestBilling(t *testing.T) {
//		b := kavaritest.NewBroker(t)
//		k, err := kavari.New(kavari.Config{Brokers: b.Addrs(), Consume: kavari.ConsumeConfig{GroupID: "billing"}})
//		...
//	}
//
// The embedded broker speaks the Kafka protocol but is not Apache Kafka: it
// is for fast tests and the quickstart, not for proving behaviour under real
// broker failures.
package kavaritest

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

// KfakeOptions passes options straight to kfake, for fault injection set-ups.
func KfakeOptions(opts ...kfake.Opt) Option {
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

// Addrs returns the bootstrap addresses, for kavari.Config.Brokers.
func (b *Broker) Addrs() []string { return b.c.ListenAddrs() }

// Cluster returns the kfake cluster, for fault injection (ControlKey,
// MoveTopicPartition, ...).
func (b *Broker) Cluster() *kfake.Cluster { return b.c }

// Close stops the broker.
func (b *Broker) Close() { b.c.Close() }
