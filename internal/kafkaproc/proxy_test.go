package kafkaproc

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// TestKafkaprocProxy starts a node behind a fault proxy: a client that
// bootstraps through the proxy is sent back to the proxy by the metadata,
// so a cut of the proxy cuts it off, while the direct address keeps
// working.
func TestKafkaprocProxy(t *testing.T) {
	requireKafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := Start(ctx, Options{Nodes: 1, Dir: t.TempDir(), Proxy: true, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	proxied := c.ProxiedBrokers()
	if len(proxied) != 1 || proxied[0] == c.Brokers()[0] || c.Proxy(0) == nil {
		t.Fatalf("ProxiedBrokers %v, Brokers %v, Proxy(0) %v", proxied, c.Brokers(), c.Proxy(0))
	}
	// The metadata asked through the proxy names the proxy.
	conn, err := kafka.DialContext(ctx, "tcp", proxied[0])
	if err != nil {
		t.Fatal(err)
	}
	brokers, err := conn.Brokers()
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(brokers) != 1 || net.JoinHostPort(brokers[0].Host, strconv.Itoa(brokers[0].Port)) != proxied[0] {
		t.Fatalf("metadata through the proxy lists %+v, want %s", brokers, proxied[0])
	}
	// And through the direct address, the direct address.
	conn, err = kafka.DialContext(ctx, "tcp", c.Brokers()[0])
	if err != nil {
		t.Fatal(err)
	}
	brokers, err = conn.Brokers()
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(brokers) != 1 || net.JoinHostPort(brokers[0].Host, strconv.Itoa(brokers[0].Port)) != c.Brokers()[0] {
		t.Fatalf("metadata through the direct address lists %+v, want %s", brokers, c.Brokers()[0])
	}

	const topic = "kafkaproc-proxy"
	produce(ctx, t, proxied, topic, "through")
	if got := consume(ctx, t, proxied, topic, 1); got[0] != "through" {
		t.Fatalf("consumed %q through the proxy", got[0])
	}
	before := c.Proxy(0).Accepted()
	// During a cut a proxied client gets no answer; a direct one does.
	c.Proxy(0).Cut(3 * time.Second)
	cctx, ccancel := context.WithTimeout(ctx, time.Second)
	_, err = kafka.DialContext(cctx, "tcp", proxied[0])
	if err == nil {
		// The connection is accepted; a request gets no answer.
		var cn *kafka.Conn
		cn, err = kafka.DialContext(ctx, "tcp", proxied[0])
		if err == nil {
			_ = cn.SetDeadline(time.Now().Add(time.Second))
			_, err = cn.Brokers()
			cn.Close()
		}
	}
	ccancel()
	if err == nil {
		t.Fatal("a request through a cut proxy was answered")
	}
	if c.Proxy(0).Accepted() == before {
		t.Fatal("the proxy accepted nothing: the client did not go through it")
	}
	produce(ctx, t, c.Brokers(), topic, "direct")
}
