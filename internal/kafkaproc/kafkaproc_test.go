package kafkaproc

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// requireKafka skips the test unless the jars of a fetched Kafka are known
// (KAVARI_KAFKA_LIB, exported by kafkactl run).
func requireKafka(t *testing.T) {
	t.Helper()
	if os.Getenv(EnvLib) == "" {
		t.Skipf("%s is not set: run `bash scripts/test.sh` (kafkactl run) to test against a real Kafka cluster", EnvLib)
	}
}

// TestCluster3NodeFailover starts its own 3-node cluster, writes to a
// replication-factor-3 topic, kills the partition leader's node, writes
// again, restarts the node and checks it rejoins the ISR.
func TestCluster3NodeFailover(t *testing.T) {
	requireKafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	begin := time.Now()
	c, err := Start(ctx, Options{Nodes: 3, Dir: t.TempDir(), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	t.Logf("3-node Kafka %s ready in %s: %v", c.Version(), time.Since(begin).Round(time.Millisecond), c.Brokers())
	if c.Len() != 3 || len(c.Brokers()) != 3 {
		t.Fatalf("Len=%d Brokers=%v, want 3", c.Len(), c.Brokers())
	}
	if want := os.Getenv(EnvVersion); want != "" && c.Version() != want {
		t.Errorf("Version() = %q, want %q", c.Version(), want)
	}

	const topic = "kafkaproc-failover"
	createTopic(ctx, t, c.Brokers()[0], kafka.TopicConfig{Topic: topic, NumPartitions: 1, ReplicationFactor: 3})
	part := waitPartition(ctx, t, c.Brokers(), topic, func(p kafka.Partition) bool {
		return p.Leader.ID > 0 && len(p.Replicas) == 3 && len(p.Isr) == 3
	})

	produce(ctx, t, c.Brokers(), topic, "before")
	if got := consume(ctx, t, c.Brokers(), topic, 1); got[0] != "before" {
		t.Fatalf("consumed %q, want %q", got[0], "before")
	}

	leader := c.Index(part.Leader.ID)
	if leader < 0 {
		t.Fatalf("leader id %d is not a node of the cluster", part.Leader.ID)
	}
	if err := c.Kill(leader); err != nil {
		t.Fatal(err)
	}
	if c.Running(leader) {
		t.Fatalf("node %d still running after Kill", leader)
	}
	var alive []string
	for i, b := range c.Brokers() {
		if i != leader {
			alive = append(alive, b)
		}
	}
	killedAt := time.Now()
	produce(ctx, t, alive, topic, "after")
	t.Logf("killed leader node %d; produce with acks=all succeeded %s later", part.Leader.ID, time.Since(killedAt).Round(time.Millisecond))
	moved := waitPartition(ctx, t, alive, topic, func(p kafka.Partition) bool {
		return p.Leader.ID > 0 && p.Leader.ID != part.Leader.ID
	})
	t.Logf("new leader: node %d, ISR %v", moved.Leader.ID, ids(moved.Isr))

	restartAt := time.Now()
	if err := c.Restart(leader); err != nil {
		t.Fatal(err)
	}
	t.Logf("node %d restarted in %s", part.Leader.ID, time.Since(restartAt).Round(time.Millisecond))
	if err := c.Restart(leader); err == nil {
		t.Error("Restart of a running node succeeded, want an error")
	}
	waitPartition(ctx, t, c.Brokers(), topic, func(p kafka.Partition) bool {
		for _, b := range p.Isr {
			if b.ID == part.Leader.ID {
				return true
			}
		}
		return false
	})

	got := consume(ctx, t, c.Brokers(), topic, 2)
	if strings.Join(got, ",") != "before,after" {
		t.Fatalf("consumed %v, want [before after]", got)
	}

	stopAt := time.Now()
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("stopped in %s", time.Since(stopAt).Round(time.Millisecond))
	for i := 0; i < c.Len(); i++ {
		if c.Running(i) {
			t.Errorf("node %d still running after Stop", i)
		}
	}
	if err := c.Stop(); err != nil { // idempotent
		t.Errorf("second Stop: %v", err)
	}
	if err := c.Restart(0); err == nil {
		t.Error("Restart after Stop succeeded, want an error")
	}
}

// TestKafkaprocSharedBroker checks the cluster exported by kafkactl run.
func TestKafkaprocSharedBroker(t *testing.T) {
	brokers := BrokersFromEnv()
	if len(brokers) == 0 {
		t.Skipf("%s is not set: run `bash scripts/test.sh` (kafkactl run) to test against a real Kafka cluster", EnvBrokers)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	topic := fmt.Sprintf("kafkaproc-shared-%d", time.Now().UnixNano())
	produce(ctx, t, brokers, topic, "hello") // auto-created
	if got := consume(ctx, t, brokers, topic, 1); got[0] != "hello" {
		t.Fatalf("consumed %q, want hello", got[0])
	}
}

func createTopic(ctx context.Context, t *testing.T, broker string, cfg kafka.TopicConfig) {
	t.Helper()
	conn, err := kafka.DialContext(ctx, "tcp", broker)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctrl, err := conn.Controller()
	if err != nil {
		t.Fatal(err)
	}
	cc, err := kafka.DialContext(ctx, "tcp", fmt.Sprintf("%s:%d", ctrl.Host, ctrl.Port))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if err := cc.CreateTopics(cfg); err != nil {
		t.Fatalf("CreateTopics: %v", err)
	}
}

// waitPartition polls metadata for partition 0 of topic until ok accepts it.
func waitPartition(ctx context.Context, t *testing.T, brokers []string, topic string, ok func(kafka.Partition) bool) kafka.Partition {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var last string
	for {
		for _, b := range brokers {
			conn, err := kafka.DialContext(ctx, "tcp", b)
			if err != nil {
				last = err.Error()
				continue
			}
			_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
			ps, err := conn.ReadPartitions(topic)
			conn.Close()
			if err != nil {
				last = err.Error()
				continue
			}
			for _, p := range ps {
				if p.ID == 0 {
					if ok(p) {
						return p
					}
					last = fmt.Sprintf("leader %d replicas %v isr %v", p.Leader.ID, ids(p.Replicas), ids(p.Isr))
				}
			}
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("partition %s/0 never reached the wanted state: %s", topic, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// produce writes one record with acks=all, retrying (with a fresh writer,
// hence fresh metadata) until it succeeds.
func produce(ctx context.Context, t *testing.T, brokers []string, topic, value string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var errs []string
	for {
		w := &kafka.Writer{
			Addr:                   kafka.TCP(brokers...),
			Topic:                  topic,
			RequiredAcks:           kafka.RequireAll,
			AllowAutoTopicCreation: true,
			MaxAttempts:            2,
			BatchTimeout:           time.Millisecond,
			WriteTimeout:           5 * time.Second,
		}
		err := w.WriteMessages(ctx, kafka.Message{Value: []byte(value)})
		w.Close()
		if err == nil {
			if len(errs) > 0 {
				t.Logf("produce %q: %d failed attempt(s) first, last: %s", value, len(errs), errs[len(errs)-1])
			}
			return
		}
		errs = append(errs, err.Error())
		select {
		case <-ctx.Done():
			t.Fatalf("produce %q never succeeded: %s", value, strings.Join(errs, " | "))
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// consume reads the first n records of partition 0 of topic.
func consume(ctx context.Context, t *testing.T, brokers []string, topic string, n int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	if err := r.SetOffset(kafka.FirstOffset); err != nil {
		t.Fatal(err)
	}
	var out []string
	for len(out) < n {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("reading %s after %d record(s): %v", topic, len(out), err)
		}
		out = append(out, string(m.Value))
	}
	return out
}

func ids(bs []kafka.Broker) []int {
	var out []int
	for _, b := range bs {
		out = append(out, b.ID)
	}
	return out
}

// The tests below need no Kafka.

func TestKafkaprocServerProps(t *testing.T) {
	c := &Cluster{opts: Options{ServerProps: map[string]string{"num.partitions": "4", "x.custom": "y"}}}
	for i := 0; i < 3; i++ {
		c.nodes = append(c.nodes, &node{id: i + 1, dir: fmt.Sprintf("/d/node-%d", i+1), brokerPort: 9000 + i, controllerPort: 9100 + i})
	}
	props := c.serverProps(c.nodes[1], "1@127.0.0.1:9100,2@127.0.0.1:9101,3@127.0.0.1:9102")
	for _, want := range []string{
		"process.roles=broker,controller\n",
		"node.id=2\n",
		"controller.quorum.voters=1@127.0.0.1:9100,2@127.0.0.1:9101,3@127.0.0.1:9102\n",
		"listeners=PLAINTEXT://127.0.0.1:9001,CONTROLLER://127.0.0.1:9101\n",
		"advertised.listeners=PLAINTEXT://127.0.0.1:9001\n",
		"default.replication.factor=3\n",
		"min.insync.replicas=2\n",
		"offsets.topic.replication.factor=3\n",
		"auto.create.topics.enable=true\n",
		"group.initial.rebalance.delay.ms=0\n",
		"num.partitions=4\n",
		"x.custom=y\n",
		"log.dirs=" + filepath.Join("/d/node-2", "data") + "\n",
	} {
		if !strings.Contains(props, want) {
			t.Errorf("server.properties lacks %q:\n%s", want, props)
		}
	}
	if strings.Count(props, "\nnum.partitions=") != 1 {
		t.Errorf("num.partitions set twice:\n%s", props)
	}
	if c.propValue("offsets.topic.num.partitions") != "10" {
		t.Errorf("propValue(offsets.topic.num.partitions) = %q", c.propValue("offsets.topic.num.partitions"))
	}

	one := &Cluster{nodes: []*node{{id: 1, dir: "/d/node-1"}}}
	props = one.serverProps(one.nodes[0], "1@127.0.0.1:1")
	for _, want := range []string{"offsets.topic.replication.factor=1\n", "transaction.state.log.replication.factor=1\n", "min.insync.replicas=1\n"} {
		if !strings.Contains(props, want) {
			t.Errorf("1-node server.properties lacks %q", want)
		}
	}
}

func TestKafkaprocClusterID(t *testing.T) {
	for i := 0; i < 200; i++ {
		id, err := newClusterID()
		if err != nil {
			t.Fatal(err)
		}
		b, err := base64.RawURLEncoding.DecodeString(id)
		if err != nil || len(b) != 16 || len(id) != 22 || id[0] == '-' {
			t.Fatalf("bad cluster id %q (%v)", id, err)
		}
	}
}

func TestKafkaprocGroupsCoveringPartitions(t *testing.T) {
	if h := javaStringHash("hello"); h != 99162322 { // "hello".hashCode() in Java
		t.Fatalf("javaStringHash(hello) = %d", h)
	}
	if h := javaStringHash("kafkaproc-warmup-group-with-a-long-name"); h >= 0 && h < 1000 {
		t.Logf("hash %d", h) // only checks that overflow does not panic
	}
	groups := groupsCoveringPartitions("g-", 10)
	for p, g := range groups {
		if g == "" || int((javaStringHash(g)&0x7fffffff)%10) != p {
			t.Errorf("partition %d: group %q", p, g)
		}
	}
}

func TestKafkaprocEnvAndErrors(t *testing.T) {
	t.Setenv(EnvBrokers, " 127.0.0.1:1, 127.0.0.1:2 ,,")
	if got := BrokersFromEnv(); strings.Join(got, ",") != "127.0.0.1:1,127.0.0.1:2" {
		t.Errorf("BrokersFromEnv() = %q", got)
	}
	t.Setenv(EnvLib, "")
	if _, err := Start(context.Background(), Options{Nodes: 1}); err == nil || !strings.Contains(err.Error(), EnvLib) {
		t.Errorf("Start without lib: %v", err)
	}
	if _, err := Start(context.Background(), Options{Nodes: 2, LibDir: "/nonexistent"}); err == nil || !strings.Contains(err.Error(), "1 or 3") {
		t.Errorf("Start with 2 nodes: %v", err)
	}
	if _, err := FetchVersion(context.Background(), t.TempDir(), "4.1.1; rm -rf /"); err == nil {
		t.Error("FetchVersion accepted a bad version")
	}

	dir := t.TempDir()
	if _, err := LibVersion(dir); err == nil {
		t.Error("LibVersion of an empty dir succeeded")
	}
	if err := os.WriteFile(filepath.Join(dir, "kafka_2.13-4.1.1.jar"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if v, err := LibVersion(dir); err != nil || v != "4.1.1" {
		t.Errorf("LibVersion = %q, %v", v, err)
	}

	log := filepath.Join(dir, "x.log")
	var b strings.Builder
	for i := 1; i <= 100; i++ {
		fmt.Fprintf(&b, "line %d\n", i)
	}
	if err := os.WriteFile(log, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := tailFile(log, 3); got != "line 98\nline 99\nline 100" {
		t.Errorf("tailFile = %q", got)
	}
	if got := tailFile(filepath.Join(dir, "missing"), 3); !strings.Contains(got, "cannot read") {
		t.Errorf("tailFile(missing) = %q", got)
	}
}

// TestKafkaprocStartFailureReportsLog checks that a node that cannot start
// yields an error with the tail of its log, quickly.
func TestKafkaprocStartFailureReportsLog(t *testing.T) {
	requireKafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	begin := time.Now()
	_, err := Start(ctx, Options{
		Nodes:       1,
		Dir:         t.TempDir(),
		ServerProps: map[string]string{"num.io.threads": "not-a-number"},
	})
	if err == nil {
		t.Fatal("Start with a broken config succeeded")
	}
	msg := err.Error()
	if !strings.Contains(msg, "tail") || !strings.Contains(msg, "num.io.threads") {
		t.Fatalf("error lacks the log tail:\n%s", msg)
	}
	if d := time.Since(begin); d > 30*time.Second {
		t.Fatalf("failure took %s to detect", d)
	}
	t.Logf("failed as expected in %s", time.Since(begin).Round(time.Millisecond))
}

// TestKafkaprocPortConflictRetry makes the first port pick collide with a
// port that is already bound and checks that Start retries with new ports.
func TestKafkaprocPortConflictRetry(t *testing.T) {
	requireKafka(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	calls := 0
	pickPorts = func(n int) ([]int, error) {
		calls++
		ports, err := freePorts(n)
		if calls == 1 && err == nil {
			ports[1] = busy.Addr().(*net.TCPAddr).Port // node 1's controller port
		}
		return ports, err
	}
	defer func() { pickPorts = freePorts }()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := Start(ctx, Options{Nodes: 1, Dir: t.TempDir(), Logf: t.Logf, SkipWarmup: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	if calls != 2 {
		t.Errorf("ports picked %d times, want 2", calls)
	}
	if c.Brokers()[0] == busy.Addr().String() {
		t.Errorf("broker on the busy port %s", busy.Addr())
	}
}

// TestKafkaprocStartLeavesNoClientGoroutines: Start's group coordinator
// warm-up used kafka-go's DefaultTransport, whose connection pool (a
// metadata refresh goroutine redialling the cluster every few seconds)
// lived for the rest of the test process; against a frozen broker its dial
// stayed blocked in a read and showed up as a leftover goroutine in the
// fault suite's TestStopLeavesNoGoroutines. Start now leaves no kafka-go
// connection pool behind.
func TestKafkaprocStartLeavesNoClientGoroutines(t *testing.T) {
	requireKafka(t)
	before := map[string]bool{}
	for id := range goroutinesWith("kafka-go.(*connPool).discover") {
		before[id] = true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := Start(ctx, Options{Nodes: 1, Dir: t.TempDir(), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	var left []string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		left = left[:0]
		for id, stack := range goroutinesWith("kafka-go.(*connPool).discover") {
			if !before[id] {
				left = append(left, stack)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(left) > 0 {
		t.Fatalf("%d kafka-go connection pool(s) left running by Start (hang guard 30 s):\n%s", len(left), strings.Join(left, "\n\n"))
	}
}

// goroutinesWith returns the stacks, by goroutine id, of the goroutines
// whose stack contains frame.
func goroutinesWith(frame string) map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := map[string]string{}
	for _, g := range strings.Split(string(buf), "\n\n") {
		if !strings.Contains(g, frame) {
			continue
		}
		if id, _, ok := strings.Cut(strings.TrimPrefix(g, "goroutine "), " "); ok {
			out[id] = g
		}
	}
	return out
}
