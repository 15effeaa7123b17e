package kafkago

import (
	"context"
	"errors"
	"net"
	"sync/atomic"

	"github.com/segmentio/kafka-go"

	"github.com/kavari-go/kavari/internal/transport/conntrack"
)

// errClosed is what a dial returns once the adapter cut its connections.
var errClosed = errors.New("kavari: closed")

// newConnSet returns a set that tracks every network connection the
// adapter opens to the brokers (the consumer group, the partition readers,
// the publisher's transport), so that Stop can cut them. kafka-go bounds
// each request by a timeout of its own, not by a context, so against a
// broker that accepts connections and never answers (frozen, or behind a
// black-holing network) its goroutines would outlive Stop by up to tens of
// seconds; closing their connections ends them at once. Once cut, dials
// fail with errClosed; reads and writes on a cut connection fail with the
// socket's own error, as kafka-go expects of a closed connection.
func newConnSet() *conntrack.Set { return conntrack.New(conntrack.Options{Refused: errClosed}) }

// guardedTransport is the consumer's kafka.Client transport: a
// kafka.Transport that refuses requests once the consumer shut down. A
// request under way at shutdown may have opened a connection pool (with a
// goroutine of its own) after shutdown closed the pools: it closes them
// again when it returns, so no goroutine outlives Close for long.
type guardedTransport struct {
	tr   *kafka.Transport
	shut atomic.Bool
}

func (g *guardedTransport) RoundTrip(ctx context.Context, addr net.Addr, req kafka.Request) (kafka.Response, error) {
	if g.shut.Load() {
		return nil, errClosed
	}
	res, err := g.tr.RoundTrip(ctx, addr, req)
	if g.shut.Load() {
		g.tr.CloseIdleConnections()
	}
	return res, err
}

// shutdown refuses later requests and closes the connection pools.
func (g *guardedTransport) shutdown() {
	g.shut.Store(true)
	g.tr.CloseIdleConnections()
}
