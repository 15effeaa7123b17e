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
package kavaritest

import (
	"crypto/tls"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/kavari-go/kavari/internal/embedded"
)

// Broker is a running embedded broker.
type Broker struct {
	b *embedded.Broker
}

// Option configures a Broker.
type Option func(*options)

type options struct {
	opts []embedded.Option
	sasl bool
}

// Partitions sets the partition count of seeded and auto-created topics
// (default 3).
func Partitions(n int) Option {
	return func(o *options) { o.opts = append(o.opts, embedded.Partitions(n)) }
}

// Topics creates topics up front (auto-creation is on in any case).
func Topics(names ...string) Option {
	return func(o *options) { o.opts = append(o.opts, embedded.Topics(names...)) }
}

// Brokers sets how many brokers the embedded cluster has (default 1).
func Brokers(n int) Option {
	return func(o *options) { o.opts = append(o.opts, embedded.Brokers(n)) }
}

// SASLUser makes the broker require SASL authentication and accepts user
// with password on mechanism ("PLAIN", "SCRAM-SHA-256" or "SCRAM-SHA-512"),
// as kavari.Config.SASL names them. Give it once per user and mechanism.
func SASLUser(mechanism, user, password string) Option {
	return func(o *options) {
		if !o.sasl {
			o.sasl = true
			o.opts = append(o.opts, embedded.Kfake(kfake.EnableSASL()))
		}
		o.opts = append(o.opts, embedded.Kfake(kfake.Superuser(mechanism, user, password)))
	}
}

// TLS makes the broker accept only TLS connections, with cfg (which holds
// the server's certificate).
func TLS(cfg *tls.Config) Option {
	return func(o *options) { o.opts = append(o.opts, embedded.Kfake(kfake.TLS(cfg))) }
}

// Start starts an embedded broker on loopback. Close it when done.
func Start(opts ...Option) (*Broker, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	b, err := embedded.Start(o.opts...)
	if err != nil {
		return nil, err
	}
	return &Broker{b: b}, nil
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
func (b *Broker) Addrs() []string { return b.b.Addrs() }

// Close stops the broker.
func (b *Broker) Close() { b.b.Close() }
