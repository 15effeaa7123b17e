package franz_test

import (
	"context"
	"net"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/internal/transport"
	"github.com/kavari-go/kavari/internal/transport/franz"
	"github.com/kavari-go/kavari/internal/transport/transporttest"
	"github.com/kavari-go/kavari/kavaritest"
)

func topic(t *testing.T, tr transport.Adapter, cfg transport.Config, partitions int) string {
	t.Helper()
	adm, err := tr.NewAdmin(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	name := testenv.ID("franz")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := adm.CreateTopics(ctx, partitions, -1, name); err != nil {
		t.Fatal(err)
	}
	return name
}

// joined runs a consumer until it owns n partitions.
func joined(t *testing.T, tr transport.Adapter, cfg transport.Config, n int) (transport.Consumer, *transporttest.Recorder, func() transport.Generation) {
	t.Helper()
	c, err := tr.NewConsumer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := transporttest.NewRecorder()
	var gen transport.Generation
	assigned := make(chan struct{}, 16)
	rec := &genRecorder{Recorder: h, onAssigned: func(g transport.Generation, parts []transport.Assignment) {
		gen = g
		assigned <- struct{}{}
	}}
	done := make(chan error, 1)
	go func() { done <- c.Run(context.Background(), rec) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = c.Close(ctx)
		<-done
	})
	got := 0
	for got < n {
		select {
		case <-assigned:
			got = len(rec.assignments)
		case <-time.After(60 * time.Second):
			t.Fatalf("no assignment of %d partitions", n)
		}
	}
	return c, h, func() transport.Generation { return gen }
}

type genRecorder struct {
	*transporttest.Recorder
	onAssigned  func(transport.Generation, []transport.Assignment)
	assignments []transport.Assignment
}

func (g *genRecorder) Assigned(gen transport.Generation, parts []transport.Assignment) {
	g.Recorder.Assigned(gen, parts)
	g.assignments = append(g.assignments, parts...)
	g.onAssigned(gen, parts)
}

// TestCommitNeverBackwards: a commit below the last one committed for the
// partition is not sent; one at the same offset with new metadata is.
func TestCommitNeverBackwards(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	tr := franz.New()
	cfg := transporttest.Config(brokers)
	cfg.Topics = []string{topic(t, tr, cfg, 1)}
	cfg.GroupID = testenv.ID("franz-g")
	tp := transport.TopicPartition{Topic: cfg.Topics[0], Partition: 0}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Offsets 0..5 exist: a committed offset past the log's end would be
	// moved to its start when the next member joins.
	p, err := tr.NewProducer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		if errs := p.Produce(ctx, []*transport.Record{{Topic: tp.Topic, Partition: 0, Value: []byte{byte(i)}}}); errs != nil {
			t.Fatalf("Produce: %v", errs)
		}
	}
	p.Close()

	c, _, gen := joined(t, tr, cfg, 1)
	for _, o := range []transport.Offset{
		{TopicPartition: tp, Offset: 5, Metadata: "a"},
		{TopicPartition: tp, Offset: 3, Metadata: "b"}, // backwards: not sent
		{TopicPartition: tp, Offset: 5, Metadata: "c"}, // same offset, new metadata: sent
		{TopicPartition: tp, Offset: 4, Metadata: "d"}, // backwards: not sent
	} {
		if err := c.Commit(ctx, gen(), []transport.Offset{o}); err != nil {
			t.Fatalf("Commit(%+v): %v", o, err)
		}
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}

	// The next member finds offset 5 with metadata "c".
	var got []transport.Assignment
	c2, err := tr.NewConsumer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	assigned := make(chan []transport.Assignment, 1)
	go func() {
		_ = c2.Run(ctx, &genRecorder{Recorder: transporttest.NewRecorder(), onAssigned: func(_ transport.Generation, parts []transport.Assignment) { assigned <- parts }})
	}()
	defer c2.Close(ctx)
	select {
	case got = <-assigned:
	case <-ctx.Done():
		t.Fatal("no assignment")
	}
	if len(got) != 1 || got[0].Offset != 5 || got[0].Metadata != "c" {
		t.Fatalf("committed %+v, want offset 5 metadata c", got)
	}
}

// TestCommitBeforeRun: Commit without a group membership fails.
func TestCommitBeforeRun(t *testing.T) {
	tr := franz.New()
	cfg := transporttest.Config([]string{"127.0.0.1:1"})
	cfg.GroupID, cfg.Topics = "g", []string{"t"}
	c, err := tr.NewConsumer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Commit(context.Background(), transport.Generation{ID: 1, MemberID: "m"}, []transport.Offset{{Offset: 1}}); err == nil {
		t.Fatal("Commit before Run succeeded")
	}
	if err := c.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestProduceLatency reports the latency of synchronous one-record produces
// from one caller (a figure, not an assertion).
func TestProduceLatency(t *testing.T) {
	brokers, kind := testenv.Brokers(t)
	tr := franz.New()
	cfg := transporttest.Config(brokers)
	name := topic(t, tr, cfg, 1)
	p, err := tr.NewProducer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	const n = 2000
	lat := make([]time.Duration, 0, n)
	for i := range n + 100 {
		r := &transport.Record{Topic: name, Key: []byte("k"), Value: []byte(`{"order_id":"o-1","amount":10}`)}
		start := time.Now()
		if errs := p.Produce(ctx, []*transport.Record{r}); errs != nil {
			t.Fatal(errs)
		}
		if i >= 100 { // warmed up
			lat = append(lat, time.Since(start))
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	t.Logf("%s broker: sync produce of one record, one caller, %d produces: p50 %v, p90 %v, p99 %v, max %v",
		kind, n, lat[n/2], lat[n*9/10], lat[n*99/100], lat[n-1])
}

// errHandler records what a consumer reports to Error.
type errHandler struct {
	mu   sync.Mutex
	errs []error
}

func (r *errHandler) Assigned(transport.Generation, []transport.Assignment)        {}
func (r *errHandler) Revoked(transport.Generation, []transport.TopicPartition)     {}
func (r *errHandler) Lost(transport.Generation, []transport.TopicPartition)        {}
func (r *errHandler) Records(transport.TopicPartition, []*transport.Record, int64) {}
func (r *errHandler) Error(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, err)
}

func (r *errHandler) first() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.errs) == 0 {
		return nil
	}
	return r.errs[0]
}

// TestConsumerReportsAnUnreachableBroker: a consumer that cannot reach any
// broker says why through Error (for Health.LastError). kgo only logs a
// failed metadata load and joins the group only after one succeeded, so
// nothing reached Error before.
func TestConsumerReportsAnUnreachableBroker(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c, err := franz.New().NewConsumer(transport.Config{Brokers: []string{addr}, GroupID: "g", Topics: []string{"t"}})
	if err != nil {
		t.Fatal(err)
	}
	h := &errHandler{}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- c.Run(ctx, h) }()
	deadline := time.Now().Add(60 * time.Second)
	for h.first() == nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-ran; err != nil {
		t.Errorf("Run: %v", err)
	}
	if err := c.Close(context.Background()); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := h.first(); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("Error reported %v, want the refused connection (hang guard 60 s)", err)
	}
}

// TestCloseDuringHeldJoin: Close while the coordinator holds the member's
// JoinGroup (as it may, up to the rebalance timeout) returns well before
// its deadline, without an error, and Run returns. kgo's leave waits for
// the join, so Close waited until its deadline (issue 10); now it cuts the
// connection that carries the join after a grace of twice the heartbeat.
func TestCloseDuringHeldJoin(t *testing.T) {
	b := kavaritest.NewBroker(t, kavaritest.Topics("franz-held-join"))
	inJoin := make(chan struct{})
	release := make(chan struct{})
	defer close(release)
	var once sync.Once
	b.Cluster().ControlKey(int16(kmsg.JoinGroup), func(kmsg.Request) (kmsg.Response, error, bool) {
		b.Cluster().KeepControl()
		once.Do(func() {
			close(inJoin)
			b.Cluster().SleepControl(func() { <-release })
		})
		return nil, nil, false
	})
	cfg := transporttest.Config(b.Addrs())
	cfg.GroupID, cfg.Topics = testenv.ID("franz-g"), []string{"franz-held-join"}
	cfg.HeartbeatInterval = 500 * time.Millisecond
	c, err := franz.New().NewConsumer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() { ran <- c.Run(context.Background(), transporttest.NewRecorder()) }()
	select {
	case <-inJoin:
	case <-time.After(30 * time.Second):
		t.Fatal("no JoinGroup")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	closed := make(chan error, 1)
	go func() { closed <- c.Close(ctx) }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("Close waited for the held JoinGroup until its deadline")
	}
	select {
	case err := <-ran:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after Close")
	}
}
