package pgproc

import (
	"context"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestKillThenRestartWithClientsConnected kills a server whose backends
// serve open connections, then restarts it. PostgreSQL's backends are not
// in the postmaster's process group, so a kill of the group alone left
// them running, holding the shared memory, and the restart failed with
// "pre-existing shared memory block is still in use".
func TestKillThenRestartWithClientsConnected(t *testing.T) {
	ctx, srv, addr := startForTest(t, 2*time.Minute)
	for round := range 3 {
		for range 4 {
			c := connect(t, addr)
			defer c.Close()
		}
		srv.Kill()
		if err := srv.Restart(ctx); err != nil {
			t.Fatalf("round %d: Restart after Kill: %v", round, err)
		}
	}
}

// startForTest starts a server for t (skipped outside pgctl), stopped when
// t ends, and returns a context ending after d, and its address.
func startForTest(t *testing.T, d time.Duration) (context.Context, *Server, string) {
	t.Helper()
	home := os.Getenv(EnvHome)
	if home == "" {
		t.Skip("run through pgctl (scripts/test.sh), which exports " + EnvHome)
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	srv, err := Start(ctx, Options{Home: home})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return ctx, srv, net.JoinHostPort("127.0.0.1", strconv.Itoa(srv.Port))
}

// connect opens a connection that completed its startup, so a backend
// serves it until it is closed.
func connect(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := startup(c); err != nil {
		c.Close()
		t.Fatal(err)
	}
	return c
}

// TestKillWhileClientsConnect kills a server while clients keep
// connecting, then restarts it. A backend the postmaster forked after
// Kill listed its children was not killed: it ran on until it noticed the
// postmaster gone, holding the shared memory, and the restart failed with
// "pre-existing shared memory block is still in use".
func TestKillWhileClientsConnect(t *testing.T) {
	ctx, srv, addr := startForTest(t, 5*time.Minute)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
					_ = startup(c)
					c.Close()
				}
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	for round := range 50 {
		time.Sleep(20 * time.Millisecond) // clients connect meanwhile
		srv.Kill()
		if err := srv.Restart(ctx); err != nil {
			t.Fatalf("round %d: Restart after Kill: %v", round, err)
		}
	}
}
