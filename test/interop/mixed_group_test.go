package interop

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol/describegroups"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
)

// TestPythonMemberSharesGroup (issue 16, item 7): a Go kavari member on
// FranzGo and a Python kavari member (librdkafka, which offers range and
// roundrobin) in one consumer group, whichever founded it. The second
// member must get partitions: the group agrees on range (franz-go offers
// cooperative-sticky, then range), and records published while both are
// members are handled, each by one of them. It chooses its transport itself
// and runs in the kafka-go pass only. (A KafkaGo member cannot share a
// group with librdkafka members: kafka-go reads only the version-0 member
// metadata it writes itself, see the README.)
func TestPythonMemberSharesGroup(t *testing.T) {
	testenv.RequireReal(t)
	python(t)
	if tr := testenv.Transport(); tr != "kafka-go" {
		t.Skipf("chooses its transport itself; runs in the kafka-go pass (this is %s)", tr)
	}
	t.Run("go-first", func(t *testing.T) { pythonMemberSharesGroup(t, false) })
	t.Run("python-first", func(t *testing.T) { pythonMemberSharesGroup(t, true) })
}

func pythonMemberSharesGroup(t *testing.T, pyFirst bool) {
	brokers := testenv.RequireReal(t)
	partitions := ensureTopic(t, brokers)
	group, prefix := testenv.ID("mixed-py"), testenv.ID("mixed")
	const n = 60

	var mu sync.Mutex
	goHandled := map[string]int{}
	reg := kavari.NewRegistry()
	require.NoError(t, kavari.RegisterFuncOn(reg, &InteropMessage{}, func(ctx context.Context, m *InteropMessage) error {
		if strings.HasPrefix(m.ID, prefix+"-") {
			mu.Lock()
			goHandled[m.ID]++
			mu.Unlock()
		}
		return nil
	}))
	k, err := kavari.New(kavari.Config{Brokers: brokers, Transport: kavari.FranzGo, Registry: reg, Logger: quiet(),
		Publish: kavari.PublishConfig{Partitioner: kavari.CRC32},
		Consume: kavari.ConsumeConfig{GroupID: group, AutoOffsetReset: kavari.Latest, CommitInterval: 200 * time.Millisecond,
			SessionTimeout: 6 * time.Second, HeartbeatInterval: 500 * time.Millisecond}})
	require.NoError(t, err)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = k.Stop(ctx)
	}()
	ctx := context.Background()
	owned := func() int {
		n := 0
		for _, ps := range k.Health().Assigned {
			n += len(ps)
		}
		return n
	}

	// The Python member, for as long as the test needs it.
	type result struct{ r *pyRun }
	done := make(chan result, 1)
	startPy := func() {
		go func() {
			done <- result{runPy(t, 2*time.Minute, "consume.py", "--brokers", strings.Join(brokers, ","), "--topic", interopTopic,
				"--group", group, "--count", fmt.Sprint(n), "--prefix", prefix+"-", "--timeout", "45", "--keep-going", "--workaround-bytes-header")}
		}()
	}
	if pyFirst {
		startPy()
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
			if proto, members := describeGroup(t, brokers, group); members == 1 {
				require.Equal(t, "range", proto, "the Python member's group")
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the Python member did not found the group")
			}
		}
		require.NoError(t, k.Start(ctx))
	} else {
		require.NoError(t, k.Start(ctx))
		waitUntil(t, time.Minute, func() bool { return owned() == partitions }, "the Go member did not get the partitions: %v", k.Health)
		startPy()
	}
	waitUntil(t, time.Minute, func() bool { return owned() > 0 && owned() < partitions },
		"the members did not share the partitions: the Go member has %v", k.Health)
	proto, members := describeGroup(t, brokers, group)
	require.Equal(t, 2, members)
	require.Equal(t, "range", proto, "the assignor of the mixed group")

	var msgs []kavari.Msg
	for i := range n {
		msgs = append(msgs, &InteropMessage{ID: fmt.Sprintf("%s-%d", prefix, i), Seq: i, Payload: "p"})
	}
	goParts := map[int]bool{}
	for _, p := range k.Health().Assigned[interopTopic] {
		goParts[p] = true
	}
	_, err = k.PublishBatch(ctx, msgs...)
	require.NoError(t, err)
	// The Go member's share: the records on its partitions (librdkafka's
	// CRC32, which the publisher uses too).
	goShare := map[string]bool{}
	for i := range n {
		id := fmt.Sprintf("%s-%d", prefix, i)
		goShare[id] = goParts[crc32Partition(id, partitions)]
	}
	var stable map[string]int // what the Go member handled while both were members
	waitUntil(t, time.Minute, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for id, mine := range goShare {
			if mine && goHandled[id] == 0 {
				return false
			}
		}
		stable = map[string]int{}
		for id, c := range goHandled {
			stable[id] = c
		}
		return true
	}, "the Go member did not handle the records of its partitions: %v", k.Health)

	var py *pyRun
	select {
	case res := <-done:
		py = res.r
	case <-time.After(3 * time.Minute):
		t.Fatal("consume.py did not return")
	}
	require.NotNil(t, py)
	pyHandled := map[string]bool{}
	for _, l := range py.withKey("seq") {
		pyHandled[l["id"].(string)] = true
	}
	t.Logf("handled by the Python member: %d, by the Go member while both were members: %d", len(pyHandled), len(stable))
	require.NotEmpty(t, pyHandled, "the Python member handled nothing:\nstdout:\n%s\nstderr:\n%s", py.Stdout, py.Stderr)
	require.NotEmpty(t, stable, "the Go member handled nothing")
	for i := range n {
		id := fmt.Sprintf("%s-%d", prefix, i)
		require.True(t, pyHandled[id] || stable[id] > 0, "%s handled by neither member", id)
		require.False(t, pyHandled[id] && stable[id] > 0, "%s handled by both members of a stable group", id)
		require.LessOrEqual(t, stable[id], 1, "%s handled twice by the Go member", id)
	}
	require.NotContains(t, k.Health().LastError, "INCONSISTENT_GROUP_PROTOCOL")
}

func waitUntil(t *testing.T, timeout time.Duration, cond func() bool, format string, health func() kavari.Health) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			h := health()
			t.Fatalf(format+" (last error: %s)", h.Assigned, h.LastError)
		}
	}
}

// describeGroup returns the assignor group's generation runs with and its
// member count, once the group is stable.
func describeGroup(t *testing.T, brokers []string, group string) (protocol string, members int) {
	t.Helper()
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		m, err := tr.RoundTrip(ctx, kafka.TCP(brokers...), &describegroups.Request{Groups: []string{group}})
		if err == nil {
			resp := m.(*describegroups.Response)
			if len(resp.Groups) == 1 && resp.Groups[0].ErrorCode == 0 && resp.Groups[0].GroupState == "Stable" {
				return resp.Groups[0].ProtocolData, len(resp.Groups[0].Members)
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("describe group %s: %v", group, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
