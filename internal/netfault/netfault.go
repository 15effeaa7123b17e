// Package netfault is a TCP proxy for fault tests: it sits between Kafka
// clients and a broker on loopback and can cut, reset, refuse or slow the
// connections that cross it, the way a flaky network would, while the
// broker itself keeps running.
//
// A Proxy forwards every connection accepted on its own address to one
// target address. The faults:
//
//   - [Proxy.Cut]: a silent cut for a while. No byte crosses in either
//     direction, connections stay open and new ones are accepted but get
//     nothing; when the cut heals, what was held back is delivered (TCP
//     retransmits what a dropped link lost), so the peers see only a delay.
//   - [Proxy.Reset]: every open connection is reset (RST) on both sides;
//     new connections work.
//   - [Proxy.Refuse]: every open connection is reset and so is every new
//     one until the time is up.
//   - [Proxy.Delay]: the broker's bytes reach the client late (a broker
//     that answers late).
//
// It is test machinery: loopback only, no TLS of its own (TLS passes
// through as bytes).
package netfault

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy forwards TCP connections from its address to a target. Its methods
// are safe for concurrent use.
type Proxy struct {
	ln     net.Listener
	target string

	mu       sync.Mutex
	conns    map[*pair]struct{}
	cutUntil time.Time     // no byte crosses before this
	healed   chan struct{} // closed when the current cut ends (nil: none)
	refuse   time.Time     // new connections are reset before this
	closed   bool

	delay    atomic.Int64 // nanoseconds added to the broker's bytes
	accepted atomic.Int64
	wg       sync.WaitGroup
}

// pair is one proxied connection: the client's side and the target's side.
type pair struct {
	client, server net.Conn
	once           sync.Once
}

// Listen starts a proxy on 127.0.0.1 (a free port) forwarding to target.
func Listen(target string) (*Proxy, error) {
	return ListenAt("127.0.0.1:0", target)
}

// ListenAt starts a proxy on addr forwarding to target.
func ListenAt(addr, target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, conns: make(map[*pair]struct{})}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's address, host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target is the address connections are forwarded to.
func (p *Proxy) Target() string { return p.target }

// Accepted is the number of connections accepted so far (refused ones
// included).
func (p *Proxy) Accepted() int64 { return p.accepted.Load() }

// Cut stops every byte in both directions for d, on open and new
// connections alike, and returns at once; the cut heals by itself after d
// and held bytes are then delivered in order. A Cut during a cut extends it
// when it ends later.
func (p *Proxy) Cut(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	until := time.Now().Add(d)
	if !until.After(p.cutUntil) {
		return
	}
	p.cutUntil = until
	if p.healed == nil {
		ch := make(chan struct{})
		p.healed = ch
		go p.heal(ch)
	}
}

// heal closes ch once the cut (which may have been extended) is over.
func (p *Proxy) heal(ch chan struct{}) {
	for {
		p.mu.Lock()
		left := time.Until(p.cutUntil)
		if left <= 0 {
			p.healed = nil
			p.mu.Unlock()
			close(ch)
			return
		}
		p.mu.Unlock()
		time.Sleep(left)
	}
}

// Cutting reports whether a cut is in force.
func (p *Proxy) Cutting() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.healed != nil
}

// Reset resets every open connection (RST to both peers). New connections
// are forwarded as usual.
func (p *Proxy) Reset() {
	p.mu.Lock()
	conns := make([]*pair, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.reset()
	}
}

// Refuse resets every open connection and, for d, every new one as soon as
// it is accepted; it returns at once.
func (p *Proxy) Refuse(d time.Duration) {
	p.mu.Lock()
	if until := time.Now().Add(d); until.After(p.refuse) {
		p.refuse = until
	}
	p.mu.Unlock()
	p.Reset()
}

// Delay holds every byte the target sends for d before the client gets it,
// from now on (0 turns it off). Order is kept.
func (p *Proxy) Delay(d time.Duration) { p.delay.Store(int64(d)) }

// Close stops accepting, closes every connection and waits for the proxy's
// goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	conns := make([]*pair, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	err := p.ln.Close()
	for _, c := range conns {
		c.close()
	}
	p.wg.Wait()
	return err
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.accepted.Add(1)
		p.mu.Lock()
		refused := time.Now().Before(p.refuse)
		closed := p.closed
		p.mu.Unlock()
		if refused || closed {
			rst(c)
			continue
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *Proxy) serve(client net.Conn) {
	defer p.wg.Done()
	server, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		rst(client) // the target is down: the client sees a refused connection
		return
	}
	c := &pair{client: client, server: server}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.close()
		return
	}
	p.conns[c] = struct{}{}
	p.mu.Unlock()
	var done sync.WaitGroup
	done.Add(2)
	go func() { defer done.Done(); p.pump(c, server, client, true) }()
	go func() { defer done.Done(); p.pump(c, client, server, false) }()
	done.Wait()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// chunk is what one read brought, and when.
type chunk struct {
	b  []byte
	at time.Time
}

// pump copies src to dst, holding bytes while a cut is in force and, for
// the target's bytes (fromServer), for the configured delay. Reading goes
// on while writing waits, so a delay does not add up over chunks.
func (p *Proxy) pump(c *pair, src, dst net.Conn, fromServer bool) {
	q := make(chan chunk, 256)
	go func() {
		defer close(q)
		for {
			b := make([]byte, 32<<10)
			n, err := src.Read(b)
			if n > 0 {
				q <- chunk{b: b[:n], at: time.Now()}
			}
			if err != nil {
				return
			}
		}
	}()
	for ch := range q {
		if fromServer {
			if d := time.Duration(p.delay.Load()); d > 0 {
				if wait := time.Until(ch.at.Add(d)); wait > 0 {
					time.Sleep(wait)
				}
			}
		}
		p.waitHealed()
		if _, err := dst.Write(ch.b); err != nil {
			break
		}
	}
	// One side is gone: end the pair as that side ended (a reset stays a
	// reset: reset() already closed both with linger 0).
	c.close()
	for range q { // let the reader end
	}
}

// waitHealed blocks while a cut is in force.
func (p *Proxy) waitHealed() {
	for {
		p.mu.Lock()
		ch := p.healed
		p.mu.Unlock()
		if ch == nil {
			return
		}
		<-ch
	}
}

func (c *pair) reset() {
	c.once.Do(func() {
		rst(c.client)
		rst(c.server)
	})
}

func (c *pair) close() {
	c.once.Do(func() {
		_ = c.client.Close()
		_ = c.server.Close()
	})
}

// rst closes conn with SO_LINGER 0, so the peer gets a TCP RST.
func rst(conn net.Conn) {
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}
