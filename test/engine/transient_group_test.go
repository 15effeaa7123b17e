package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/kavaritest"
)

var transientCode int16 = -1

type transientMsg struct {
	kavari.Message `kavari:"topic=kavari-test-transient,key=ID"`
	ID             string `json:"id"`
}

// transientRun counts, per record id, how often it was handed to the
// handler, and how many handler contexts were cancelled.
type transientRun struct {
	mu        sync.Mutex
	delivered map[string]int
	completed map[string]int
	cancelled atomic.Int64
	started   chan string
}

func (r *transientRun) count(m map[string]int) (n, dup int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range m {
		n++
		dup += c - 1
	}
	return n, dup
}

// transientKavari starts a franz-go Client on a one-partition embedded
// broker whose handler takes slow for ids starting with "slow".
func transientKavari(t *testing.T, slow time.Duration) (*kavaritest.Broker, *kavari.Client, *transientRun) {
	t.Helper()
	b := kavaritest.NewBroker(t, kavaritest.Topics("kavari-test-transient", "kavari-test-transient.dlq"), kavaritest.Partitions(1))
	run := &transientRun{delivered: map[string]int{}, completed: map[string]int{}, started: make(chan string, 16)}
	reg := kavari.NewRegistry()
	require.NoError(t, kavari.RegisterFuncOn(reg, &transientMsg{}, func(ctx context.Context, m *transientMsg) error {
		run.mu.Lock()
		run.delivered[m.ID]++
		run.mu.Unlock()
		if strings.HasPrefix(m.ID, "slow") {
			run.started <- m.ID
			select {
			case <-time.After(slow):
			case <-ctx.Done():
				run.cancelled.Add(1)
				return ctx.Err()
			}
		}
		run.mu.Lock()
		run.completed[m.ID]++
		run.mu.Unlock()
		return nil
	}))
	k := newKavari(t, reg, b.Addrs(), func(c *kavari.Config) {
		c.Transport = kavari.FranzGo
		c.Consume.GroupID = testenv.ID("g")
		c.Consume.MaxInFlight = 4
		c.Consume.CommitInterval = time.Hour // only revokes and Stop commit
	})
	require.NoError(t, k.Start(context.Background()))
	eventually(t, 60*time.Second, func() bool { return len(k.Health().Assigned["kavari-test-transient"]) == 1 }, "assigned")
	return b, k, run
}

// failHeartbeats makes the broker answer every Heartbeat with code while
// fail is set; it counts the heartbeats it failed.
func failHeartbeats(b *kavaritest.Broker, fail *atomic.Bool, failed *atomic.Int64, code int16) {
	b.Cluster().ControlKey(int16(kmsg.Heartbeat), func(req kmsg.Request) (kmsg.Response, error, bool) {
		b.Cluster().KeepControl()
		if !fail.Load() {
			return nil, nil, false
		}
		failed.Add(1)
		if code < 0 {
			return nil, errFault, true // closes the connection
		}
		resp := req.(*kmsg.HeartbeatRequest).ResponseKind().(*kmsg.HeartbeatResponse)
		resp.ErrorCode = code
		return resp, nil, true
	})
}

// TestFranzTransientGroupErrorDrainsInsteadOfCancelling: a group error that
// does not end the member's session (here the coordinator answers two
// seconds of heartbeats with GROUP_AUTHORIZATION_FAILED, which kgo does not
// retry and reports as a group session error, as it does a heartbeat that
// failed on a dropped connection) is not a lost partition: the running
// handler is not cancelled, the completed records are committed before the
// member rejoins, and nothing is handled twice. kgo calls OnPartitionsLost
// for it; the adapter used to pass that on as the engine's Lost, which
// cancelled the handler and abandoned the uncommitted work.
func TestFranzTransientGroupErrorDrainsInsteadOfCancelling(t *testing.T) {
	b, k, run := transientKavari(t, 3*time.Second)
	ctx := context.Background()
	for i := 0; i < 10; i++ {
		_, err := k.Publish(ctx, &transientMsg{ID: fmt.Sprintf("a%d", i)})
		require.NoError(t, err)
	}
	eventually(t, 30*time.Second, func() bool { n, _ := run.count(run.completed); return n == 10 }, "first records handled")
	_, err := k.Publish(ctx, &transientMsg{ID: "slow"})
	require.NoError(t, err)
	select {
	case <-run.started:
	case <-time.After(30 * time.Second):
		t.Fatal("slow handler did not start")
	}
	// Records completed while the slow one runs are committed only by a
	// revoke (CommitInterval is an hour) and sit behind it anyway.
	for i := 0; i < 10; i++ {
		_, err := k.Publish(ctx, &transientMsg{ID: fmt.Sprintf("b%d", i)})
		require.NoError(t, err)
	}
	var fail atomic.Bool
	var failed atomic.Int64
	failHeartbeats(b, &fail, &failed, transientCode)
	fail.Store(true)
	time.Sleep(2 * time.Second)
	fail.Store(false)

	for i := 0; i < 10; i++ {
		_, err := k.Publish(ctx, &transientMsg{ID: fmt.Sprintf("c%d", i)})
		require.NoError(t, err)
	}
	eventually(t, 60*time.Second, func() bool { n, _ := run.count(run.completed); return n == 31 }, "all records handled")
	time.Sleep(2 * time.Second) // a redelivery, if any, comes within it (fetch wait 500 ms)
	_, dup := run.count(run.delivered)
	require.Greater(t, failed.Load(), int64(0), "no heartbeat failed: the test tested nothing")
	assert.Equal(t, int64(0), run.cancelled.Load(), "handlers cancelled")
	assert.Equal(t, 0, dup, "records delivered more than once: %v", run.delivered)
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	assert.NoError(t, k.Stop(sctx))
}

// breakGroup makes the broker close the connection of every group request
// (coordinator lookup, join, sync, heartbeat, commit, offset fetch, leave)
// while broken is set: the member cannot reach its coordinator.
func breakGroup(b *kavaritest.Broker, broken *atomic.Bool) {
	for _, key := range []kmsg.Key{kmsg.FindCoordinator, kmsg.JoinGroup, kmsg.SyncGroup, kmsg.Heartbeat, kmsg.OffsetCommit, kmsg.OffsetFetch, kmsg.LeaveGroup} {
		b.Cluster().ControlKey(int16(key), func(kmsg.Request) (kmsg.Response, error, bool) {
			b.Cluster().KeepControl()
			if !broken.Load() {
				return nil, nil, false
			}
			return nil, errFault, true
		})
	}
}

// TestFranzStopReportsWorkUncommittedWhenTheSessionIsLost: the coordinator
// becomes unreachable for good after a record completed and while another
// runs (CommitInterval is an hour: neither is committed). The session
// expires, so the partition is lost; the running handler is not cancelled
// before that (the member cannot know its session is gone earlier), and Stop
// reports the completed records that were never committed
// (ErrCommitFailed), as it does on kafka-go. It used to return nil: the lost
// partition's completed work was dropped without a word (and the running
// handler was cancelled at the first failed heartbeat).
func TestFranzStopReportsWorkUncommittedWhenTheSessionIsLost(t *testing.T) {
	b, k, run := transientKavari(t, 2*time.Second)
	ctx := context.Background()
	_, err := k.Publish(ctx, &transientMsg{ID: "a"})
	require.NoError(t, err)
	eventually(t, 30*time.Second, func() bool { n, _ := run.count(run.completed); return n == 1 }, "first record handled")
	_, err = k.Publish(ctx, &transientMsg{ID: "slow"})
	require.NoError(t, err)
	select {
	case <-run.started:
	case <-time.After(30 * time.Second):
		t.Fatal("slow handler did not start")
	}
	var broken atomic.Bool
	broken.Store(true)
	breakGroup(b, &broken)
	// The partition is released once the member gives its session up
	// (within the 10 s session timeout of the last answered heartbeat).
	eventually(t, 60*time.Second, func() bool { return len(k.Health().Assigned["kavari-test-transient"]) == 0 }, "partition never released")
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	err = k.Stop(sctx)
	t.Logf("Stop: %v", err)
	assert.Equal(t, int64(0), run.cancelled.Load(), "handlers cancelled before the session could have expired")
	require.Error(t, err, "Stop after completed work could not be committed")
	assert.True(t, errors.Is(err, kavari.ErrCommitFailed), "Stop: %v", err)
	var ce *kavari.CommitError
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, int64(2), ce.Offsets["kavari-test-transient"][0], "both records completed, neither committed")
}

// TestFranzRealLossStillCancels is the other half of the rule: when the
// coordinator says the member is gone (heartbeats answered
// UNKNOWN_MEMBER_ID), its partitions are lost at once — the running handler
// is cancelled (another member may own its record already), without
// waiting for the session timeout or the handler.
func TestFranzRealLossStillCancels(t *testing.T) {
	b, k, run := transientKavari(t, 30*time.Second)
	ctx := context.Background()
	_, err := k.Publish(ctx, &transientMsg{ID: "slow"})
	require.NoError(t, err)
	select {
	case <-run.started:
	case <-time.After(30 * time.Second):
		t.Fatal("slow handler did not start")
	}
	var fail atomic.Bool
	var failed atomic.Int64
	failHeartbeats(b, &fail, &failed, 25) // UNKNOWN_MEMBER_ID
	fail.Store(true)
	// A hang guard well below the handler's 30 s: the loss is known at the
	// first failed heartbeat (every 500 ms).
	eventually(t, 20*time.Second, func() bool { return run.cancelled.Load() > 0 }, "the handler of a lost partition was not cancelled")
	fail.Store(false)
}
