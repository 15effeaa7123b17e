package fault

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/kafkaproc"
	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/test/fault/faultmsg"
	"github.com/kavari-go/kavari/test/fault/ledger"
)

// TestStopWhileBrokerDown stops a consuming and publishing Client whose only
// broker is gone — SIGKILLed ("killed": connections refused) or SIGSTOPped
// ("frozen": connections accepted by the kernel, never answered, the nastier
// case) — with PublishAsync messages still queued. Stop(ctx) with a 3 s
// deadline must return (the hang guard is 60 s; the measured duration is
// reported, not asserted tightly), and every PublishAsync callback must run
// exactly once.
func TestStopWhileBrokerDown(t *testing.T) {
	parallelOwnCluster(t)
	for _, mode := range []string{"killed", "frozen"} {
		t.Run(mode, func(t *testing.T) { stopWhileBrokerDown(t, mode) })
	}
}

func stopWhileBrokerDown(t *testing.T, mode string) {
	c := ownCluster(t, 1)
	brokers := c.Brokers()
	led := ledger.ForTest(t, "Stop(3 s deadline) while the only broker is "+map[string]string{"killed": "SIGKILLed", "frozen": "frozen (SIGSTOP)"}[mode])
	led.KafkaVersion(c.Version())
	led.CheckOrder()
	run := testenv.ID("run")
	const n, async = 200, 50

	reg := kavari.NewRegistry()
	if err := kavari.RegisterFuncOn(reg, &faultmsg.Down{}, func(ctx context.Context, m *faultmsg.Down) error {
		handle(ctx, led, run, &m.Body)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	cfg := baseConfig(brokers, reg)
	cfg.Topics.Partitions = 3
	cfg.Publish.Retry = outagePolicy
	k := newKavari(t, cfg)
	ctx := context.Background()
	if err := k.Start(ctx); err != nil {
		t.Fatal(err)
	}
	led.Setup("own 1-node cluster; one in-process Client consuming and publishing; %d messages published and handled, then the broker %s, then %d PublishAsync queued and Stop(ctx 3 s)", n, mode, async)
	mk := func(b faultmsg.Body) kavari.Msg { return &faultmsg.Down{Body: b} }
	publishAll(ctx, k, led, run, mk, plan{to: n, keys: 10, workers: 4}, nil)
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if !led.WaitAllHandled(wctx) {
		t.Fatal("the messages published before the outage were not handled")
	}

	switch mode {
	case "killed":
		if err := c.Kill(0); err != nil {
			t.Fatal(err)
		}
	case "frozen":
		pid := brokerPID(t, c, 0)
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		// Registered after ownCluster's cleanup, so it runs before the
		// cluster is stopped.
		t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
	}
	time.Sleep(time.Second) // let the clients notice

	var mu sync.Mutex
	calls := map[string]int{}
	var callbackErrs []error
	for i := n; i < n+async; i++ {
		b := faultmsg.Body{Run: run, ID: msgID(i), Key: msgKey(i, 10), Seq: msgSeq(i, 10)}
		led.Sent(b.ID, b.Key, b.Seq)
		k.PublishAsync(context.Background(), mk(b), func(r kavari.Receipt, err error) {
			id := r.Message.(*faultmsg.Down).ID
			led.Published(id, err)
			mu.Lock()
			calls[id]++
			if err != nil {
				callbackErrs = append(callbackErrs, err)
			}
			mu.Unlock()
		})
	}

	begin := time.Now()
	stopCtx, stopCancel := context.WithTimeout(ctx, 3*time.Second)
	defer stopCancel()
	stopped := make(chan error, 1)
	go func() { stopped <- k.Stop(stopCtx) }()
	var err error
	select {
	case err = <-stopped:
	case <-time.After(60 * time.Second):
		t.Fatal("Stop(ctx with a 3 s deadline) still running after 60 s with the broker " + mode)
	}
	took := time.Since(begin)
	t.Logf("Stop returned after %s: %v", took.Round(time.Millisecond), err)
	led.Set("stop_returned_after", took)
	led.Set("stop_error", fmt.Sprint(err))
	led.Recovered(took, "Stop(ctx 3 s) duration")

	// Every async callback runs exactly once, soon after Stop.
	waitFor(t, 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(calls) == async
	}, "not every PublishAsync callback ran after Stop")
	time.Sleep(500 * time.Millisecond)
	mu.Lock()
	for id, c := range calls {
		if c != 1 {
			t.Errorf("PublishAsync callback for %s ran %d times", id, c)
		}
	}
	closed := 0
	for _, e := range callbackErrs {
		if errors.Is(e, kavari.ErrClosed) || errors.Is(e, context.Canceled) {
			closed++
		}
	}
	if len(callbackErrs) > 0 {
		led.Set("async_callback_error", callbackErrs[0].Error())
	}
	led.Set("async_callbacks_closed_or_canceled", closed)
	mu.Unlock()
	if _, err := k.Publish(ctx, mk(faultmsg.Body{Run: run, ID: "after-stop", Key: "k", Seq: 0})); !errors.Is(err, kavari.ErrClosed) {
		t.Errorf("Publish after Stop: %v, want ErrClosed", err)
	}
	led.Assert(t)
	led.Note("broker %s; Stop(ctx 3 s) returned after %s (%v); %d PublishAsync callbacks each ran once, %d with an error",
		mode, took.Round(time.Millisecond), err, async, len(callbackErrs))
}

// brokerPID returns the pid of node i's JVM, found by its server.properties
// path on the command line.
func brokerPID(t *testing.T, c *kafkaproc.Cluster, i int) int {
	t.Helper()
	want := []byte(filepath.Join(c.Dir(), fmt.Sprintf("node-%d", i+1), "server.properties"))
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(cmdline, want) && bytes.Contains(cmdline, []byte("kafka.Kafka")) {
			return pid
		}
	}
	t.Fatalf("no process runs %s", want)
	return 0
}
