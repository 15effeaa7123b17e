package engine

import (
	"context"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/internal/testkit"
	"github.com/kavari-go/kavari/kavaritest"
)

// committed reads the group's committed offsets for topic from the broker.
func committed(t *testing.T, brokers []string, group, topic string, partitions int) map[int]int64 {
	t.Helper()
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	ps := make([]int, partitions)
	for i := range ps {
		ps[i] = i
	}
	resp, err := c.OffsetFetch(context.Background(), &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: ps}})
	require.NoError(t, err)
	out := map[int]int64{}
	for _, p := range resp.Topics[topic] {
		out[p.Partition] = p.CommittedOffset
	}
	return out
}

type stopMsg struct {
	kavari.Message `kavari:"topic=kavari-test-stop,key=ID"`
	Run            string `json:"run"`
	ID             string `json:"id"`
	Seq            int    `json:"seq"`
}

// TestStopMidProcessingCommitsCompletedAndRedeliversTheRest stops a consumer
// while half its records are stuck in handlers: the completed prefix is
// committed, the rest is redelivered to the next consumer of the group.
func TestStopMidProcessingCommitsCompletedAndRedeliversTheRest(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("run")
	group := testenv.ID("g")
	const n, blockFrom = 20, 10

	reg1 := kavari.NewRegistry()
	var done1 atomic.Int64
	var entered sync.WaitGroup
	entered.Add(n)
	require.NoError(t, kavari.RegisterFuncOn(reg1, &stopMsg{}, func(ctx context.Context, m *stopMsg) error {
		if m.Run != run {
			return nil
		}
		entered.Done()
		if m.Seq >= blockFrom {
			<-ctx.Done() // stuck until Stop's deadline cancels it
			return ctx.Err()
		}
		done1.Add(1)
		return nil
	}))
	k1 := newKavari(t, reg1, brokers, func(c *kavari.Config) { c.Consume.GroupID = group; c.Topics.Partitions = 1 })
	ctx := context.Background()
	require.NoError(t, k1.Start(ctx))
	for i := 0; i < n; i++ {
		_, err := k1.Publish(ctx, &stopMsg{Run: run, ID: "id-" + strconv.Itoa(i), Seq: i})
		require.NoError(t, err)
	}
	waitGroup(t, &entered, 60*time.Second)
	require.Equal(t, int64(blockFrom), done1.Load())
	stopCtx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_ = k1.Stop(stopCtx)

	reg2 := kavari.NewRegistry()
	var mu sync.Mutex
	seen := map[int]int{}
	require.NoError(t, kavari.RegisterFuncOn(reg2, &stopMsg{}, func(ctx context.Context, m *stopMsg) error {
		if m.Run == run {
			mu.Lock()
			seen[m.Seq]++
			mu.Unlock()
		}
		return nil
	}))
	k2 := newKavari(t, reg2, brokers, func(c *kavari.Config) { c.Consume.GroupID = group; c.Topics.Partitions = 1 })
	require.NoError(t, k2.Start(ctx))
	eventually(t, 60*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) >= n-blockFrom
	}, "not every unfinished record was redelivered")
	mu.Lock()
	defer mu.Unlock()
	for s := blockFrom; s < n; s++ {
		assert.Equal(t, 1, seen[s], "seq %d redelivered once", s)
	}
	for s := 0; s < blockFrom; s++ {
		assert.Zero(t, seen[s], "seq %d was committed and must not be redelivered", s)
	}
}

func waitGroup(t *testing.T, wg *sync.WaitGroup, timeout time.Duration) {
	t.Helper()
	ch := make(chan struct{})
	go func() { wg.Wait(); close(ch) }()
	select {
	case <-ch:
	case <-time.After(timeout):
		t.Fatal("timed out waiting for handlers")
	}
}

type shareMsg struct {
	kavari.Message `kavari:"topic=kavari-test-share,key=ID"`
	Run            string `json:"run"`
	ID             string `json:"id"`
}

// TestTwoConsumersSharePartitionsAndTakeOverOnLeave runs two members of one
// group: both get partitions, every message is handled, and when one stops
// the other takes over all partitions.
func TestTwoConsumersSharePartitionsAndTakeOverOnLeave(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("run")
	group := testenv.ID("g")
	var mu sync.Mutex
	seen := map[string]int{}
	mk := func() *kavari.Client {
		reg := kavari.NewRegistry()
		require.NoError(t, kavari.RegisterFuncOn(reg, &shareMsg{}, func(ctx context.Context, m *shareMsg) error {
			if m.Run == run {
				mu.Lock()
				seen[m.ID]++
				mu.Unlock()
			}
			return nil
		}))
		return newKavari(t, reg, brokers, func(c *kavari.Config) { c.Consume.GroupID = group; c.Topics.Partitions = 4 })
	}
	ctx := context.Background()
	a, b := mk(), mk()
	require.NoError(t, a.Start(ctx))
	require.NoError(t, b.Start(ctx))
	eventually(t, 60*time.Second, func() bool {
		ha, hb := a.Health(), b.Health()
		return ha.Connected && hb.Connected && ha.Generation == hb.Generation &&
			len(ha.Assigned["kavari-test-share"]) > 0 && len(hb.Assigned["kavari-test-share"]) > 0 &&
			len(ha.Assigned["kavari-test-share"])+len(hb.Assigned["kavari-test-share"]) == 4
	}, "both members should hold partitions: %+v / %+v", a.Health(), b.Health())
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			_, err := a.Publish(ctx, &shareMsg{Run: run, ID: strconv.Itoa(i)})
			require.NoError(t, err)
		}
	}
	handled := func() int { mu.Lock(); defer mu.Unlock(); return len(seen) }
	publish(0, 200)
	eventually(t, 60*time.Second, func() bool { return handled() == 200 }, "not all 200 handled")
	stopCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	require.NoError(t, b.Stop(stopCtx))
	eventually(t, 60*time.Second, func() bool { return len(a.Health().Assigned["kavari-test-share"]) == 4 }, "survivor holds all partitions: %+v", a.Health())
	publish(200, 300)
	eventually(t, 60*time.Second, func() bool { return handled() == 300 }, "not all 300 handled")
}

type faultMsg struct {
	kavari.Message `kavari:"topic=kavari-test-fault,key=ID"`
	ID             string `json:"id"`
}

// faultBroker starts a kfake cluster and a Client consuming faultMsg from it.
func faultBroker(t *testing.T, brokers int, mutate ...func(*kavari.Config)) (*kavaritest.Broker, *kavari.Client, *sync.Map, string) {
	t.Helper()
	b := kavaritest.NewBroker(t, kavaritest.Brokers(brokers), kavaritest.Topics("kavari-test-fault", "kavari-test-fault.dlq"), kavaritest.Partitions(2))
	reg := kavari.NewRegistry()
	seen := &sync.Map{}
	require.NoError(t, kavari.RegisterFuncOn(reg, &faultMsg{}, func(ctx context.Context, m *faultMsg) error {
		seen.Store(m.ID, true)
		return nil
	}))
	group := testenv.ID("g")
	k := newKavari(t, reg, b.Addrs(), append([]func(*kavari.Config){func(c *kavari.Config) { c.Consume.GroupID = group }}, mutate...)...)
	return b, k, seen, group
}

func count(m *sync.Map) int {
	n := 0
	m.Range(func(any, any) bool { n++; return true })
	return n
}

// TestEmbeddedFaultFailedCommits makes the broker reject offset commits for a
// while: the commits are retried and finally cover every handled record.
func TestEmbeddedFaultFailedCommits(t *testing.T) {
	b, k, seen, group := faultBroker(t, 1)
	var rejected atomic.Int64
	b.Cluster().ControlKey(int16(kmsg.OffsetCommit), func(req kmsg.Request) (kmsg.Response, error, bool) {
		b.Cluster().KeepControl()
		if rejected.Load() >= 5 {
			b.Cluster().DropControl()
			return nil, nil, false
		}
		rejected.Add(1)
		r := req.(*kmsg.OffsetCommitRequest)
		resp := r.ResponseKind().(*kmsg.OffsetCommitResponse)
		for _, rt := range r.Topics {
			st := kmsg.NewOffsetCommitResponseTopic()
			st.Topic = rt.Topic
			for _, p := range rt.Partitions {
				sp := kmsg.NewOffsetCommitResponseTopicPartition()
				sp.Partition = p.Partition
				sp.ErrorCode = 7 // REQUEST_TIMED_OUT
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	ctx := context.Background()
	require.NoError(t, k.Start(ctx))
	for i := 0; i < 50; i++ {
		_, err := k.Publish(ctx, &faultMsg{ID: strconv.Itoa(i)})
		require.NoError(t, err)
	}
	eventually(t, 60*time.Second, func() bool { return count(seen) == 50 }, "handled %d", count(seen))
	eventually(t, 60*time.Second, func() bool {
		c := committed(t, b.Addrs(), group, "kavari-test-fault", 2)
		return c[0]+c[1] == 50
	}, "committed offsets should reach the end after rejected commits: %v", committed(t, b.Addrs(), group, "kavari-test-fault", 2))
	assert.GreaterOrEqual(t, rejected.Load(), int64(1))
}

// TestEmbeddedFaultFailedFetches drops fetch connections a few times: the
// partition readers reconnect and every record is still handled.
func TestEmbeddedFaultFailedFetches(t *testing.T) {
	b, k, seen, _ := faultBroker(t, 1)
	var dropped atomic.Int64
	b.Cluster().ControlKey(int16(kmsg.Fetch), func(req kmsg.Request) (kmsg.Response, error, bool) {
		b.Cluster().KeepControl()
		if dropped.Add(1) > 6 {
			b.Cluster().DropControl()
			return nil, nil, false
		}
		return nil, errFault, true // closes the connection
	})
	ctx := context.Background()
	require.NoError(t, k.Start(ctx))
	for i := 0; i < 50; i++ {
		_, err := k.Publish(ctx, &faultMsg{ID: strconv.Itoa(i)})
		require.NoError(t, err)
	}
	eventually(t, 60*time.Second, func() bool { return count(seen) == 50 }, "handled %d", count(seen))
	assert.Greater(t, dropped.Load(), int64(6))
}

var errFault = &faultError{}

type faultError struct{}

func (*faultError) Error() string { return "injected fault" }

// TestEmbeddedFaultCoordinatorMoves moves the group coordinator to another
// broker mid-stream: the member rejoins and consumption continues.
func TestEmbeddedFaultCoordinatorMoves(t *testing.T) {
	b, k, seen, group := faultBroker(t, 3)
	ctx := context.Background()
	require.NoError(t, k.Start(ctx))
	for i := 0; i < 20; i++ {
		_, err := k.Publish(ctx, &faultMsg{ID: strconv.Itoa(i)})
		require.NoError(t, err)
	}
	eventually(t, 60*time.Second, func() bool { return count(seen) == 20 }, "handled %d", count(seen))
	before := b.Cluster().CoordinatorFor(group)
	for i := 0; i < 10 && b.Cluster().CoordinatorFor(group) == before; i++ {
		b.Cluster().RehashCoordinators()
	}
	require.NotEqual(t, before, b.Cluster().CoordinatorFor(group), "coordinator should have moved")
	for i := 20; i < 60; i++ {
		_, err := k.Publish(ctx, &faultMsg{ID: strconv.Itoa(i)})
		require.NoError(t, err)
	}
	eventually(t, 90*time.Second, func() bool { return count(seen) == 60 }, "handled %d after the coordinator moved", count(seen))
	eventually(t, 60*time.Second, func() bool {
		c := committed(t, b.Addrs(), group, "kavari-test-fault", 2)
		return c[0]+c[1] == 60
	}, "commits reach the new coordinator: %v", committed(t, b.Addrs(), group, "kavari-test-fault", 2))
}

// TestStopReturnsByDeadlineWhenBrokerIsGone closes the broker under a running
// consumer and checks that Stop still returns by its deadline.
func TestStopReturnsByDeadlineWhenBrokerIsGone(t *testing.T) {
	b, k, seen, _ := faultBroker(t, 1)
	ctx := context.Background()
	require.NoError(t, k.Start(ctx))
	_, err := k.Publish(ctx, &faultMsg{ID: "x"})
	require.NoError(t, err)
	eventually(t, 60*time.Second, func() bool { return count(seen) == 1 }, "handled")
	b.Close()
	stopCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	returned := make(chan error, 1)
	go func() { returned <- k.Stop(stopCtx) }()
	select {
	case <-returned:
	case <-time.After(15 * time.Second): // hang guard, far past the deadline
		t.Fatal("Stop did not return after its deadline with the broker gone")
	}
	// Idempotent: a second Stop returns the first one's result at once.
	again, cancel2 := context.WithTimeout(ctx, time.Second)
	defer cancel2()
	_ = k.Stop(again)
	assert.True(t, k.Health().Stopped)
}

type bpMsg struct {
	kavari.Message `kavari:"topic=kavari-test-bp,key=ID"`
	Run            string `json:"run"`
	ID             string `json:"id"`
}

// TestMaxInFlightBoundsWorkAndHealthShowsIt blocks every handler: running
// handlers stop at MaxInFlight, fetched records at MaxBuffered (the fetchers
// wait), Health reports both and the age of the oldest record, and everything
// completes once handlers are released.
func TestMaxInFlightBoundsWorkAndHealthShowsIt(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("run")
	reg := kavari.NewRegistry()
	release := make(chan struct{})
	var started, handled atomic.Int64
	require.NoError(t, kavari.RegisterFuncOn(reg, &bpMsg{}, func(ctx context.Context, m *bpMsg) error {
		if m.Run != run {
			return nil
		}
		started.Add(1)
		<-release
		handled.Add(1)
		return nil
	}))
	k := newKavari(t, reg, brokers, func(c *kavari.Config) { c.Consume.MaxInFlight = 8; c.Consume.MaxBuffered = 20; c.Topics.Partitions = 2 })
	ctx := context.Background()
	require.NoError(t, k.Start(ctx))
	for i := 0; i < 100; i++ {
		_, err := k.Publish(ctx, &bpMsg{Run: run, ID: strconv.Itoa(i)})
		require.NoError(t, err)
	}
	eventually(t, 60*time.Second, func() bool { h := k.Health(); return h.InFlight == 20 && h.Running == 8 },
		"buffer and run slots should fill: %+v", k.Health())
	for i := 0; i < 20; i++ {
		h := k.Health()
		require.LessOrEqual(t, h.InFlight, 20, "MaxBuffered bounds fetched records")
		require.LessOrEqual(t, h.Running, 8, "MaxInFlight bounds running handlers")
		require.LessOrEqual(t, started.Load(), int64(8))
		time.Sleep(5 * time.Millisecond)
	}
	assert.Greater(t, k.Health().OldestInFlight, time.Duration(0))
	close(release)
	eventually(t, 60*time.Second, func() bool { return handled.Load() == 100 }, "handled %d", handled.Load())
}

type relaxedMsg struct {
	kavari.Message `kavari:"topic=kavari-test-relaxed,key=ID"`
	Run            string `json:"run"`
	ID             string `json:"id"`
}

// TestRelaxedSkipsUnknownTypes: with Consume.SkipUnknownTypes a record of unknown type is
// skipped and committed past, as the Python kavari does.
func TestRelaxedSkipsUnknownTypes(t *testing.T) {
	b := kavaritest.NewBroker(t, kavaritest.Topics("kavari-test-relaxed", "kavari-test-relaxed.dlq"), kavaritest.Partitions(1))
	reg := kavari.NewRegistry()
	var handled atomic.Int64
	require.NoError(t, kavari.RegisterFuncOn(reg, &relaxedMsg{}, func(ctx context.Context, m *relaxedMsg) error {
		handled.Add(1)
		return nil
	}))
	group := testenv.ID("g")
	k := newKavari(t, reg, b.Addrs(), func(c *kavari.Config) { c.Consume.GroupID = group; c.Consume.SkipUnknownTypes = true })
	ctx := context.Background()
	// RequireAll: kafka-go's default is fire-and-forget, which returns
	// before the broker appended the record.
	w := &kafka.Writer{Addr: kafka.TCP(b.Addrs()...), Topic: "kavari-test-relaxed", RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	defer w.Close()
	require.NoError(t, w.WriteMessages(ctx, kafka.Message{Value: []byte(`{}`), Headers: []kafka.Header{{Key: "msg_type", Value: []byte("SomethingElse")}}}))
	_, err := k.Publish(ctx, &relaxedMsg{ID: "a"})
	require.NoError(t, err)
	require.NoError(t, k.Start(ctx))
	eventually(t, 30*time.Second, func() bool { return handled.Load() == 1 }, "handled")
	eventually(t, 30*time.Second, func() bool { return committed(t, b.Addrs(), group, "kavari-test-relaxed", 1)[0] == 2 }, "committed past the unknown record")
	// Nothing was dead-lettered.
	c := &kafka.Client{Addr: kafka.TCP(b.Addrs()...)}
	resp, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{"kavari-test-relaxed.dlq": {kafka.LastOffsetOf(0)}}})
	require.NoError(t, err)
	assert.Equal(t, int64(0), resp.Topics["kavari-test-relaxed.dlq"][0].LastOffset)
	_ = kfake.NumBrokers
}

type fewSlotsMsg struct {
	kavari.Message `kavari:"topic=kavari-test-fewslots,key=ID"`
	Run            string `json:"run"`
	ID             string `json:"id"`
}

// TestMaxInFlightBelowPartitionCountStillProgresses: idle partitions must not
// hold in-flight slots, or a busy partition would never get one.
func TestMaxInFlightBelowPartitionCountStillProgresses(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("run")
	reg := kavari.NewRegistry()
	var handled atomic.Int64
	require.NoError(t, kavari.RegisterFuncOn(reg, &fewSlotsMsg{}, func(ctx context.Context, m *fewSlotsMsg) error {
		if m.Run == run {
			handled.Add(1)
		}
		return nil
	}))
	k := newKavari(t, reg, brokers, func(c *kavari.Config) { c.Consume.MaxInFlight = 1; c.Topics.Partitions = 3 })
	ctx := context.Background()
	require.NoError(t, k.Start(ctx))
	eventually(t, 60*time.Second, func() bool { return len(k.Health().Assigned["kavari-test-fewslots"]) == 3 }, "assigned")
	assert.Equal(t, 0, k.Health().InFlight, "idle fetchers hold no slot")
	for i := 0; i < 30; i++ {
		_, err := k.Publish(ctx, &fewSlotsMsg{Run: run, ID: "same-key"})
		require.NoError(t, err)
	}
	eventually(t, 60*time.Second, func() bool { return handled.Load() == 30 }, "handled %d of 30", handled.Load())
}

type dlqFailMsg struct {
	kavari.Message `kavari:"topic=kavari-test-dlqfail,key=ID"`
	ID             string `json:"id"`
}

// TestDeadLetterWriteFailureBlocksCommitUntilItSucceeds rejects writes to
// the dead-letter topic for a while: the poison record stays uncommitted
// (records after it are handled but not committed past it) until its dead
// letter is written, then the commit moves on.
func TestDeadLetterWriteFailureBlocksCommitUntilItSucceeds(t *testing.T) {
	b := kavaritest.NewBroker(t, kavaritest.Topics("kavari-test-dlqfail", "kavari-test-dlqfail.dlq"), kavaritest.Partitions(1))
	var rejected atomic.Int64
	var release atomic.Bool
	// Produce v13 (franz-go) names a topic by its ID, older versions by name.
	dlqID := b.Cluster().TopicInfo("kavari-test-dlqfail.dlq").TopicID
	b.Cluster().ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		b.Cluster().KeepControl()
		r := req.(*kmsg.ProduceRequest)
		if release.Load() || len(r.Topics) != 1 ||
			(r.Topics[0].Topic != "kavari-test-dlqfail.dlq" && r.Topics[0].TopicID != dlqID) {
			return nil, nil, false
		}
		rejected.Add(1)
		resp := r.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range r.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, p := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = p.Partition
				sp.ErrorCode = 19 // NOT_ENOUGH_REPLICAS: retriable
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	reg := kavari.NewRegistry()
	var handled atomic.Int64
	require.NoError(t, kavari.RegisterFuncOn(reg, &dlqFailMsg{}, func(ctx context.Context, m *dlqFailMsg) error {
		handled.Add(1)
		return nil
	}))
	group := testenv.ID("g")
	k := newKavari(t, reg, b.Addrs(), func(c *kavari.Config) {
		c.Consume.GroupID = group
		c.Publish.Retry = kavari.FibonacciRetry(time.Millisecond, 2)
	})
	ctx := context.Background()
	// RequireAll: the poison must be appended (at offset 0) before the good
	// records are published. With kafka-go's default, fire-and-forget,
	// WriteMessages returned before the broker read the request, and under
	// load the poison landed after a good record, whose commit (1) is right.
	w := &kafka.Writer{Addr: kafka.TCP(b.Addrs()...), Topic: "kavari-test-dlqfail", RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	defer w.Close()
	require.NoError(t, w.WriteMessages(ctx, kafka.Message{Value: []byte("poison: no headers")}))
	for i := 0; i < 5; i++ {
		_, err := k.Publish(ctx, &dlqFailMsg{ID: strconv.Itoa(i)})
		require.NoError(t, err)
	}
	require.NoError(t, k.Start(ctx))
	eventually(t, 30*time.Second, func() bool { return handled.Load() == 5 && rejected.Load() >= 4 }, "good records handled while the dead letter keeps failing")
	// Several commit intervals pass; none may cover the poison record at offset 0.
	time.Sleep(time.Second)
	require.LessOrEqual(t, committed(t, b.Addrs(), group, "kavari-test-dlqfail", 1)[0], int64(0), "committed past a record that was neither handled nor dead-lettered")
	release.Store(true)
	eventually(t, 60*time.Second, func() bool { return committed(t, b.Addrs(), group, "kavari-test-dlqfail", 1)[0] == 6 }, "commit moves on once the dead letter is written")
	dl := readTopic(t, b.Addrs(), "kavari-test-dlqfail.dlq", 1, func(kafka.Message) bool { return true })
	assert.Equal(t, "unknown_type", header(dl[0], kavari.HeaderErrorKind))
}

type revokeMsg struct {
	kavari.Message `kavari:"topic=kavari-test-revoke,key=ID"`
	Run            string `json:"run"`
	ID             string `json:"id"`
}

// TestRevokeDrainsAndCommitsSoTheNewOwnerDoesNotRepeat: while a member is
// busy with slow handlers, a second member joins. The first drains its
// in-flight work within DrainTimeout and commits it before giving partitions
// away, so nothing is handled twice and nothing is lost.
func TestRevokeDrainsAndCommitsSoTheNewOwnerDoesNotRepeat(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("run")
	group := testenv.ID("g")
	var mu sync.Mutex
	seen := map[string]int{}
	mk := func() *kavari.Client {
		reg := kavari.NewRegistry()
		require.NoError(t, kavari.RegisterFuncOn(reg, &revokeMsg{}, func(ctx context.Context, m *revokeMsg) error {
			if m.Run != run {
				return nil
			}
			time.Sleep(20 * time.Millisecond)
			mu.Lock()
			seen[m.ID]++
			mu.Unlock()
			return nil
		}))
		return newKavari(t, reg, brokers, func(c *kavari.Config) {
			c.Consume.GroupID = group
			c.Topics.Partitions = 4
			c.Consume.MaxInFlight = 4
			c.Consume.DrainTimeout = 8 * time.Second
		})
	}
	ctx := context.Background()
	a := mk()
	require.NoError(t, a.Start(ctx))
	const n = 300
	for i := 0; i < n; i++ {
		_, err := a.Publish(ctx, &revokeMsg{Run: run, ID: strconv.Itoa(i)})
		require.NoError(t, err)
	}
	handled := func() int { mu.Lock(); defer mu.Unlock(); return len(seen) }
	eventually(t, 60*time.Second, func() bool { return handled() >= 20 }, "first member under way")
	b := mk()
	require.NoError(t, b.Start(ctx))
	eventually(t, 60*time.Second, func() bool {
		return len(b.Health().Assigned["kavari-test-revoke"]) > 0 && a.Health().Generation == b.Health().Generation
	}, "second member got partitions")
	eventually(t, 120*time.Second, func() bool { return handled() == n }, "every message handled")
	mu.Lock()
	defer mu.Unlock()
	for id, c := range seen {
		assert.Equal(t, 1, c, "message %s handled %d times", id, c)
	}
}

type stuckMsg struct {
	kavari.Message `kavari:"topic=kavari-test-stuck,key=ID"`
	Run            string `json:"run"`
	ID             string `json:"id"`
	Seq            int    `json:"seq"`
}

// TestStopCommitsBeforeItsDeadlineEvenWithStuckHandlers: with no periodic
// commit to rely on and handlers that ignore cancellation, Stop still commits
// the completed prefix before its deadline, so a process that exits right
// after Stop returns does not have that work redone.
func TestStopCommitsBeforeItsDeadlineEvenWithStuckHandlers(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("run")
	group := testenv.ID("g")
	const n, blockFrom = 12, 6
	reg1 := kavari.NewRegistry()
	var entered sync.WaitGroup
	entered.Add(n)
	var firstStuck atomic.Int64 // offset of the record with Seq blockFrom
	require.NoError(t, kavari.RegisterFuncOn(reg1, &stuckMsg{}, func(ctx context.Context, m *stuckMsg) error {
		if m.Run != run {
			return nil
		}
		if m.Seq == blockFrom {
			rec, _ := kavari.RecordFromContext(ctx)
			firstStuck.Store(rec.Offset)
		}
		entered.Done()
		if m.Seq >= blockFrom {
			time.Sleep(4 * time.Second) // ignores ctx
		}
		return nil
	}))
	k1 := newKavari(t, reg1, brokers, func(c *kavari.Config) {
		c.Consume.GroupID = group
		c.Topics.Partitions = 1
		c.Consume.CommitInterval = time.Hour // only the final commit can save the completed work
	})
	ctx := context.Background()
	require.NoError(t, k1.Start(ctx))
	for i := 0; i < n; i++ {
		_, err := k1.Publish(ctx, &stuckMsg{Run: run, ID: "id-" + strconv.Itoa(i), Seq: i})
		require.NoError(t, err)
	}
	waitGroup(t, &entered, 60*time.Second)
	stopCtx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancel()
	_ = k1.Stop(stopCtx) // returns an error: the stuck handlers outlive the deadline
	// Read what is committed right away, as a process exiting now would leave it.
	require.Equal(t, firstStuck.Load(), committed(t, brokers, group, "kavari-test-stuck", 1)[0],
		"the completed prefix must be committed before Stop returns")
}

type lifeMsg struct {
	kavari.Message `kavari:"topic=kavari-test-life,key=ID"`
	ID             string `json:"id"`
}

type lifeHandler struct{}

func (*lifeHandler) Handle(context.Context, *lifeMsg) error { return nil }

// lifeKavari returns a Client on a fresh registry consuming lifeMsg from b,
// without creating topics (the tests decide which exist).
func lifeKavari(t *testing.T, b *kavaritest.Broker, mutate ...func(*kavari.Config)) (*kavari.Client, *kavari.Registry) {
	t.Helper()
	reg := kavari.NewRegistry()
	cfg := kavari.Config{
		Brokers:  b.Addrs(),
		Registry: reg,
		Logger:   testLogger(),
		Consume: kavari.ConsumeConfig{
			GroupID:           testenv.ID("g"),
			CommitInterval:    200 * time.Millisecond,
			HeartbeatInterval: 500 * time.Millisecond,
			SessionTimeout:    10 * time.Second,
		},
	}
	testkit.UseTransport(&cfg)
	for _, m := range mutate {
		m(&cfg)
	}
	k, err := kavari.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = k.Stop(ctx)
	})
	return k, reg
}

// TestStartFailsWhenADeadLetterTopicIsMissing: with Topics.Create and
// AllowAutoCreate off, a missing dead-letter topic would hold a poison
// record's partition forever; Start finds it and names it.
func TestStartFailsWhenADeadLetterTopicIsMissing(t *testing.T) {
	b := kavaritest.NewBroker(t, kavaritest.Topics("kavari-test-life"))
	k, reg := lifeKavari(t, b)
	require.NoError(t, kavari.RegisterFuncOn(reg, &lifeMsg{}, func(context.Context, *lifeMsg) error { return nil }))
	err := k.Start(context.Background())
	require.ErrorIs(t, err, kavari.ErrMissingTopics)
	var mt *kavari.MissingTopicsError
	require.ErrorAs(t, err, &mt)
	assert.Equal(t, []string{"kavari-test-life.dlq"}, mt.Topics)
	assert.False(t, k.Health().Started)

	// With AllowAutoCreate, Start creates it.
	k2, reg2 := lifeKavari(t, b, func(c *kavari.Config) { c.Publish.AllowAutoCreate = true })
	require.NoError(t, kavari.RegisterFuncOn(reg2, &lifeMsg{}, func(context.Context, *lifeMsg) error { return nil }))
	require.NoError(t, k2.Start(context.Background()))
	k3, reg3 := lifeKavari(t, b)
	require.NoError(t, kavari.RegisterFuncOn(reg3, &lifeMsg{}, func(context.Context, *lifeMsg) error { return nil }))
	require.NoError(t, k3.Start(context.Background()), "the dead-letter topic exists now")
}

// TestStartFailsWhenTheProviderCannotBuildAHandler: the provider is asked for
// every handler type once at Start, and Start names the ones it cannot build.
func TestStartFailsWhenTheProviderCannotBuildAHandler(t *testing.T) {
	b := kavaritest.NewBroker(t, kavaritest.Topics("kavari-test-life", "kavari-test-life.dlq"))
	k, reg := lifeKavari(t, b)
	require.NoError(t, kavari.RegisterProvidedOn(reg, &lifeMsg{}, (*lifeHandler)(nil)))
	err := k.Start(context.Background())
	var re *kavari.HandlerResolveError
	require.ErrorAs(t, err, &re, "no provider set")
	assert.Equal(t, []string{"*engine.lifeHandler"}, re.HandlerTypes)

	var asked atomic.Int64
	k.SetProvider(func(reflect.Type) (any, error) { asked.Add(1); return nil, errors.New("container: not bound") })
	err = k.Start(context.Background())
	require.ErrorAs(t, err, &re)
	assert.Equal(t, []string{"*engine.lifeHandler"}, re.HandlerTypes)
	assert.Contains(t, err.Error(), "container: not bound")
	assert.Equal(t, int64(1), asked.Load())

	k.SetProvider(kavari.MapProvider(&lifeHandler{}))
	require.NoError(t, k.Start(context.Background()), "a failed Start can be retried")
}

// TestFailedStartCanBeRetriedAndFreesTheRegistry: a Start that failed (here
// Topics.Create refused once) leaves the registry writable and the Client
// startable; the second Start consumes.
func TestFailedStartCanBeRetriedAndFreesTheRegistry(t *testing.T) {
	b := kavaritest.NewBroker(t)
	var refused atomic.Bool
	b.Cluster().ControlKey(int16(kmsg.CreateTopics), func(req kmsg.Request) (kmsg.Response, error, bool) {
		if !refused.CompareAndSwap(false, true) {
			return nil, nil, false
		}
		r := req.(*kmsg.CreateTopicsRequest)
		resp := r.ResponseKind().(*kmsg.CreateTopicsResponse)
		for _, rt := range r.Topics {
			st := kmsg.NewCreateTopicsResponseTopic()
			st.Topic = rt.Topic
			st.ErrorCode = 29 // TOPIC_AUTHORIZATION_FAILED
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	k, reg := lifeKavari(t, b, func(c *kavari.Config) { c.Topics.Create = true })
	var handled atomic.Int64
	require.NoError(t, kavari.RegisterFuncOn(reg, &lifeMsg{}, func(context.Context, *lifeMsg) error { handled.Add(1); return nil }))
	require.Error(t, k.Start(context.Background()))
	assert.False(t, k.Health().Started, "Health after a failed Start")
	require.NoError(t, kavari.RegisterFuncOn(reg, &bpMsg{}, func(context.Context, *bpMsg) error { return nil }),
		"the registry is writable after a failed Start")
	require.NoError(t, k.Start(context.Background()), "a failed Start can be retried")
	assert.True(t, k.Health().Started)
	_, err := k.Publish(context.Background(), &lifeMsg{ID: "a"})
	require.NoError(t, err)
	eventually(t, 60*time.Second, func() bool { return handled.Load() == 1 }, "not consumed after the retried Start")
	require.ErrorIs(t, kavari.RegisterFuncOn(reg, &stopMsg{}, func(context.Context, *stopMsg) error { return nil }), kavari.ErrFrozen)
}

// TestStopDuringStartWins: Stop called while Start is still creating topics
// returns, and Start then returns ErrClosed with no consumer left behind.
func TestStopDuringStartWins(t *testing.T) {
	b := kavaritest.NewBroker(t)
	inCreate := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	b.Cluster().ControlKey(int16(kmsg.CreateTopics), func(kmsg.Request) (kmsg.Response, error, bool) {
		once.Do(func() {
			close(inCreate)
			b.Cluster().SleepControl(func() { <-release })
		})
		return nil, nil, false
	})
	k, reg := lifeKavari(t, b, func(c *kavari.Config) { c.Topics.Create = true })
	var handled atomic.Int64
	require.NoError(t, kavari.RegisterFuncOn(reg, &lifeMsg{}, func(context.Context, *lifeMsg) error { handled.Add(1); return nil }))
	started := make(chan error, 1)
	go func() { started <- k.Start(context.Background()) }()
	<-inCreate
	stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- k.Stop(stopCtx) }()
	var startErr error
	select {
	case startErr = <-started:
	case <-time.After(30 * time.Second):
		close(release)
		startErr = <-started
	}
	close(release)
	require.ErrorIs(t, startErr, kavari.ErrClosed, "Stop came during Start: Start must not start a consumer")
	require.NoError(t, <-stopped)
	h := k.Health()
	assert.False(t, h.Started)
	assert.False(t, h.Connected)
	require.ErrorIs(t, k.Start(context.Background()), kavari.ErrClosed)
}

// failCommits makes the broker refuse every offset commit.
func failCommits(b *kavaritest.Broker) {
	b.Cluster().ControlKey(int16(kmsg.OffsetCommit), func(req kmsg.Request) (kmsg.Response, error, bool) {
		b.Cluster().KeepControl()
		r := req.(*kmsg.OffsetCommitRequest)
		resp := r.ResponseKind().(*kmsg.OffsetCommitResponse)
		for _, rt := range r.Topics {
			st := kmsg.NewOffsetCommitResponseTopic()
			st.Topic = rt.Topic
			for _, p := range rt.Partitions {
				sp := kmsg.NewOffsetCommitResponseTopicPartition()
				sp.Partition = p.Partition
				sp.ErrorCode = 22 // ILLEGAL_GENERATION, as after an expelled member's drain
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
}

// TestStopReportsAFailedFinalCommit: Stop tells the truth when completed work
// could not be committed.
func TestStopReportsAFailedFinalCommit(t *testing.T) {
	b, k, seen, _ := faultBroker(t, 1, func(c *kavari.Config) { c.Consume.CommitInterval = time.Hour })
	ctx := context.Background()
	require.NoError(t, k.Start(ctx))
	for i := 0; i < 10; i++ {
		_, err := k.Publish(ctx, &faultMsg{ID: strconv.Itoa(i)})
		require.NoError(t, err)
	}
	eventually(t, 60*time.Second, func() bool { return count(seen) == 10 }, "handled %d", count(seen))
	failCommits(b)
	stopCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := k.Stop(stopCtx)
	require.ErrorIs(t, err, kavari.ErrCommitFailed, "Stop must say that completed work was not committed")
	var ce *kavari.CommitError
	require.ErrorAs(t, err, &ce)
	assert.NotEmpty(t, ce.Offsets["kavari-test-fault"])
	assert.ErrorIs(t, k.Stop(stopCtx), kavari.ErrCommitFailed, "a second Stop returns the first one's result")
	assert.NotEmpty(t, k.Health().CommitError)
}

// TestStopReportsAbandonedHandlers: a handler that ignores cancellation is
// left behind at Stop's deadline, and Stop says so.
func TestStopReportsAbandonedHandlers(t *testing.T) {
	b := kavaritest.NewBroker(t, kavaritest.Topics("kavari-test-life", "kavari-test-life.dlq"))
	k, reg := lifeKavari(t, b)
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	defer close(release)
	require.NoError(t, kavari.RegisterFuncOn(reg, &lifeMsg{}, func(context.Context, *lifeMsg) error {
		entered <- struct{}{}
		<-release // ignores its context
		return nil
	}))
	ctx := context.Background()
	require.NoError(t, k.Start(ctx))
	_, err := k.Publish(ctx, &lifeMsg{ID: "stuck"})
	require.NoError(t, err)
	select {
	case <-entered:
	case <-time.After(60 * time.Second):
		t.Fatal("handler not started")
	}
	stopCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	err = k.Stop(stopCtx)
	require.ErrorIs(t, err, kavari.ErrHandlersAbandoned)
	assert.Contains(t, err.Error(), "kavari-test-life/")
}

// TestStopDuringGroupJoin stops a consumer whose JoinGroup the coordinator
// holds: Stop returns well before kafka-go's join timeout, without an error
// (there was no work), and nothing joins afterwards.
func TestStopDuringGroupJoin(t *testing.T) {
	b := kavaritest.NewBroker(t, kavaritest.Topics("kavari-test-life", "kavari-test-life.dlq"))
	inJoin := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	b.Cluster().ControlKey(int16(kmsg.JoinGroup), func(kmsg.Request) (kmsg.Response, error, bool) {
		b.Cluster().KeepControl()
		once.Do(func() {
			close(inJoin)
			b.Cluster().SleepControl(func() { <-release })
		})
		return nil, nil, false
	})
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	k, reg := lifeKavari(t, b)
	require.NoError(t, kavari.RegisterFuncOn(reg, &lifeMsg{}, func(context.Context, *lifeMsg) error { return nil }))
	require.NoError(t, k.Start(context.Background()))
	select {
	case <-inJoin:
	case <-time.After(30 * time.Second):
		t.Fatal("no JoinGroup")
	}
	stopCtx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- k.Stop(stopCtx) }()
	select {
	case err := <-stopped:
		require.NoError(t, err)
	case <-stopCtx.Done():
		t.Fatal("Stop waited for the held JoinGroup until its deadline")
	}
	close(release)
	h := k.Health()
	assert.True(t, h.Stopped)
	assert.False(t, h.Connected)
	assert.Zero(t, h.Generation)
}

// TestMissingDeadLetterTopicReportedWhenStartCouldNotCheck: when the brokers
// do not answer Start's check, the consumer starts anyway and checks once it
// has joined the group; a missing dead-letter topic is then shown in Health.
func TestMissingDeadLetterTopicReportedWhenStartCouldNotCheck(t *testing.T) {
	b := kavaritest.NewBroker(t, kavaritest.Topics("kavari-test-life"))
	var failed atomic.Bool
	b.Cluster().ControlKey(int16(kmsg.Metadata), func(kmsg.Request) (kmsg.Response, error, bool) {
		if failed.CompareAndSwap(false, true) {
			return nil, errFault, true // closes the connection: Start cannot check
		}
		return nil, nil, false
	})
	k, reg := lifeKavari(t, b)
	require.NoError(t, kavari.RegisterFuncOn(reg, &lifeMsg{}, func(context.Context, *lifeMsg) error { return nil }))
	require.NoError(t, k.Start(context.Background()))
	require.True(t, failed.Load())
	eventually(t, 30*time.Second, func() bool {
		return strings.Contains(k.Health().LastError, "kavari-test-life.dlq")
	}, "Health does not report the missing dead-letter topic: %+v", k.Health())
}

// TestStartStopInterleavings races Start against Stop with varying delays:
// Start either succeeds (and Stop then stops the consumer) or returns
// ErrClosed; after Stop nothing is connected and Start stays refused.
func TestStartStopInterleavings(t *testing.T) {
	b := kavaritest.NewBroker(t, kavaritest.Topics("kavari-test-life", "kavari-test-life.dlq"))
	for i := 0; i < 12; i++ {
		// Topics.Create widens Start's window (a create and a metadata wait).
		k, reg := lifeKavari(t, b, func(c *kavari.Config) { c.Topics.Create = i%2 == 1 })
		require.NoError(t, kavari.RegisterFuncOn(reg, &lifeMsg{}, func(context.Context, *lifeMsg) error { return nil }))
		delay := time.Duration(i) * 3 * time.Millisecond
		started := make(chan error, 1)
		go func() { started <- k.Start(context.Background()) }()
		time.Sleep(delay)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		stopErr := k.Stop(ctx)
		cancel()
		var startErr error
		select {
		case startErr = <-started:
		case <-time.After(30 * time.Second):
			t.Fatalf("delay %s: Start did not return after Stop", delay)
		}
		if startErr != nil {
			require.ErrorIs(t, startErr, kavari.ErrClosed, "delay %s", delay)
		}
		assert.NoError(t, stopErr, "delay %s (Start: %v)", delay, startErr)
		time.Sleep(300 * time.Millisecond) // a zombie consumer would join the group by now
		h := k.Health()
		assert.True(t, h.Stopped, "delay %s", delay)
		assert.False(t, h.Connected, "delay %s", delay)
		assert.Empty(t, h.Assigned, "delay %s: a stopped consumer holds no partitions", delay)
		if startErr != nil {
			assert.Zero(t, h.Generation, "delay %s: a consumer joined after Stop", delay)
		}
		require.ErrorIs(t, k.Start(context.Background()), kavari.ErrClosed)
	}
}
