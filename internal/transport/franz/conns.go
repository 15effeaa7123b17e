package franz

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"time"
)

// errCut is what reads and writes on a connection the consumer cut return,
// and what a dial returns once the consumer refuses new connections. kgo
// does not retry it (it is neither a network nor a Kafka error), so a
// request on a cut connection fails at once instead of being sent again.
var errCut = errors.New("kavari: franz consumer: connection cut by Close")

// dialTimeout is kgo's default dial timeout (TLS handshake included), kept
// with our own dialer.
const dialTimeout = 10 * time.Second

// connSet dials and tracks every connection a consumer's kgo client opens,
// so that Close can cut them. kgo waits for a JoinGroup or SyncGroup under
// way before it leaves (the coordinator may hold a JoinGroup up to the
// rebalance timeout), and a request to a broker that does not answer ends
// only with its own timeout; cutting the connections ends both at once.
type connSet struct {
	tls *tls.Config // nil: plain TCP

	mu      sync.Mutex
	conns   map[*trackedConn]struct{}
	refused bool
}

func newConnSet(tlsCfg *tls.Config) *connSet {
	if tlsCfg != nil {
		tlsCfg = tlsCfg.Clone()
	}
	return &connSet{tls: tlsCfg, conns: map[*trackedConn]struct{}{}}
}

// dial is kgo's Dialer: a TCP (or TLS, as kgo's DialTLSConfig would) dial
// that the set tracks. It fails with errCut once the set refuses new
// connections.
func (s *connSet) dial(ctx context.Context, network, host string) (net.Conn, error) {
	if s.isRefusing() {
		return nil, errCut
	}
	ctx, cancel := context.WithTimeout(ctx, dialTimeout) // the TLS handshake included
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(ctx, network, host)
	if err != nil {
		return nil, err
	}
	// The TCP connection is tracked, under TLS: cutting it never waits
	// for a TLS close_notify to be written.
	tc := &trackedConn{Conn: raw, set: s}
	s.mu.Lock()
	if s.refused {
		s.mu.Unlock()
		_ = raw.Close()
		return nil, errCut
	}
	s.conns[tc] = struct{}{}
	s.mu.Unlock()
	if s.tls == nil {
		return tc, nil
	}
	cfg := s.tls.Clone()
	if cfg.ServerName == "" {
		server, _, err := net.SplitHostPort(host)
		if err != nil {
			_ = tc.Close()
			return nil, err
		}
		cfg.ServerName = server
	}
	tlsConn := tls.Client(tc, cfg)
	if err := tlsConn.HandshakeContext(ctx); err != nil {
		_ = tc.Close()
		return nil, err
	}
	return tlsConn, nil
}

func (s *connSet) isRefusing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refused
}

// cut closes every open connection: their reads and writes, blocked or
// later, fail with errCut. With refuse, later dials fail too (the consumer
// is done); without it kgo may open new connections (to send LeaveGroup).
func (s *connSet) cut(refuse bool) {
	s.mu.Lock()
	s.refused = s.refused || refuse
	conns := s.conns
	s.conns = map[*trackedConn]struct{}{}
	s.mu.Unlock()
	for c := range conns {
		c.cutNow()
	}
}

// trackedConn is a connection of a connSet.
type trackedConn struct {
	net.Conn
	set *connSet

	mu  sync.Mutex
	cut bool
}

func (c *trackedConn) cutNow() {
	c.mu.Lock()
	c.cut = true
	c.mu.Unlock()
	_ = c.Conn.Close()
}

func (c *trackedConn) isCut() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cut
}

func (c *trackedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil && c.isCut() {
		return n, errCut
	}
	return n, err
}

func (c *trackedConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if err != nil && c.isCut() {
		return n, errCut
	}
	return n, err
}

func (c *trackedConn) Close() error {
	c.set.mu.Lock()
	delete(c.set.conns, c)
	c.set.mu.Unlock()
	return c.Conn.Close()
}
