package outbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/kafkaproc"
	"github.com/kavari-go/kavari/internal/pgproc"
	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/internal/testkit"
	"github.com/kavari-go/kavari/outbox"
	"github.com/kavari-go/kavari/outbox/internal/relaytest"
)

// ownTransport is for a test that sets its client's transport itself: it
// runs once, in the kafka-go pass of scripts/test.sh (KAVARI_TRANSPORT
// unset or kafka-go), and is skipped in the franz-go pass, which would run
// the same test again.
func ownTransport(t *testing.T) {
	t.Helper()
	if tr := testenv.Transport(); tr != "kafka-go" {
		t.Skipf("sets its transport itself; runs in the kafka-go pass (this is %s)", tr)
	}
}

// needEnv returns the variable's value; without it the test is skipped in
// -short runs and fails otherwise.
func needEnv(t *testing.T, name, how string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		if testing.Short() {
			t.Skip("needs " + name + " (" + how + ")")
		}
		t.Fatal(name + " is unset: " + how + " (with -short the test is skipped)")
	}
	return v
}

// writer writes one message per transaction, keys k0..k3 in turn with a
// sequence number per key, until stop is called; failed transactions
// (the database down) are retried. It returns the ce_ids committed.
type writer struct {
	mu    sync.Mutex
	ids   map[string]bool
	n     atomic.Int64
	stop  chan struct{}
	done  chan struct{}
	fails atomic.Int64
}

func startWriter(e *env) *writer {
	w := &writer{ids: map[string]bool{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		seq := 0
		for {
			select {
			case <-w.stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			ids, err := e.tryWrite(ctx, false, &OrderPlaced{OrderID: fmt.Sprintf("k%d", seq%4), Seq: seq, Amount: 1})
			cancel()
			if err != nil {
				w.fails.Add(1)
				time.Sleep(20 * time.Millisecond)
				continue
			}
			w.mu.Lock()
			w.ids[ids[0]] = true
			w.mu.Unlock()
			w.n.Add(1)
			seq++
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return w
}

func (w *writer) finish() map[string]bool {
	close(w.stop)
	<-w.done
	return w.ids
}

// Kafka is killed while writers go on and the relay runs, then restarted:
// nothing is lost, the relay reports Kafka down, backs off and catches up,
// and order per key holds.
func TestKafkaOutage(t *testing.T) {
	needEnv(t, kafkaproc.EnvLib, "run through kafkactl (scripts/test.sh), which exports the Kafka jars")
	dialects(t, func(t *testing.T, d outbox.Dialect, db *sql.DB) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cl, err := kafkaproc.Start(ctx, kafkaproc.Options{Nodes: 1})
		require.NoError(t, err)
		defer cl.Stop()
		e := newEnv(t, d, db, cl.Brokers())
		r := e.relay(outbox.RelayConfig{BatchSize: 100})
		e.run(r)
		w := startWriter(e)
		testkit.Eventually(t, time.Minute, func() bool { return w.n.Load() >= 100 }, "writes before the outage")
		require.NoError(t, cl.Kill(0))
		atKill := w.n.Load()
		var h outbox.Health
		testkit.Eventually(t, 2*time.Minute, func() bool {
			h, _ = r.Health(context.Background())
			return h.KafkaDown && w.n.Load() >= atKill+200
		}, "the relay never reported Kafka down with 200 rows written during the outage: %+v", &h)
		t.Logf("during the outage: %+v", h)
		require.Positive(t, h.Backlog)
		require.NoError(t, cl.Restart(0))
		testkit.Eventually(t, time.Minute, func() bool { return w.n.Load() >= atKill+300 }, "writes after the outage")
		ids := w.finish()
		h = e.drained(r)
		require.False(t, h.KafkaDown)
		recs := readAll(t, e.brokers, e.topic)
		checkPublished(t, recs, ids)
		t.Logf("%d rows committed, %d records (%d duplicates)", len(ids), len(recs), len(recs)-len(ids))
		checkOrder(t, recs, true)
	})
}

// PostgreSQL is killed under the relay and the writers, then restarted:
// nothing committed is lost.
func TestPostgresRestart(t *testing.T) {
	home := needEnv(t, pgproc.EnvHome, "run through pgctl (scripts/test.sh), which exports the PostgreSQL binaries")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv, err := pgproc.Start(ctx, pgproc.Options{Home: home})
	require.NoError(t, err)
	defer srv.Stop()
	db := openDSN(t, srv.DSN)
	e := newEnv(t, outbox.Postgres, db, nil)
	r := e.relay(outbox.RelayConfig{BatchSize: 50})
	e.run(r)
	w := startWriter(e)
	testkit.Eventually(t, time.Minute, func() bool { return w.n.Load() >= 100 }, "writes before the restart")
	srv.Kill()
	atKill := w.n.Load()
	testkit.Eventually(t, time.Minute, func() bool { return w.fails.Load() > 0 }, "writes kept succeeding with PostgreSQL killed")
	require.NoError(t, srv.Restart(ctx))
	testkit.Eventually(t, time.Minute, func() bool { return w.n.Load() >= atKill+100 }, "writes after the restart")
	ids := w.finish()
	e.drained(r)
	recs := readAll(t, e.brokers, e.topic)
	checkPublished(t, recs, ids)
	t.Logf("%d rows committed, %d records (%d duplicates)", len(ids), len(recs), len(recs)-len(ids))
	checkOrder(t, recs, true)
}

// The proof: orders from 8 concurrent writers (20,000 with
// KAVARI_LONG=1, 4,000 otherwise), 10 % of the transactions rolled back,
// two relays of which one dies between an acknowledgement and its marking
// while the writers go on: every committed order is published, none of a
// rolled-back one, order per key holds, and the duplicates are exactly the
// batch in flight at the crash.
func TestManyWritersRollbacksRelayCrash(t *testing.T) {
	total := 4000
	if os.Getenv("KAVARI_LONG") != "" {
		total = 20000
	}
	dialects(t, func(t *testing.T, d outbox.Dialect, db *sql.DB) {
		e := newEnv(t, d, db, nil)
		var crashed []int64
		var crashOnce sync.Once
		r1 := e.relay(outbox.RelayConfig{Workers: 2, BatchSize: 100})
		// Relay 1 crashes at its crashAt-th published batch; relay 2
		// starts once relay 1 published the batch before it.
		const crashAt = 5
		var batches atomic.Int64
		ready := make(chan struct{})
		relaytest.SetBeforeMark(r1, func(acked []int64) bool {
			if len(acked) == 0 {
				return true
			}
			n := batches.Add(1)
			if n == crashAt-1 {
				close(ready)
			}
			if n < crashAt {
				return true
			}
			ok := true
			crashOnce.Do(func() { crashed, ok = append([]int64(nil), acked...), false })
			return ok
		})
		r2 := e.relay(outbox.RelayConfig{Workers: 2, BatchSize: 100})
		_, done1 := e.run(r1)
		var mu sync.Mutex
		committed, rolledBack := map[string]bool{}, map[string]bool{}
		var wg sync.WaitGroup
		const writers = 8
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Writer w owns keys w, w+8, w+16, ... (8 keys each), so a
				// key's sequence is its commit order.
				seq := map[int]int{}
				for i := 0; i < total/writers; i++ {
					key := w + writers*(i%8)
					rollback := i%10 == 9
					s := seq[key]
					ids := e.write(rollback, &OrderPlaced{OrderID: fmt.Sprintf("c%d", key), Seq: s, Amount: 1})
					mu.Lock()
					if rollback {
						rolledBack[ids[0]] = true
					} else {
						committed[ids[0]] = true
						seq[key] = s + 1
					}
					mu.Unlock()
				}
			}()
		}
		// The second relay starts once the first published the batch
		// before its crash: started together, or after the first's first
		// batch, the second could take every shard (on SQLite, where the
		// writers and both relays take turns at one database lock, it
		// did in a reliability run) and the first never reach its crash.
		select {
		case <-ready:
		case <-time.After(5 * time.Minute): // a guard against a hang, not a measure
			t.Fatalf("relay 1 published %d batches of %d", batches.Load(), crashAt-1)
		}
		e.run(r2)
		wg.Wait()
		select {
		case err := <-done1:
			require.ErrorIs(t, err, relaytest.ErrCrashed)
		case <-time.After(5 * time.Minute): // a guard against a hang, not a measure
			t.Fatalf("relay 1 never reached its crash point (%d batches)", batches.Load())
		}
		e.drained(r2)
		recs := readAll(t, e.brokers, e.topic)
		seen := map[string]bool{}
		for _, rec := range recs {
			require.False(t, rolledBack[rec.id], "ce_id %s of a rolled-back transaction was published", rec.id)
			require.True(t, committed[rec.id], "unknown ce_id %s", rec.id)
			seen[rec.id] = true
		}
		require.Len(t, seen, len(committed), "committed orders published")
		t.Logf("%d committed, %d rolled back, %d records, %d duplicates, batch in flight at the crash: %d", len(committed), len(rolledBack), len(recs), len(recs)-len(committed), len(crashed))
		require.Equal(t, len(crashed), len(recs)-len(committed))
		checkOrder(t, recs, true)
	})
}

// A batch whose rows are partly parked (a corrupt row) and partly not
// published (Kafka down, a failure that left nothing in flight): the
// parked row goes to the dead table and the others stay in the outbox
// (on PostgreSQL the claim deleted them: they are put back), to be
// published once Kafka is back, in order.
func TestPartlyParkedBatchKeepsTheRest(t *testing.T) {
	ownTransport(t)
	needEnv(t, kafkaproc.EnvLib, "run through kafkactl (scripts/test.sh), which exports the Kafka jars")
	dialects(t, func(t *testing.T, d outbox.Dialect, db *sql.DB) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cl, err := kafkaproc.Start(ctx, kafkaproc.Options{Nodes: 1})
		require.NoError(t, err)
		defer cl.Stop()
		// kafka-go: a refused dial fails a publish without leaving a
		// write in flight, so the relay lets the batch go.
		e := newEnv(t, d, db, cl.Brokers(), func(c *kavari.Config) { c.Transport = kavari.KafkaGo })
		ids := e.write(false, &OrderPlaced{OrderID: "o-1", Seq: 1, Amount: 1}, &OrderPlaced{OrderID: "o-1", Seq: 2, Amount: 1})
		_, err = db.Exec(e.q("INSERT INTO "+e.table+" (shard, topic, msg_key, value, headers, ce_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)"),
			7, e.topic, []byte("o-1"), []byte("{}"), "{not json", "x", time.Now().UnixMicro())
		require.NoError(t, err)
		ids = append(ids, e.write(false, &OrderPlaced{OrderID: "o-1", Seq: 3, Amount: 1})...)
		require.NoError(t, cl.Kill(0))
		r := e.relay(outbox.RelayConfig{Workers: 1})
		e.run(r)
		var h outbox.Health
		testkit.Eventually(t, time.Minute, func() bool {
			h, _ = r.Health(context.Background())
			return h.Dead == 1 && h.KafkaDown
		}, "the corrupt row was not parked with Kafka down: %+v", &h)
		require.Equal(t, 3, count(t, db, e.table), "rows not published stay in the outbox")
		require.NoError(t, cl.Restart(0))
		e.drained(r)
		recs := readAll(t, e.brokers, e.topic)
		require.Len(t, recs, 3)
		for i, rec := range recs {
			require.Equal(t, ids[i], rec.id)
			require.Equal(t, i+1, rec.seq)
		}
	})
}
