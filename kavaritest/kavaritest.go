// Package kavaritest tests code that uses kavari without Kafka, in two ways.
//
// A Harness (New) runs a kavari client on an in-memory broker, for unit tests
// of handlers: deliver a message, get how the consumer finished it (handled,
// dead-lettered and why, skipped), and see what the client published:
//
//	func TestBilling(t *testing.T) {
//		reg := kavari.NewRegistry()
//		kavari.RegisterFuncOn(reg, &OrderPlaced{}, billing.Handle)
//		reg.Declare(&InvoiceRequested{}) // billing publishes it
//		h := kavaritest.New(t, kavari.Config{Registry: reg})
//		out := h.Deliver(t.Context(), &OrderPlaced{OrderID: "o-1", Amount: 10})
//		if out.Result != kavaritest.Handled {
//			t.Fatal(out)
//		}
//		invoices := h.PublishedTo("invoices")
//		...
//	}
//
// A Harness fails where the Client would fail on Kafka. New refuses the
// Config kavari.New refuses for its Transport. Its broker has the topics of
// the registered and declared types (and their dead-letter topics), plus
// those given to Harness.CreateTopics, and refuses any other, as a broker
// without topic auto-creation does: a handler publishing to a topic nobody
// created gets kavari.ErrUnknownTopic and its record is dead-lettered
// (unless Config.Publish.AllowAutoCreate is set). Keys go to the
// partitions Config.Publish.Partitioner picks on Kafka.
//
// An embedded broker (NewBroker: franz-go's kfake, which speaks the Kafka
// protocol) is for integration tests of a whole service, with the client
// built as in production:
//
//	b := kavaritest.NewBroker(t)
//	k, err := kavari.New(kavari.Config{Brokers: b.Addrs(), GroupID: "billing"})
//
// Neither is Apache Kafka: they are for fast tests and the quickstart, not for
// proving behaviour under real broker failures.
//
// kavaritest is a module of its own (github.com/kavari-go/kavari/kavaritest),
// as franz-go's kfake is: kfake and what it needs enter the module graph of
// a program that imports kavaritest, never that of one importing only kavari.
package kavaritest

import (
	"crypto/tls"
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
	sasl       bool
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

// SASLUser makes the broker require SASL authentication and accepts user
// with password on mechanism ("PLAIN", "SCRAM-SHA-256" or "SCRAM-SHA-512"),
// as kavari.Config.SASL names them. Give it once per user and mechanism.
func SASLUser(mechanism, user, password string) Option {
	return func(o *options) {
		if !o.sasl {
			o.sasl = true
			o.extra = append(o.extra, kfake.EnableSASL())
		}
		o.extra = append(o.extra, kfake.Superuser(mechanism, user, password))
	}
}

// TLS makes the broker accept only TLS connections, with cfg (which holds
// the server's certificate).
func TLS(cfg *tls.Config) Option {
	return func(o *options) { o.extra = append(o.extra, kfake.TLS(cfg)) }
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

// Cluster returns the kfake cluster behind the broker, for fault injection
// (kfake.Cluster.ControlKey and the like: failed commits, slow produce
// requests, moved coordinators). kfake is franz-go's and has no releases:
// its API may change with the version kavaritest requires.
func (b *Broker) Cluster() *kfake.Cluster { return b.c }

// Close stops the broker.
func (b *Broker) Close() { b.c.Close() }
