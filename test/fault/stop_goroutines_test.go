package fault

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/test/fault/faultmsg"
	"github.com/kavari-go/kavari/test/fault/ledger"
)

// stopGoroutineBound is how soon after Stop returns the goroutines kavari
// started are gone, as documented on Client.Stop.
const stopGoroutineBound = 2 * time.Second

// TestStopLeavesNoGoroutines freezes (SIGSTOP) the only broker under a
// consuming Client and stops it with a 3 s deadline. Stop returns by its
// deadline; then every goroutine kavari started (consumer group, partition
// readers and their connections, workers, timers) must be gone within
// stopGoroutineBound, compared with a goroutine profile taken before New.
// The broker stays frozen the whole time, so no network timeout helps.
func TestStopLeavesNoGoroutines(t *testing.T) {
	c := ownCluster(t, 1)
	brokers := c.Brokers()
	led := ledger.ForTest(t, "goroutines left after Stop(3 s) with the only broker frozen (SIGSTOP)")
	led.KafkaVersion(c.Version())
	run := testenv.ID("run")
	const n = 100
	led.Setup("own 1-node cluster; one in-process Client consuming and publishing; %d messages handled, broker SIGSTOPped, Stop(ctx 3 s); goroutines with kavari or kafka-go frames compared with a profile taken before New", n)

	before := goroutineIDs()
	reg := kavari.NewRegistry()
	if err := kavari.RegisterFuncOn(reg, &faultmsg.Down{}, func(ctx context.Context, m *faultmsg.Down) error {
		handle(ctx, led, run, &m.Body)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	cfg := baseConfig(brokers, reg)
	cfg.Topics.Partitions = 3
	k := newKavari(t, cfg)
	ctx := context.Background()
	if err := k.Start(ctx); err != nil {
		t.Fatal(err)
	}
	mk := func(b faultmsg.Body) kavari.Msg { return &faultmsg.Down{Body: b} }
	publishAll(ctx, k, led, run, mk, plan{to: n, keys: 10, workers: 4}, nil)
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if !led.WaitAllHandled(wctx) {
		t.Fatal("the messages were not handled")
	}
	running := len(kavariGoroutines(before))
	led.Set("goroutines_while_running", running)

	pid := brokerPID(t, c, 0)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
	time.Sleep(time.Second)

	stopCtx, stopCancel := context.WithTimeout(ctx, 3*time.Second)
	defer stopCancel()
	begin := time.Now()
	stopped := make(chan error, 1)
	go func() { stopped <- k.Stop(stopCtx) }()
	var err error
	select {
	case err = <-stopped:
	case <-time.After(60 * time.Second):
		t.Fatal("Stop(ctx 3 s) still running after 60 s with the broker frozen")
	}
	returned := time.Now()
	t.Logf("Stop returned after %s: %v", returned.Sub(begin).Round(time.Millisecond), err)
	led.Set("stop_returned_after", returned.Sub(begin).Round(time.Millisecond).String())
	atReturn := kavariGoroutines(before)
	led.Set("goroutines_at_stop_return", len(atReturn))
	t.Logf("%d goroutine(s) started by kavari running when Stop returned (%d while consuming)", len(atReturn), running)

	// Measure how long they take to go (hang guard 60 s), then judge.
	var left []string
	logged := false
	for {
		left = kavariGoroutines(before)
		if !logged && time.Since(returned) > stopGoroutineBound {
			logged = true
			t.Logf("%d left %s after Stop returned:\n%s", len(left), stopGoroutineBound, summarize(left))
		}
		if len(left) == 0 || time.Since(returned) > 60*time.Second {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	gone := time.Since(returned)
	if len(left) > 0 {
		t.Errorf("%d goroutine(s) started by kavari still running 60 s after Stop returned:\n%s", len(left), summarize(left))
		led.Set("goroutines_60s_after_stop", len(left))
		return
	}
	led.Set("goroutines_gone_after", gone.Round(time.Millisecond).String())
	led.Recovered(gone, "goroutines gone after Stop returned")
	t.Logf("every goroutine kavari started was gone %s after Stop returned", gone.Round(time.Millisecond))
	if gone > stopGoroutineBound {
		t.Errorf("kavari's goroutines took %s after Stop returned to go, more than the documented %s", gone.Round(time.Millisecond), stopGoroutineBound)
	}
	led.Assert(t)
}

// goroutineStacks returns the stacks of every goroutine, keyed by id.
func goroutineStacks() map[string]string {
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
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		s := string(g)
		if id, _, ok := strings.Cut(strings.TrimPrefix(s, "goroutine "), " "); ok {
			out[id] = s
		}
	}
	return out
}

func goroutineIDs() map[string]bool {
	ids := map[string]bool{}
	for id := range goroutineStacks() {
		ids[id] = true
	}
	return ids
}

// kavariGoroutines returns the stacks of goroutines not in before that run
// kavari's or kafka-go's code.
func kavariGoroutines(before map[string]bool) []string {
	var out []string
	for id, s := range goroutineStacks() {
		if before[id] {
			continue
		}
		if strings.Contains(s, "github.com/kavari-go/kavari.") || strings.Contains(s, "github.com/segmentio/kafka-go") {
			out = append(out, s)
		}
	}
	return out
}

// summarize counts stacks by their first kavari or kafka-go frame and their
// creator.
func summarize(stacks []string) string {
	count := map[string]int{}
	for _, s := range stacks {
		key := "?"
		for _, line := range strings.Split(s, "\n") {
			if strings.Contains(line, "github.com/kavari-go/kavari.") || strings.Contains(line, "github.com/segmentio/kafka-go") {
				key = strings.TrimSpace(line)
				break
			}
		}
		if i := strings.Index(s, "created by "); i >= 0 {
			created, _, _ := strings.Cut(s[i:], "\n")
			key += " | " + created
		}
		count[key]++
	}
	var lines []string
	for k, v := range count {
		lines = append(lines, fmt.Sprintf("%5d  %s", v, k))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}
