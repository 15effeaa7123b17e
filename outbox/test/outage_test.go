package outbox_test

import (
	"bufio"
	"context"
	"database/sql"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/kafkaproc"
	"github.com/kavari-go/kavari/internal/testkit"
	"github.com/kavari-go/kavari/outbox"
	"github.com/kavari-go/kavari/test/fault/ledger"
)

// rssOf is the resident set size of process pid, in bytes.
func rssOf(pid int) (int64, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, sc.Err()
}

// Kafka stopped for 60 s (KAVARI_OUTBOX_OUTAGE to change it) while a writer
// goes on: the relay, a process of its own, keeps the rows in the database
// and its memory bounded (RSS sampled every 500 ms and logged), and catches
// up once Kafka is back; nothing is lost and order per key holds.
func TestKafkaOutageRelayRSS(t *testing.T) {
	needEnv(t, kafkaproc.EnvLib, "run through kafkactl (scripts/test.sh), which exports the Kafka jars")
	db := openPG(t)
	outage := 60 * time.Second
	if v, err := time.ParseDuration(os.Getenv("KAVARI_OUTBOX_OUTAGE")); err == nil {
		outage = v
	}
	led := ledger.ForTest(t, "outbox: Kafka stopped under the relay")
	led.Setup("PostgreSQL, 1 broker of its own; a writer (1 row a transaction, 4 keys); the relay a child process (4 workers, batches of 200); the broker killed for %v, then restarted", outage)
	led.CheckOrder()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl, err := kafkaproc.Start(ctx, kafkaproc.Options{Nodes: 1})
	require.NoError(t, err)
	defer cl.Stop()
	e := newEnv(t, outbox.Postgres, db, cl.Brokers())
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperRelayProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "OUTBOX_CHILD_TABLE="+e.table, "OUTBOX_CHILD_PREFIX="+e.prefix, "KAVARI_BROKERS="+strings.Join(cl.Brokers(), ","))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, cmd.Start())
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	// RSS of the relay process, sampled until the test ends.
	var mu sync.Mutex
	var phase string
	peak := map[string]int64{}
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-tick.C:
			}
			rss, err := rssOf(cmd.Process.Pid)
			if err != nil {
				continue
			}
			mu.Lock()
			peak[phase] = max(peak[phase], rss)
			mu.Unlock()
		}
	}()
	setPhase := func(p string) { mu.Lock(); phase = p; mu.Unlock() }

	setPhase("before")
	w := startWriter(e)
	testkit.Eventually(t, time.Minute, func() bool { return w.n.Load() >= 500 && count(t, db, e.table) < 50 }, "the relay did not keep up before the outage")
	require.NoError(t, cl.Kill(0))
	setPhase("outage-first-half")
	atKill := w.n.Load()
	time.Sleep(outage / 2)
	setPhase("outage-second-half")
	time.Sleep(outage - outage/2)
	backlog := count(t, db, e.table)
	written := w.n.Load() - atKill
	require.NoError(t, cl.Restart(0))
	restarted := time.Now()
	setPhase("catching-up")
	testkit.Eventually(t, 3*time.Minute, func() bool { return count(t, db, e.table) < 50 }, "the relay did not catch up")
	caughtUp := time.Since(restarted)
	ids := w.finish()
	testkit.Eventually(t, time.Minute, func() bool { return count(t, db, e.table) == 0 }, "the outbox was not drained")
	close(stopSampling)
	<-sampled

	recs := readAll(t, e.brokers, e.topic)
	seen := map[string]bool{}
	for _, rec := range recs {
		require.True(t, ids[rec.id], "unknown ce_id %s", rec.id)
		seen[rec.id] = true
	}
	require.Len(t, seen, len(ids), "committed rows published")
	checkOrder(t, recs, true)
	mib := func(b int64) float64 { return float64(b) / (1 << 20) }
	mu.Lock()
	t.Logf("outage %v: %d rows written during it, %d waiting at the restart; caught up %v after it; relay RSS peak before %.1f MiB, first half of the outage %.1f MiB, second half %.1f MiB, catching up %.1f MiB; %d rows, %d records",
		outage, written, backlog, caughtUp.Round(time.Millisecond), mib(peak["before"]), mib(peak["outage-first-half"]), mib(peak["outage-second-half"]), mib(peak["catching-up"]), len(ids), len(recs))
	bookLedger(led, ids, recs)
	led.Recovered(caughtUp, "relay caught up after Kafka restarted")
	for p, v := range peak {
		led.Set("relay_rss_peak_mib_"+strings.ReplaceAll(p, "-", "_"), int(mib(v)+0.5))
	}
	led.Set("backlog_at_restart", backlog)
	led.Note("relay RSS peak (a process of its own): %.0f MiB before, %.0f then %.0f MiB during the %v outage (%d rows piled up in PostgreSQL), %.0f MiB catching up",
		mib(peak["before"]), mib(peak["outage-first-half"]), mib(peak["outage-second-half"]), outage, backlog, mib(peak["catching-up"]))
	// Bounded: the rows wait in the database, not in the relay. Its memory
	// in the second half of the outage is that of the first (the backlog
	// doubled meanwhile), within the noise of a garbage-collected heap.
	require.Positive(t, peak["outage-first-half"])
	require.Less(t, peak["outage-second-half"], peak["outage-first-half"]+32<<20, "relay RSS grew during the outage")
	mu.Unlock()
	led.Assert(t)
}

// Kafka stopped for 15 s (KAVARI_OUTBOX_OUTAGE to change it) under a
// writer and the relay, on franz-go, without any crash: no row is
// published twice. Rows whose produce was in flight when the broker died
// fail the Client's publish (its retry policy gives up long before the
// broker is back) with "may have been written": the idempotent producer
// still holds them and writes them once the broker is back, so the relay
// must not publish them again as new records.
func TestKafkaOutageNoDuplicates(t *testing.T) {
	ownTransport(t)
	needEnv(t, kafkaproc.EnvLib, "run through kafkactl (scripts/test.sh), which exports the Kafka jars")
	outage := 15 * time.Second
	if v, err := time.ParseDuration(os.Getenv("KAVARI_OUTBOX_OUTAGE")); err == nil {
		outage = v
	}
	dialects(t, func(t *testing.T, d outbox.Dialect, db *sql.DB) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cl, err := kafkaproc.Start(ctx, kafkaproc.Options{Nodes: 1})
		require.NoError(t, err)
		defer cl.Stop()
		e := newEnv(t, d, db, cl.Brokers(), func(c *kavari.Config) { c.Transport = kavari.FranzGo })
		r := e.relay(outbox.RelayConfig{BatchSize: 100})
		e.run(r)
		w := startWriter(e)
		testkit.Eventually(t, time.Minute, func() bool { return w.n.Load() >= 300 }, "writes before the outage")
		require.NoError(t, cl.Kill(0))
		atKill := w.n.Load()
		time.Sleep(outage)
		h, err := r.Health(context.Background())
		require.NoError(t, err)
		t.Logf("after %v of outage: %+v", outage, h)
		require.True(t, h.KafkaDown)
		require.NoError(t, cl.Restart(0))
		testkit.Eventually(t, time.Minute, func() bool { return w.n.Load() >= atKill+300 }, "writes after the outage")
		ids := w.finish()
		e.drained(r)
		recs := readAll(t, e.brokers, e.topic)
		seen := map[string]bool{}
		for _, rec := range recs {
			require.True(t, ids[rec.id], "unknown ce_id %s", rec.id)
			seen[rec.id] = true
		}
		require.Len(t, seen, len(ids), "committed rows published")
		t.Logf("%d rows committed, %d records (%d duplicates)", len(ids), len(recs), len(recs)-len(ids))
		checkOrder(t, recs, false)
		require.Len(t, recs, len(ids), "duplicates without a crash")
	})
}
