package kafkago

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"

	"github.com/segmentio/kafka-go"
)

// errClosed is what a dial returns once the adapter cut its connections.
var errClosed = errors.New("kavari: closed")

// connSet tracks every network connection the adapter opens to the brokers (the
// consumer group, the partition readers, the publisher's transport), so
// that Stop can cut them. kafka-go bounds each request by a timeout of its
// own, not by a context, so against a broker that accepts connections and
// never answers (frozen, or behind a black-holing network) its goroutines
// would outlive Stop by up to tens of seconds; closing their connections
// ends them at once.
type connSet struct {
	mu     sync.Mutex
	conns  map[*trackedConn]struct{}
	closed bool
}

func newConnSet() *connSet { return &connSet{conns: map[*trackedConn]struct{}{}} }

// dial opens a tracked connection; it fails with errClosed once the set is
// closed.
func (s *connSet) dial(ctx context.Context, network, address string) (net.Conn, error) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, errClosed
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, set: s}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		_ = c.Close()
		return nil, errClosed
	}
	s.conns[tc] = struct{}{}
	return tc, nil
}

// closeAll closes every open connection and refuses new ones. Blocked reads
// and writes on them return at once.
func (s *connSet) closeAll() {
	s.mu.Lock()
	s.closed = true
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	for c := range conns {
		_ = c.Conn.Close()
	}
}

type trackedConn struct {
	net.Conn
	set *connSet
}

func (c *trackedConn) Close() error {
	c.set.mu.Lock()
	delete(c.set.conns, c)
	c.set.mu.Unlock()
	return c.Conn.Close()
}

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
