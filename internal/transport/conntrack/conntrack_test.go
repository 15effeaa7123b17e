package conntrack

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
)

var (
	errRefused = errors.New("refused")
	errCut     = errors.New("cut")
)

// listen accepts connections and keeps them open (never answering) until
// the test ends.
func listen(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { _ = c.Close() })
		}
	}()
	return l.Addr().String()
}

func dial(t *testing.T, s *Set, addr string) net.Conn {
	t.Helper()
	c, err := s.Dial(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A blocked read on a cut connection returns CutErr; without refuse, new
// dials work; with it, they fail with Refused. Close forgets a connection.
func TestCut(t *testing.T) {
	addr := listen(t)
	s := New(Options{Refused: errRefused, CutErr: errCut})
	c := dial(t, s, addr)
	closed := dial(t, s, addr)
	_ = closed.Close()
	if n := s.Open(); n != 1 {
		t.Fatalf("Open() = %d after one of two closed, want 1", n)
	}
	got := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		got <- err
	}()
	s.Cut(false)
	if err := <-got; !errors.Is(err, errCut) {
		t.Fatalf("read on a cut connection: %v, want %v", err, errCut)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, errCut) {
		t.Fatalf("write on a cut connection: %v, want %v", err, errCut)
	}
	c2 := dial(t, s, addr)
	s.Cut(true)
	if _, err := c2.Read(make([]byte, 1)); !errors.Is(err, errCut) {
		t.Fatalf("read after Cut(true): %v, want %v", err, errCut)
	}
	if _, err := s.Dial(context.Background(), "tcp", addr); !errors.Is(err, errRefused) {
		t.Fatalf("dial after Cut(true): %v, want %v", err, errRefused)
	}
	if n := s.Open(); n != 0 {
		t.Fatalf("Open() = %d after Cut, want 0", n)
	}
}

// Without CutErr, a cut connection fails with the socket's own error.
func TestCutWithoutCutErr(t *testing.T) {
	addr := listen(t)
	s := New(Options{Refused: errRefused})
	c := dial(t, s, addr)
	s.Cut(true)
	_, err := c.Read(make([]byte, 1))
	if err == nil || errors.Is(err, errCut) || errors.Is(err, io.EOF) {
		t.Fatalf("read on a cut connection: %v, want the closed socket's error", err)
	}
	if !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read on a cut connection: %v, want net.ErrClosed", err)
	}
}

// Reset closes the sockets as the network would: the connection stays
// tracked until its owner closes it, reads fail with the socket's error,
// and new dials work.
func TestReset(t *testing.T) {
	addr := listen(t)
	s := New(Options{Refused: errRefused, CutErr: errCut})
	c := dial(t, s, addr)
	if n := s.Reset(); n != 1 {
		t.Fatalf("Reset() = %d, want 1", n)
	}
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, errCut) {
		t.Fatalf("read after Reset: %v, want the socket's error", err)
	}
	_ = c.Close()
	dial(t, s, addr)
	if n := s.Open(); n != 1 {
		t.Fatalf("Open() = %d, want 1", n)
	}
}
