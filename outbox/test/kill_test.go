package outbox_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testkit"
	"github.com/kavari-go/kavari/outbox"
	"github.com/kavari-go/kavari/outbox/internal/relaytest"
	"github.com/kavari-go/kavari/test/fault/ledger"
)

// The child process of TestRelaySIGKILL: a relay on the outbox the
// parent names, running until it is killed.
func TestHelperRelayProcess(t *testing.T) {
	table := os.Getenv("OUTBOX_CHILD_TABLE")
	if table == "" {
		t.Skip("the relay process of TestRelaySIGKILL")
	}
	db := openDSN(t, os.Getenv("KAVARI_PG_DSN"))
	prefix := os.Getenv("OUTBOX_CHILD_PREFIX")
	k := testkit.NewClient(t, kavari.NewRegistry(), strings.Split(os.Getenv("KAVARI_BROKERS"), ","), func(c *kavari.Config) {
		c.Topics.Name = func(topic string) string { return prefix + "-" + topic }
	})
	ob, err := outbox.New(k, outbox.Config{Dialect: outbox.Postgres, Table: table})
	require.NoError(t, err)
	cfg := outbox.RelayConfig{Workers: 4, BatchSize: 200, PollInterval: 20 * time.Millisecond, Logger: testkit.Logger()}
	hold := os.Getenv("OUTBOX_CHILD_HOLD")
	if hold != "" {
		cfg.Workers = 1
	}
	r := ob.NewRelay(db, cfg)
	if hold != "" {
		// TestRelaySIGKILLMidBatch: the third batch, once the broker
		// acknowledged it and before its rows are deleted, is held (its
		// shards stay locked) and its size written to the file hold, for
		// the parent to kill this process with the batch in flight.
		batches := 0
		relaytest.SetBeforeMark(r, func(acked []int64) bool {
			if batches++; batches < 3 {
				return true
			}
			require.NoError(t, os.WriteFile(hold+".tmp", []byte(strconv.Itoa(len(acked))), 0o644))
			require.NoError(t, os.Rename(hold+".tmp", hold))
			select {}
		})
	}
	_ = r.Run(context.Background())
}

// Two relays, one a process SIGKILLed with a batch in flight: the batch
// was acknowledged by the broker and its rows not yet deleted (the worst
// moment), with the other relay running. PostgreSQL releases the dead relay's row locks with its
// connection, the other relay takes over its shards, nothing is lost,
// order per key holds, and the duplicates are exactly that batch.
func TestRelaySIGKILLMidBatch(t *testing.T) {
	db := openPG(t)
	needEnv(t, "KAVARI_BROKERS", "run through kafkactl (scripts/test.sh)")
	e := newEnv(t, outbox.Postgres, db, nil)
	led := ledger.ForTest(t, "outbox: relay SIGKILLed mid-batch")
	led.Setup("PostgreSQL, 1 broker; 8,000 committed rows (16 keys); two relays, one a child process (1 worker: every shard, batches of 200) SIGKILLed once its third batch was acknowledged and before its rows were deleted, the other (4 workers) running beside it and taking over")
	led.CheckOrder()
	ids := writeKeys(e, 16, 500) // 8,000 rows before any relay runs
	hold := filepath.Join(t.TempDir(), "hold")
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperRelayProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "OUTBOX_CHILD_TABLE="+e.table, "OUTBOX_CHILD_PREFIX="+e.prefix, "OUTBOX_CHILD_HOLD="+hold)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, cmd.Start())
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	var inFlight int
	testkit.Eventually(t, 2*time.Minute, func() bool {
		b, err := os.ReadFile(hold)
		if err != nil {
			return false
		}
		inFlight, err = strconv.Atoi(string(b))
		return err == nil
	}, "the child relay never held its third batch")
	// The second relay runs beside the held batch; the child's one worker
	// claimed every shard with rows, so it waits for their locks, which
	// the kill releases.
	r := e.relay(outbox.RelayConfig{Workers: 4, BatchSize: 200})
	e.run(r)
	time.Sleep(500 * time.Millisecond)
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	killed := time.Now()
	_ = cmd.Wait()
	e.drained(r)
	led.Recovered(time.Since(killed), "outbox drained after the kill")
	recs := readAll(t, e.brokers, e.topic)
	seen := map[string]int{}
	for _, rec := range recs {
		require.True(t, ids[rec.id], "unknown ce_id %s", rec.id)
		seen[rec.id]++
	}
	require.Len(t, seen, len(ids), "committed rows published")
	dups := len(recs) - len(ids)
	t.Logf("%d rows, %d records, %d duplicates; the batch in flight at the kill: %d rows", len(ids), len(recs), dups, inFlight)
	bookLedger(led, ids, recs)
	led.Set("batch_in_flight", inFlight)
	led.Note("sent = rows committed to the outbox, handled = distinct ce_ids on the topic; duplicates %d = the batch in flight at the kill (%d rows, acknowledged, not deleted)", dups, inFlight)
	require.Equal(t, inFlight, dups, "duplicates are exactly the batch in flight")
	require.Positive(t, inFlight)
	checkOrder(t, recs, true)
	led.Assert(t)
}

// Two relays, one a process SIGKILLed while it publishes: PostgreSQL
// releases its row locks with its connections, the other relay takes
// over, nothing is lost, order per key holds, and the duplicates are at
// most the batches the killed relay had in flight (4 workers × 200).
func TestRelaySIGKILL(t *testing.T) {
	db := openPG(t)
	needEnv(t, "KAVARI_BROKERS", "run through kafkactl (scripts/test.sh)")
	e := newEnv(t, outbox.Postgres, db, nil)
	ids := writeKeys(e, 16, 500) // 8,000 rows before any relay runs
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperRelayProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "OUTBOX_CHILD_TABLE="+e.table, "OUTBOX_CHILD_PREFIX="+e.prefix)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, cmd.Start())
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	testkit.Eventually(t, time.Minute, func() bool { return count(t, db, e.table) < len(ids)-1000 }, "the child relay published nothing")
	r := e.relay(outbox.RelayConfig{Workers: 4, BatchSize: 200})
	e.run(r)
	testkit.Eventually(t, time.Minute, func() bool { return count(t, db, e.table) < len(ids)-3000 }, "the relays stalled")
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	e.drained(r)
	recs := readAll(t, e.brokers, e.topic)
	checkPublished(t, recs, ids)
	dups := len(recs) - len(ids)
	t.Logf("%d rows, %d records, %d duplicates (bound: 4 workers × 200)", len(ids), len(recs), dups)
	require.LessOrEqual(t, dups, 4*200)
	checkOrder(t, recs, true)
}
