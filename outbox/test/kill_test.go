package outbox_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testkit"
	"github.com/kavari-go/kavari/outbox"
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
	r := ob.NewRelay(db, outbox.RelayConfig{Workers: 4, BatchSize: 200, PollInterval: 20 * time.Millisecond, Logger: testkit.Logger()})
	_ = r.Run(context.Background())
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
	seen := map[string]bool{}
	for _, rec := range recs {
		require.True(t, ids[rec.id], "unknown ce_id %s", rec.id)
		seen[rec.id] = true
	}
	require.Len(t, seen, len(ids), "committed rows published")
	dups := len(recs) - len(ids)
	t.Logf("%d rows, %d records, %d duplicates (bound: 4 workers × 200)", len(ids), len(recs), dups)
	require.LessOrEqual(t, dups, 4*200)
	checkOrder(t, recs, true)
}
