package netfault

import (
	"bufio"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// echo starts a line echo server and returns its address.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

func proxy(t *testing.T) *Proxy {
	t.Helper()
	p, err := Listen(echo(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// roundTrip sends a line and reads it back, with a deadline.
func roundTrip(c net.Conn, r *bufio.Reader, line string, wait time.Duration) (string, error) {
	_ = c.SetDeadline(time.Now().Add(wait))
	if _, err := c.Write([]byte(line + "\n")); err != nil {
		return "", err
	}
	s, err := r.ReadString('\n')
	return s, err
}

func TestForwards(t *testing.T) {
	p := proxy(t)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if got, err := roundTrip(c, r, "hello", 5*time.Second); err != nil || got != "hello\n" {
		t.Fatalf("got %q, %v", got, err)
	}
}

// TestCutHoldsThenDelivers: nothing crosses during a cut, the connection
// stays open and what was sent arrives once the cut heals.
func TestCutHoldsThenDelivers(t *testing.T) {
	p := proxy(t)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	p.Cut(time.Second)
	if !p.Cutting() {
		t.Fatal("Cutting is false right after Cut")
	}
	if _, err := roundTrip(c, r, "held", 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("during the cut: want a timeout, got %v", err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	got, err := r.ReadString('\n')
	if err != nil || got != "held\n" {
		t.Fatalf("after the cut: got %q, %v", got, err)
	}
	if p.Cutting() {
		t.Fatal("Cutting is still true after the cut healed")
	}
}

func TestResetSendsRST(t *testing.T) {
	p := proxy(t)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if _, err := roundTrip(c, r, "a", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	p.Reset()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, err = r.ReadString('\n')
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("after Reset: want ECONNRESET, got %v", err)
	}
	// New connections work.
	c2, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if got, err := roundTrip(c2, bufio.NewReader(c2), "b", 5*time.Second); err != nil || got != "b\n" {
		t.Fatalf("new connection after Reset: %q, %v", got, err)
	}
}

func TestRefuseThenAccept(t *testing.T) {
	p := proxy(t)
	p.Refuse(time.Second)
	c, err := net.Dial("tcp", p.Addr())
	if err == nil {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
		c.Close()
	}
	if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("while refusing: want a reset, got %v", err)
	}
	time.Sleep(1100 * time.Millisecond)
	c, err = net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, err := roundTrip(c, bufio.NewReader(c), "x", 5*time.Second); err != nil || got != "x\n" {
		t.Fatalf("after refusing: %q, %v", got, err)
	}
}

func TestDelayHoldsTheTargetsBytes(t *testing.T) {
	p := proxy(t)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	p.Delay(700 * time.Millisecond)
	begin := time.Now()
	if got, err := roundTrip(c, r, "slow", 10*time.Second); err != nil || got != "slow\n" {
		t.Fatalf("got %q, %v", got, err)
	}
	// A lower bound only: a loaded machine may add, never remove, time.
	if el := time.Since(begin); el < 700*time.Millisecond {
		t.Fatalf("answer after %s, want at least the 700ms delay", el)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
