package testenv

import (
	"net"
	"testing"
	"time"
)

// The embedded broker runs in a child process: it listens on the addresses
// it reports (one per node), and Close stops it, so that a test of a broker
// going away sees its connections refused.
func TestEmbeddedListensUntilClosed(t *testing.T) {
	b, err := StartEmbedded(Nodes(2), Topics("t1", "t2"), Partitions(1))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if len(b.Addrs()) != 2 {
		t.Fatalf("Addrs() = %v, want one address per node (2)", b.Addrs())
	}
	for _, a := range b.Addrs() {
		c, err := net.DialTimeout("tcp", a, 10*time.Second)
		if err != nil {
			t.Fatalf("dial %s: %v", a, err)
		}
		c.Close()
	}
	b.Close()
	for _, a := range b.Addrs() {
		if c, err := net.DialTimeout("tcp", a, 10*time.Second); err == nil {
			c.Close()
			t.Errorf("dial %s after Close: connected, want refused", a)
		}
	}
	b.Close() // a second Close does nothing
}
