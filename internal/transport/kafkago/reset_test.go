package kafkago

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/internal/transport"
	"github.com/kavari-go/kavari/internal/transport/conntrack"
)

// genRecorder is a GroupHandler that keeps the generations it was given and
// counts revokes and losses.
type genRecorder struct {
	mu       sync.Mutex
	gens     []transport.Generation
	revokes  int
	losses   int
	onRevoke func(transport.Generation)
}

func (r *genRecorder) Assigned(g transport.Generation, _ []transport.Assignment) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gens = append(r.gens, g)
}

func (r *genRecorder) Revoked(g transport.Generation, _ []transport.TopicPartition) {
	r.mu.Lock()
	r.revokes++
	fn := r.onRevoke
	r.mu.Unlock()
	if fn != nil {
		fn(g)
	}
}

func (r *genRecorder) Lost(transport.Generation, []transport.TopicPartition) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.losses++
}

func (r *genRecorder) Records(transport.TopicPartition, []*transport.Record, int64) {}
func (r *genRecorder) Error(error)                                                  {}

func (r *genRecorder) state() (gens []transport.Generation, revokes, losses int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]transport.Generation(nil), r.gens...), r.revokes, r.losses
}

// resetConns breaks every connection the consumer has open, as a reset by
// the network would: the sockets are closed under kafka-go, which sees
// every later read and write on them fail. New connections work.
func resetConns(s *conntrack.Set) int { return s.Reset() }

func committed(t *testing.T, brokers []string, group, topic string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl := &kafka.Client{Addr: kafka.TCP(brokers...)}
	res, err := cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: {0}}})
	if err != nil {
		t.Fatalf("OffsetFetch: %v", err)
	}
	for _, p := range res.Topics[topic] {
		if p.Partition == 0 {
			return p.CommittedOffset
		}
	}
	return -1
}

// A connection reset inside the session costs at most a retried commit: the
// member keeps its generation (no revoke, no new generation) and a commit
// made after the reset, in that generation, is applied. kafka-go's
// Generation commits and heartbeats on one coordinator connection that it
// never dials again, so before the fix the commit failed on the dead
// connection and the first heartbeat after the reset ended the generation.
func TestConnectionResetKeepsGeneration(t *testing.T) {
	const topic, group = "kg-reset", "kg-reset-g"
	b := testenv.NewEmbedded(t, testenv.Partitions(1), testenv.Topics(topic))
	cfg := transport.Config{Brokers: b.Addrs(), ClientID: "test", GroupID: group, Topics: []string{topic},
		SessionTimeout: 10 * time.Second, RebalanceTimeout: 10 * time.Second, HeartbeatInterval: 500 * time.Millisecond}
	tc, err := Adapter{}.NewConsumer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := tc.(*Consumer)
	h := &genRecorder{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runDone := make(chan struct{})
	go func() { _ = c.Run(ctx, h); close(runDone) }()
	defer func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer ccancel()
		_ = c.Close(cctx)
		<-runDone
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if gens, _, _ := h.state(); len(gens) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no generation after 30 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	gens, _, _ := h.state()
	gen := gens[0]
	// Let a heartbeat or two pass on the fresh connections, then reset.
	time.Sleep(time.Second)
	n := resetConns(c.conns)
	t.Logf("reset %d connections", n)

	cctx, ccancel := context.WithTimeout(context.Background(), 8*time.Second)
	err = c.Commit(cctx, gen, []transport.Offset{{TopicPartition: transport.TopicPartition{Topic: topic, Partition: 0}, Offset: 7}})
	ccancel()
	if err != nil {
		t.Errorf("commit in generation %d after a connection reset: %v", gen.ID, err)
	} else if got := committed(t, b.Addrs(), group, topic); got != 7 {
		t.Errorf("committed offset %d after the commit, want 7", got)
	}
	// Six heartbeat intervals: kafka-go's heartbeat loop would have failed
	// on the dead connection (and ended the generation) at the first.
	time.Sleep(6 * cfg.HeartbeatInterval)
	gens, revokes, losses := h.state()
	if revokes != 0 || losses != 0 || len(gens) != 1 {
		t.Errorf("after a connection reset inside the session: %d revokes, %d losses, generations %v; want the generation %d kept",
			revokes, losses, gens, gen.ID)
	}
}

// kafka-go v0.4.51 decodes a Heartbeat answer's error code (versions 1 to
// 4) into the low 16 bits of Throttle; heartbeatError reads it from there,
// and prefers Error should a later kafka-go decode it.
func TestHeartbeatErrorCode(t *testing.T) {
	for _, c := range []struct {
		res  kafka.HeartbeatResponse
		want error
	}{
		{kafka.HeartbeatResponse{}, nil},
		{kafka.HeartbeatResponse{Throttle: 27 * time.Millisecond}, kafka.RebalanceInProgress},
		{kafka.HeartbeatResponse{Throttle: (5<<16 + 25) * time.Millisecond}, kafka.UnknownMemberId},
		{kafka.HeartbeatResponse{Throttle: 0xffff * time.Millisecond}, kafka.Unknown},
		{kafka.HeartbeatResponse{Error: kafka.IllegalGeneration}, kafka.IllegalGeneration},
	} {
		if got := heartbeatError(&c.res); got != c.want {
			t.Errorf("heartbeatError(%+v) = %v, want %v", c.res, got, c.want)
		}
	}
}

// A coordinator gone for longer than the session timeout ends the
// generation: the member cannot have kept it, and the engine must learn
// that its partitions are revoked (the fault suite's broker restart waits
// for Health to say so).
func TestBrokerGoneEndsGeneration(t *testing.T) {
	const topic, group = "kg-gone", "kg-gone-g"
	b, err := testenv.StartEmbedded(testenv.Partitions(1), testenv.Topics(topic))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	cfg := transport.Config{Brokers: b.Addrs(), ClientID: "test", GroupID: group, Topics: []string{topic},
		SessionTimeout: 6 * time.Second, RebalanceTimeout: 10 * time.Second, HeartbeatInterval: 500 * time.Millisecond}
	tc, err := Adapter{}.NewConsumer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := tc.(*Consumer)
	h := &genRecorder{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runDone := make(chan struct{})
	go func() { _ = c.Run(ctx, h); close(runDone) }()
	defer func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer ccancel()
		_ = c.Close(cctx)
		<-runDone
	}()
	waitGen := func(cond func(gens []transport.Generation, revokes int) bool, within time.Duration, what string) {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			gens, revokes, _ := h.state()
			if cond(gens, revokes) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("after %v: %s (generations %v, %d revokes)", within, what, gens, revokes)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitGen(func(gens []transport.Generation, _ int) bool { return len(gens) > 0 }, 30*time.Second, "no generation")
	begin := time.Now()
	b.Close()
	// A generous bound (the session is 6 s): the revoke must come, not hang.
	waitGen(func(_ []transport.Generation, revokes int) bool { return revokes > 0 }, 30*time.Second, "no revoke with the broker gone")
	t.Logf("revoked %v after the broker went away", time.Since(begin).Round(time.Millisecond))
}
