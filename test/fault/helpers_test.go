package fault

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/kafkaproc"
	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/internal/testkit"
	"github.com/kavari-go/kavari/test/fault/faultmsg"
	"github.com/kavari-go/kavari/test/fault/ledger"
)

// long reports whether the bigger variants run (KAVARI_LONG=1).
func long() bool { return os.Getenv("KAVARI_LONG") == "1" }

// testLogger is quiet unless KAVARI_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("KAVARI_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// requireLauncher skips t unless it may start its own Kafka nodes: a real
// broker is configured (testenv.RequireReal) and the jars of a fetched Kafka
// are known (KAVARI_KAFKA_LIB, exported by scripts/test.sh). With CI=true a
// missing launcher fails the test.
func requireLauncher(t *testing.T) {
	t.Helper()
	testenv.RequireReal(t)
	if os.Getenv(kafkaproc.EnvLib) == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but %s is not set: run through scripts/test.sh", kafkaproc.EnvLib)
		}
		t.Skipf("%s is not set: this test starts its own Kafka nodes; run through scripts/test.sh", kafkaproc.EnvLib)
	}
}

// parallelOwnCluster marks a test that starts Kafka nodes of its own (and
// uses no broker shared with the others) as parallel: such tests mostly
// wait (for faults to heal, sessions to expire, nodes to start), so two at
// a time (go test's -parallel, GOMAXPROCS by default) take about half the
// time. They run after the package's other tests.
func parallelOwnCluster(t *testing.T) {
	t.Helper()
	requireLauncher(t)
	t.Parallel()
}

// ownCluster starts a Kafka cluster of nodes nodes for t alone (it may be
// killed at will) and stops it when t ends.
func ownCluster(t *testing.T, nodes int) *kafkaproc.Cluster {
	t.Helper()
	return ownClusterWith(t, kafkaproc.Options{Nodes: nodes})
}

// ownProxiedCluster is ownCluster with a fault proxy in front of every
// node: clients given c.ProxiedBrokers() reach the cluster only through
// c.Proxy(i), which can cut, reset, refuse or slow their connections;
// c.Brokers() stays direct (for checkers and publishers not under test).
func ownProxiedCluster(t *testing.T, nodes int) *kafkaproc.Cluster {
	t.Helper()
	return ownClusterWith(t, kafkaproc.Options{Nodes: nodes, Proxy: true})
}

// ownClusterWith starts a cluster with opts (Dir and Logf are set here)
// for t alone and stops it when t ends.
func ownClusterWith(t *testing.T, opts kafkaproc.Options) *kafkaproc.Cluster {
	t.Helper()
	requireLauncher(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	begin := time.Now()
	opts.Dir, opts.Logf = t.TempDir(), t.Logf
	nodes := max(opts.Nodes, 1)
	c, err := kafkaproc.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Logf("stopping own cluster: %v", err)
		}
	})
	t.Logf("own %d-node Kafka %s ready in %s: %v", nodes, c.Version(), time.Since(begin).Round(time.Millisecond), c.Brokers())
	return c
}

// baseConfig is the consumer/publisher configuration of the in-process tests:
// fast heartbeats and commits, quiet logs.
func baseConfig(brokers []string, reg *kavari.Registry) kavari.Config {
	return kavari.Config{
		Brokers:   brokers,
		Transport: testkit.Transport(),
		Registry:  reg,
		Logger:    testLogger(),
		Publish: kavari.PublishConfig{
			Retry: kavari.FibonacciRetry(50*time.Millisecond, 10),
		},
		Consume: kavari.ConsumeConfig{
			GroupID:           testenv.ID("fault"),
			CommitInterval:    200 * time.Millisecond,
			HeartbeatInterval: 500 * time.Millisecond,
			SessionTimeout:    6 * time.Second,
			RebalanceTimeout:  15 * time.Second,
			DrainTimeout:      5 * time.Second,
			Retry:             kavari.FibonacciRetry(20*time.Millisecond, 3),
		},
	}
}

// newKavari builds a Client from cfg, creates its topics and stops it (with a
// generous deadline) when t ends.
func newKavari(t *testing.T, cfg kavari.Config) *kavari.Client {
	t.Helper()
	k, err := kavari.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := k.EnsureTopics(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_ = k.Stop(ctx)
	})
	return k
}

// publisher returns a Client that only publishes msgs' types (declared, no
// handler) after creating their topics with the given partitions.
func publisher(t *testing.T, brokers []string, partitions int, msgs ...kavari.Msg) *kavari.Client {
	t.Helper()
	reg := kavari.NewRegistry()
	for _, m := range msgs {
		if err := reg.Declare(m); err != nil {
			t.Fatal(err)
		}
	}
	cfg := baseConfig(brokers, reg)
	cfg.Topics.Partitions = partitions
	return newKavari(t, cfg)
}

// handle records a handled message of the in-process tests in led.
func handle(ctx context.Context, led *ledger.Ledger, run string, b *faultmsg.Body) {
	if b.Run != run {
		return
	}
	h := ledger.Handle{ID: b.ID, Key: b.Key, Seq: b.Seq, At: time.Now(), Proc: "in-process"}
	if rec, ok := kavari.RecordFromContext(ctx); ok {
		h.Topic, h.Partition, h.Offset = rec.Topic, rec.Partition, rec.Offset
	}
	led.Handled(h)
}

// msgID, msgKey and msgSeq lay n messages over keys: message i has key
// i % keys and is the (i / keys)th of its key.
func msgID(i int) string        { return fmt.Sprintf("m%06d", i) }
func msgKey(i, keys int) string { return fmt.Sprintf("k%03d", i%keys) }
func msgSeq(i, keys int) int    { return i / keys }

// plan says what to publish.
type plan struct {
	from, to int           // message numbers [from, to)
	keys     int           // number of keys
	workers  int           // goroutines; each owns the keys k with k % workers == w
	batch    int           // messages per PublishBatch (1: Publish)
	pace     time.Duration // pause of each worker after each call
	body     func(b *faultmsg.Body)
}

// publishAll publishes p's messages built by mk with k, recording them in
// led. Messages of one key are published one after another, so their Seq
// order is their order in the log. It returns when every call returned or ctx
// ended; onAck runs after each acknowledged message (may be nil).
func publishAll(ctx context.Context, k *kavari.Client, led *ledger.Ledger, run string, mk func(faultmsg.Body) kavari.Msg, p plan, onAck func()) {
	if p.workers <= 0 {
		p.workers = 1
	}
	if p.batch <= 0 {
		p.batch = 1
	}
	var wg sync.WaitGroup
	for w := 0; w < p.workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var msgs []kavari.Msg
			var ids []string
			flush := func() {
				if len(msgs) == 0 {
					return
				}
				var err error
				if len(msgs) == 1 {
					_, err = k.Publish(ctx, msgs[0])
					led.Published(ids[0], err)
				} else {
					_, err = k.PublishBatch(ctx, msgs...)
					failed := map[int]error{}
					for _, e := range unjoin(err) {
						var pe *kavari.PublishError
						if errors.As(e, &pe) {
							failed[pe.Index] = pe
						} else {
							for i := range msgs {
								failed[i] = e
							}
						}
					}
					for i, id := range ids {
						// nil: acknowledged; a *PublishError says whether it
						// may have been written (the ledger's stuck count).
						led.Published(id, failed[i])
					}
				}
				if onAck != nil {
					for _, id := range ids {
						if led.IsAcked(id) {
							onAck()
						}
					}
				}
				msgs, ids = msgs[:0], ids[:0]
				if p.pace > 0 {
					select {
					case <-ctx.Done():
					case <-time.After(p.pace):
					}
				}
			}
			for i := p.from; i < p.to; i++ {
				if (i%p.keys)%p.workers != w {
					continue
				}
				if ctx.Err() != nil {
					return
				}
				b := faultmsg.Body{Run: run, ID: msgID(i), Key: msgKey(i, p.keys), Seq: msgSeq(i, p.keys)}
				if p.body != nil {
					p.body(&b)
				}
				led.Sent(b.ID, b.Key, b.Seq)
				msgs = append(msgs, mk(b))
				ids = append(ids, b.ID)
				if len(msgs) >= p.batch {
					flush()
				}
			}
			flush()
		}()
	}
	wg.Wait()
}

// unjoin returns the errors joined in err (err itself when not joined).
func unjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// knownBug reports a library bug found by t: it is recorded in the ledger
// row (so the reliability report shows it) and fails the test.
func knownBug(t *testing.T, led *ledger.Ledger, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	led.Bug("%s", msg)
	t.Errorf("BUG: %s", msg)
}

// waitFor polls cond until it holds or timeout passes (a hang guard, not a
// performance assertion).
// transportName is tr as KAVARI_TRANSPORT and the ledger name it.
func transportName(tr kavari.Transport) string {
	if tr == kavari.FranzGo {
		return "franz-go"
	}
	return "kafka-go"
}

// ownTransports skips a test that runs on each transport by itself (or on
// one it names) in every pass but the kafka-go one, where it runs once:
// the suite runs once per KAVARI_TRANSPORT, and the franz-go pass would
// repeat it.
func ownTransports(t *testing.T) {
	if tr := testenv.Transport(); tr != "kafka-go" {
		t.Skipf("chooses its transports itself; runs in the kafka-go pass (this is %s)", tr)
	}
}

// inPassOf skips a test that runs on transport tr only in every pass but
// tr's: the two passes of the test command run side by side, and each is as
// long as its test/fault, so a test bound to one transport goes to that
// transport's pass.
func inPassOf(t *testing.T, tr string) {
	if pass := testenv.Transport(); pass != tr {
		t.Skipf("runs on %s only, in the %s pass (this is %s)", tr, tr, pass)
	}
}

func waitFor(t *testing.T, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: "+format, append([]any{timeout}, args...)...)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ---- the consumer process (faultapp) ----

// buildFaultApp builds test/fault/faultapp into a temporary directory of t.
func buildFaultApp(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "faultapp")
	begin := time.Now()
	cmd := exec.Command("go", "build", "-o", bin, "./faultapp")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./faultapp: %v\n%s", err, out)
	}
	t.Logf("built faultapp in %s", time.Since(begin).Round(time.Millisecond))
	return bin
}

// appEvent is one line printed by faultapp.
type appEvent struct {
	Ev         string           `json:"ev"`
	ID         string           `json:"id"`
	Key        string           `json:"key"`
	Seq        int              `json:"seq"`
	Pid        int              `json:"pid"`
	Topic      string           `json:"topic"`
	Partition  int              `json:"partition"`
	Offset     int64            `json:"offset"`
	Attempt    int              `json:"attempt"`
	TS         int64            `json:"ts"`
	Connected  bool             `json:"connected"`
	Generation int              `json:"generation"`
	Assigned   map[string][]int `json:"assigned"`
	Err        string           `json:"err"`
	Ms         int64            `json:"ms"`
}

// app is one running faultapp process.
type app struct {
	t       *testing.T
	name    string
	cmd     *exec.Cmd
	pid     int
	begin   time.Time
	done    chan struct{} // closed once the process exited and its output was read
	exitErr error
	stderr  *tail

	mu         sync.Mutex
	connected  bool
	generation int
	assigned   map[string][]int
	started    map[string]appEvent // ids whose handler started (-trace-start)
	finished   map[string]bool     // ids handled by this process
	firstDone  time.Time
	stopped    *appEvent
	nDone      int
}

// startApp starts faultapp bin with args; every "done" line goes to led.
func startApp(t *testing.T, bin, name string, led *ledger.Ledger, args ...string) *app {
	t.Helper()
	a := &app{t: t, name: name, begin: time.Now(), done: make(chan struct{}), stderr: &tail{max: 32 << 10},
		started: map[string]appEvent{}, finished: map[string]bool{}}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	a.cmd = exec.Command(bin, args...)
	a.cmd.Stdout = w
	a.cmd.Stderr = a.stderr
	// Tied to this test process: a crashed test leaves no consumer behind.
	waited, err := kafkaproc.StartTied(a.cmd, syscall.SIGKILL)
	w.Close()
	if err != nil {
		r.Close()
		t.Fatalf("starting %s: %v", name, err)
	}
	a.pid = a.cmd.Process.Pid
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var ev appEvent
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				a.stderr.Write(append([]byte("stdout: "), sc.Bytes()...))
				continue
			}
			a.event(led, ev)
		}
		r.Close()
		a.exitErr = <-waited
		close(a.done)
	}()
	t.Cleanup(func() {
		select {
		case <-a.done:
		default:
			if t.Failed() {
				// Still running when the test failed: where its
				// goroutines wait says why (the Go runtime prints
				// them on SIGQUIT, then exits).
				a.stderr.grow(1 << 20)
				_ = a.cmd.Process.Signal(syscall.SIGQUIT)
				select {
				case <-a.done:
				case <-time.After(10 * time.Second):
				}
			}
			_ = a.cmd.Process.Signal(syscall.SIGKILL)
			<-a.done
		}
		if t.Failed() {
			t.Logf("%s (pid %d) stderr tail:\n%s", a.name, a.pid, a.stderr.String())
		}
	})
	return a
}

func (a *app) event(led *ledger.Ledger, ev appEvent) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch ev.Ev {
	case "done":
		at := time.Unix(0, ev.TS)
		a.finished[ev.ID] = true
		a.nDone++
		if a.firstDone.IsZero() {
			a.firstDone = at
		}
		led.Handled(ledger.Handle{ID: ev.ID, Key: ev.Key, Seq: ev.Seq, At: at, Proc: fmt.Sprintf("%s pid %d", a.name, ev.Pid),
			Topic: ev.Topic, Partition: ev.Partition, Offset: ev.Offset})
	case "start":
		a.started[ev.ID] = ev
	case "health":
		a.connected, a.generation, a.assigned = ev.Connected, ev.Generation, ev.Assigned
	case "stopped":
		e := ev
		a.stopped = &e
	}
}

// joined reports whether the process is a member of a generation and holds
// at least one partition.
func (a *app) joined() bool {
	a.mu.Lock()
	connected := a.connected
	a.mu.Unlock()
	return connected && a.nPartitions() > 0
}

// nPartitions returns how many partitions the process last reported.
func (a *app) nPartitions() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, ps := range a.assigned {
		n += len(ps)
	}
	return n
}

// assignment returns the partitions the process last reported, sorted.
func (a *app) assignment() map[string][]int {
	a.mu.Lock()
	defer a.mu.Unlock()
	m := make(map[string][]int, len(a.assigned))
	for tp, ps := range a.assigned {
		m[tp] = slices.Sorted(slices.Values(ps))
	}
	return m
}

// gen returns the group generation the process last reported.
func (a *app) gen() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.generation
}

// kill SIGKILLs the process and waits for it.
func (a *app) kill() {
	a.t.Helper()
	_ = a.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-a.done:
	case <-time.After(30 * time.Second):
		a.t.Fatalf("%s did not die after SIGKILL", a.name)
	}
}

// term sends SIGTERM (faultapp calls k.Stop) and waits up to guard for the
// process to exit. It returns the stopped event (nil if none was printed)
// and the exit error.
func (a *app) term(guard time.Duration) (*appEvent, error) {
	a.t.Helper()
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(guard):
		a.t.Errorf("%s (pid %d) still running %s after SIGTERM; killing it", a.name, a.pid, guard)
		a.kill()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stopped, a.exitErr
}

// handledIDs returns the ids this process handled.
func (a *app) handledIDs() map[string]bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]bool, len(a.finished))
	for id := range a.finished {
		out[id] = true
	}
	return out
}

// tail keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append([]byte(nil), t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

// grow keeps the last n bytes written from now on, if more than it
// keeps now.
func (t *tail) grow(n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.max = max(t.max, n)
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// appArgs returns the common faultapp flags.
func appArgs(brokers []string, group, run, scenario string, extra ...string) []string {
	return append([]string{"-brokers", strings.Join(brokers, ","), "-group", group, "-run", run, "-scenario", scenario}, extra...)
}

// ---- admin clients ----

// newClient returns a kafka-go client with a transport of its own, and a
// function closing it. Not kafka.DefaultTransport: a transport serves
// metadata from a cache refreshed every few seconds, so one shared across
// tests does not know a topic created a moment ago (and kafka-go's Writer
// fails at once with UnknownTopicOrPartition).
func newClient(brokers []string, timeout time.Duration) (*kafka.Client, func()) {
	tr := &kafka.Transport{}
	return &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: timeout, Transport: tr}, tr.CloseIdleConnections
}

// ---- committed offsets ----

// commitWatch polls a group's committed offsets from the broker and checks
// that no partition's offset ever moves backwards.
type commitWatch struct {
	mu          sync.Mutex
	last        map[string]map[int]int64
	polls       int
	failures    int
	regressions []string
	stop        context.CancelFunc
	done        chan struct{}
}

// watchCommits polls group's committed offsets of topics (name -> partition
// count) every interval until the returned watch is stopped.
func watchCommits(brokers []string, group string, topics map[string]int, interval time.Duration) *commitWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &commitWatch{last: map[string]map[int]int64{}, stop: cancel, done: make(chan struct{})}
	req := &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{}}
	for topic, n := range topics {
		for p := 0; p < n; p++ {
			req.Topics[topic] = append(req.Topics[topic], p)
		}
	}
	client, closeClient := newClient(brokers, 5*time.Second)
	go func() {
		defer close(w.done)
		defer closeClient()
		for {
			w.poll(ctx, client, req)
			select {
			case <-ctx.Done():
				return
			case <-time.After(interval):
			}
		}
	}()
	return w
}

func (w *commitWatch) poll(ctx context.Context, client *kafka.Client, req *kafka.OffsetFetchRequest) {
	resp, err := client.OffsetFetch(ctx, req)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err == nil {
		err = resp.Error
	}
	if err != nil {
		w.failures++
		return
	}
	w.polls++
	for topic, ps := range resp.Topics {
		if w.last[topic] == nil {
			w.last[topic] = map[int]int64{}
		}
		for _, p := range ps {
			if p.Error != nil {
				continue
			}
			prev, seen := w.last[topic][p.Partition]
			if seen && prev >= 0 && p.CommittedOffset < prev {
				w.regressions = append(w.regressions, fmt.Sprintf("%s/%d: %d -> %d at %s", topic, p.Partition, prev, p.CommittedOffset, time.Now().Format("15:04:05.000")))
			}
			if !seen || p.CommittedOffset > prev {
				w.last[topic][p.Partition] = p.CommittedOffset
			}
		}
	}
}

// finish stops polling and returns the number of successful polls, failed
// polls and the regressions seen.
func (w *commitWatch) finish() (polls, failures int, regressions []string) {
	w.stop()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.polls, w.failures, append([]string(nil), w.regressions...)
}

// committedNow reads group's committed offsets of topic's partitions once.
func committedNow(t *testing.T, brokers []string, group, topic string, partitions int) map[int]int64 {
	t.Helper()
	client, closeClient := newClient(brokers, 10*time.Second)
	defer closeClient()
	req := &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: {}}}
	for p := 0; p < partitions; p++ {
		req.Topics[topic] = append(req.Topics[topic], p)
	}
	var lastErr error
	for attempt := 0; attempt < 50; attempt++ {
		resp, err := client.OffsetFetch(context.Background(), req)
		if err == nil {
			err = resp.Error
		}
		if err == nil {
			out := map[int]int64{}
			for _, p := range resp.Topics[topic] {
				out[p.Partition] = p.CommittedOffset
			}
			return out
		}
		lastErr = err
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("OffsetFetch %s: %v", group, lastErr)
	return nil
}

// partitionsOf returns the partition count of topic.
func partitionsOf(t *testing.T, brokers []string, topic string) int {
	t.Helper()
	client, closeClient := newClient(brokers, 10*time.Second)
	defer closeClient()
	md, err := client.Metadata(context.Background(), &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tp := range md.Topics {
		if tp.Name == topic && tp.Error == nil {
			return len(tp.Partitions)
		}
	}
	t.Fatalf("topic %s not found", topic)
	return 0
}
