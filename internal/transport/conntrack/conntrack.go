// Package conntrack dials and tracks the network connections a Kafka
// adapter opens, so that closing the adapter can cut them. Neither client
// library bounds every request by a context: kafka-go bounds requests by
// timeouts of its own, and kgo waits for a JoinGroup or SyncGroup under way
// before it leaves. Against a broker that accepts connections and never
// answers (frozen, or behind a black-holing network) their goroutines would
// outlive Close by up to tens of seconds; closing their connections ends
// them at once. Both adapters (internal/transport/kafkago and
// internal/transport/franz) use one Set per client they build.
package conntrack

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a Set.
type Options struct {
	// TLS, when set, makes Dial complete a TLS handshake (with ServerName
	// taken from the address when empty) over the tracked TCP connection,
	// as kgo's DialTLSConfig would; nil: plain TCP (kafka-go does its TLS
	// itself, over what Dial returns).
	TLS *tls.Config
	// DialTimeout bounds a dial, the TLS handshake included; 0: only the
	// dial's context does.
	DialTimeout time.Duration
	// Refused is what Dial returns once the set refuses new connections.
	Refused error
	// CutErr, when set, is what reads and writes on a connection the set
	// cut return (an error the client does not retry); nil: the closed
	// socket's own error.
	CutErr error
}

// Set dials and tracks connections. Its zero value is not usable; call New.
type Set struct {
	opt Options

	mu      sync.Mutex
	conns   map[*conn]struct{}
	refused bool
}

// New returns an empty set.
func New(o Options) *Set {
	if o.TLS != nil {
		o.TLS = o.TLS.Clone()
	}
	return &Set{opt: o, conns: map[*conn]struct{}{}}
}

// Dial opens a tracked connection (the dialer of either client library).
// It fails with Options.Refused once Cut(true) was called.
func (s *Set) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	if s.isRefusing() {
		return nil, s.opt.Refused
	}
	if s.opt.DialTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.opt.DialTimeout)
		defer cancel()
	}
	var d net.Dialer
	raw, err := d.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	// The TCP connection is tracked, under TLS: cutting it never waits for
	// a TLS close_notify to be written.
	c := &conn{Conn: raw, set: s}
	s.mu.Lock()
	if s.refused {
		s.mu.Unlock()
		_ = raw.Close()
		return nil, s.opt.Refused
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	if s.opt.TLS == nil {
		return c, nil
	}
	cfg := s.opt.TLS.Clone()
	if cfg.ServerName == "" {
		server, _, err := net.SplitHostPort(address)
		if err != nil {
			_ = c.Close()
			return nil, err
		}
		cfg.ServerName = server
	}
	tc := tls.Client(c, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = c.Close()
		return nil, err
	}
	return tc, nil
}

func (s *Set) isRefusing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refused
}

// Cut closes every open connection: their reads and writes, blocked or
// later, fail (with Options.CutErr when set). With refuse, later dials fail
// too (the client is done); without it the client may open new
// connections (to send a LeaveGroup, say).
func (s *Set) Cut(refuse bool) {
	s.mu.Lock()
	s.refused = s.refused || refuse
	conns := s.conns
	s.conns = map[*conn]struct{}{}
	s.mu.Unlock()
	for c := range conns {
		c.cut.Store(true)
		_ = c.Conn.Close()
	}
}

// Reset closes every open connection as a reset by the network would: the
// client sees the sockets' own errors, and new connections work. It
// returns how many it closed. For tests.
func (s *Set) Reset() int {
	s.mu.Lock()
	conns := make([]net.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c.Conn)
	}
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
	return len(conns)
}

// Open returns how many tracked connections are open.
func (s *Set) Open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// conn is a connection of a Set.
type conn struct {
	net.Conn
	set *Set
	cut atomic.Bool
}

func (c *conn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil && c.set.opt.CutErr != nil && c.cut.Load() {
		return n, c.set.opt.CutErr
	}
	return n, err
}

func (c *conn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if err != nil && c.set.opt.CutErr != nil && c.cut.Load() {
		return n, c.set.opt.CutErr
	}
	return n, err
}

func (c *conn) Close() error {
	c.set.mu.Lock()
	delete(c.set.conns, c)
	c.set.mu.Unlock()
	return c.Conn.Close()
}
