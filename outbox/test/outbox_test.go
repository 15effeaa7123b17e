package outbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testkit"
	"github.com/kavari-go/kavari/outbox"
	"github.com/kavari-go/kavari/outbox/internal/relaytest"
)

func count(t *testing.T, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, table string) int {
	t.Helper()
	var n int
	require.NoError(t, q.QueryRowContext(context.Background(), "SELECT COUNT(*) FROM "+table).Scan(&n))
	return n
}

// Committed transactions are published, with the ce_id Publish returned
// and the headers, key and value Client.Publish would send; rolled-back
// ones never are.
func TestCommitPublishesRollbackDoesNot(t *testing.T) {
	dialects(t, func(t *testing.T, d outbox.Dialect, db *sql.DB) {
		e := newEnv(t, d, db, nil)
		committed := map[string]int{}
		rolledBack := map[string]bool{}
		for i := 0; i < 60; i++ {
			m := &OrderPlaced{OrderID: fmt.Sprintf("o-%d", i%7), Seq: i, Amount: int64(i + 1)}
			if i%3 == 2 {
				for _, id := range e.write(true, m) {
					rolledBack[id] = true
				}
				continue
			}
			committed[e.write(false, m)[0]] = i
		}
		r := e.relay(outbox.RelayConfig{})
		e.run(r)
		h := e.drained(r)
		require.Equal(t, int64(len(committed)), h.Published)
		recs := readAll(t, e.brokers, e.topic)
		require.Len(t, recs, len(committed))
		for _, rec := range recs {
			seq, ok := committed[rec.id]
			require.True(t, ok, "published ce_id %s was not committed (rolled back: %v)", rec.id, rolledBack[rec.id])
			require.Equal(t, seq, rec.seq)
			require.Equal(t, fmt.Sprintf("o-%d", seq%7), rec.key)
			require.Equal(t, "OrderPlaced", testkit.Header(rec.msg, kavari.HeaderMsgType))
			require.Equal(t, "application/json", testkit.Header(rec.msg, kavari.HeaderContentType))
			require.NotEmpty(t, testkit.Header(rec.msg, kavari.HeaderTime))
		}
		checkOrder(t, recs, false)
	})
}

// An invalid message is refused inside the transaction and inserts
// nothing; a batch with one invalid message inserts none of them.
func TestInvalidRefusedInTransaction(t *testing.T) {
	dialects(t, func(t *testing.T, d outbox.Dialect, db *sql.DB) {
		e := newEnv(t, d, db, nil)
		ctx := context.Background()
		tx, err := db.BeginTx(ctx, nil)
		require.NoError(t, err)
		defer tx.Rollback()
		_, err = e.ob.Publish(ctx, tx, &OrderPlaced{OrderID: "o-1", Amount: 0})
		require.ErrorIs(t, err, kavari.ErrInvalid)
		_, err = e.ob.PublishBatch(ctx, tx, &OrderPlaced{OrderID: "o-1", Amount: 1}, &OrderPlaced{Amount: 2})
		var be *kavari.BatchError
		require.ErrorAs(t, err, &be)
		require.True(t, be.Refused)
		require.Len(t, be.Failed, 1)
		require.Equal(t, 1, be.Failed[0].Index)
		require.ErrorIs(t, err, kavari.ErrInvalid)
		require.Equal(t, 0, count(t, tx, e.table), "rows inserted by refused publishes")
		// The transaction is still usable: a valid message goes in.
		id, err := e.ob.Publish(ctx, tx, &OrderPlaced{OrderID: "o-1", Amount: 1})
		require.NoError(t, err)
		require.NotEmpty(t, id)
		require.Equal(t, 1, count(t, tx, e.table))
	})
}

// writeKeys writes perKey messages for each of keys keys, concurrently
// (one writer per key, batches of 1 to 3 messages per transaction) and
// returns the ce_ids committed.
func writeKeys(e *env, keys, perKey int) map[string]bool {
	var mu sync.Mutex
	ids := map[string]bool{}
	var wg sync.WaitGroup
	for k := 0; k < keys; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := 0; s < perKey; {
				n := min(1+s%3, perKey-s)
				msgs := make([]kavari.Msg, n)
				for i := range msgs {
					msgs[i] = &OrderPlaced{OrderID: fmt.Sprintf("k%d", k), Seq: s + i, Amount: 1}
				}
				got := e.write(false, msgs...)
				mu.Lock()
				for _, id := range got {
					ids[id] = true
				}
				mu.Unlock()
				s += n
			}
		}()
	}
	wg.Wait()
	return ids
}

// Two relays (each with its own client) share the outbox while writers
// go on: every row is published once, in order per key.
func TestPerKeyOrderTwoRelays(t *testing.T) {
	dialects(t, func(t *testing.T, d outbox.Dialect, db *sql.DB) {
		e := newEnv(t, d, db, nil)
		e2 := *e
		e2.client = testkit.NewClient(t, kavari.NewRegistry(), e.brokers, func(c *kavari.Config) {
			c.Topics.Name = func(topic string) string { return e.prefix + "-" + topic }
		})
		ob2, err := outbox.New(e2.client, outbox.Config{Dialect: d, Table: e.table})
		require.NoError(t, err)
		e2.ob = ob2
		r1 := e.relay(outbox.RelayConfig{Workers: 3, BatchSize: 50})
		r2 := e2.relay(outbox.RelayConfig{Workers: 3, BatchSize: 50})
		e.run(r1)
		e.run(r2)
		ids := writeKeys(e, 8, 150)
		e.drained(r1)
		h1, _ := r1.Health(context.Background())
		h2, _ := r2.Health(context.Background())
		t.Logf("relay 1 published %d, relay 2 %d", h1.Published, h2.Published)
		require.Equal(t, int64(len(ids)), h1.Published+h2.Published)
		recs := readAll(t, e.brokers, e.topic)
		require.Len(t, recs, len(ids), "records on the topic (exactly once without crashes)")
		for _, r := range recs {
			require.True(t, ids[r.id], "unknown ce_id %s", r.id)
		}
		checkOrder(t, recs, false)
	})
}

// A relay that dies after the broker acknowledged a batch and before it
// marked the rows leaves them to the next relay, which publishes them again
// with the same ce_ids; nothing is lost and order per key holds.
func TestCrashBetweenAckAndMark(t *testing.T) {
	dialects(t, func(t *testing.T, d outbox.Dialect, db *sql.DB) {
		e := newEnv(t, d, db, nil)
		ids := writeKeys(e, 4, 40)
		r1 := e.relay(outbox.RelayConfig{Workers: 1, BatchSize: 25})
		var crashed []int64
		relaytest.SetBeforeMark(r1, func(acked []int64) bool {
			if len(acked) == 0 {
				return true
			}
			crashed = append([]int64(nil), acked...)
			return false
		})
		_, done := e.run(r1)
		require.ErrorIs(t, <-done, relaytest.ErrCrashed)
		require.NotEmpty(t, crashed)
		require.Equal(t, len(ids), count(t, db, e.table), "rows left by the crashed relay")
		r2 := e.relay(outbox.RelayConfig{})
		e.run(r2)
		e.drained(r2)
		recs := readAll(t, e.brokers, e.topic)
		perID := map[string]int{}
		for _, r := range recs {
			require.True(t, ids[r.id], "unknown ce_id %s", r.id)
			perID[r.id]++
		}
		require.Len(t, perID, len(ids), "every committed row published")
		dups := len(recs) - len(ids)
		t.Logf("%d rows, %d records, %d duplicates (batch in flight at the crash: %d rows)", len(ids), len(recs), dups, len(crashed))
		require.Equal(t, len(crashed), dups, "duplicates are exactly the batch in flight")
		checkOrder(t, recs, true)
	})
}

// A claim takes the first shards with rows from where its search starts,
// then from shard 0: started at the last shard, one worker's first batch
// holds the rows of every shard.
func TestClaimWrapsAroundTheShards(t *testing.T) {
	dialects(t, func(t *testing.T, d outbox.Dialect, db *sql.DB) {
		e := newEnv(t, d, db, nil)
		ids := writeKeys(e, 40, 1) // 40 keys: rows in several shards below the last
		r := e.relay(outbox.RelayConfig{Workers: 1, BatchSize: 500})
		relaytest.SetStartAt(r, func() int { return outbox.Shards - 1 })
		var first []int64
		relaytest.SetBeforeMark(r, func(acked []int64) bool {
			if first == nil {
				first = append([]int64{}, acked...)
			}
			return true
		})
		e.run(r)
		e.drained(r)
		require.Len(t, first, len(ids), "the first batch holds every row")
	})
}

// A row the broker refuses for good (its topic does not exist) is moved to
// the dead table with the reason, once, while the other rows flow.
func TestPermanentRefusalParked(t *testing.T) {
	dialects(t, func(t *testing.T, d outbox.Dialect, db *sql.DB) {
		e := newEnv(t, d, db, nil)
		good := map[string]bool{}
		var bad []string
		for i := 0; i < 30; i++ {
			if i%10 == 5 {
				bad = append(bad, e.write(false, &Missing{ID: fmt.Sprintf("m-%d", i)})...)
			}
			good[e.write(false, &OrderPlaced{OrderID: fmt.Sprintf("o-%d", i%4), Seq: i, Amount: 1})[0]] = true
		}
		r := e.relay(outbox.RelayConfig{Workers: 2})
		e.run(r)
		h := e.drained(r)
		require.Equal(t, int64(len(bad)), h.Dead)
		require.Equal(t, int64(len(bad)), h.Parked)
		require.Equal(t, int64(len(good)), h.Published)
		rows, err := db.Query("SELECT ce_id, error FROM " + e.table + "_dead ORDER BY id")
		require.NoError(t, err)
		defer rows.Close()
		var parked []string
		for rows.Next() {
			var id, reason string
			require.NoError(t, rows.Scan(&id, &reason))
			require.True(t, strings.HasPrefix(reason, "unknown topic: "), reason)
			parked = append(parked, id)
		}
		require.Equal(t, bad, parked)
		recs := readAll(t, e.brokers, e.topic)
		require.Len(t, recs, len(good))
		checkOrder(t, recs, false)
	})
}

// A row that cannot be decoded is reported and parked, not fatal.
func TestCorruptRowParked(t *testing.T) {
	dialects(t, func(t *testing.T, d outbox.Dialect, db *sql.DB) {
		e := newEnv(t, d, db, nil)
		writeAroundCorrupt(e)
		r := e.relay(outbox.RelayConfig{})
		e.run(r)
		h := e.drained(r)
		require.Equal(t, int64(1), h.Corrupt)
		require.Equal(t, int64(1), h.Dead)
		require.Equal(t, int64(2), h.Published)
		var reason string
		require.NoError(t, db.QueryRow("SELECT error FROM "+e.table+"_dead").Scan(&reason))
		require.True(t, strings.HasPrefix(reason, "corrupt: "), reason)
		require.Len(t, readAll(t, e.brokers, e.topic), 2)
	})
}

// writeAroundCorrupt writes two rows of key o-1 with a corrupt row
// (headers that are not JSON) between them.
func writeAroundCorrupt(e *env) {
	e.t.Helper()
	e.write(false, &OrderPlaced{OrderID: "o-1", Seq: 1, Amount: 1})
	_, err := e.db.Exec(e.q("INSERT INTO "+e.table+" (shard, topic, msg_key, value, headers, ce_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)"),
		7, e.topic, []byte("o-1"), []byte("{}"), "{not json", "x", time.Now().UnixMicro())
	require.NoError(e.t, err)
	e.write(false, &OrderPlaced{OrderID: "o-1", Seq: 2, Amount: 1})
}

// Health never counts a row twice or not at all: a row it no longer sees
// in the table is in its counters, also when it is read while a batch's
// mark has just committed and is not counted yet.
func TestHealthCountsWhatLeftTheTable(t *testing.T) {
	dialects(t, func(t *testing.T, d outbox.Dialect, db *sql.DB) {
		e := newEnv(t, d, db, nil)
		writeAroundCorrupt(e)
		const rows = 3
		r := e.relay(outbox.RelayConfig{Workers: 1, BatchSize: 2})
		var mu sync.Mutex
		var seen []outbox.Health
		var reads sync.WaitGroup
		relaytest.SetAfterMark(r, func() {
			// Health read from elsewhere right after a mark committed:
			// it waits for the mark's count (the wait is bounded so that
			// the relay goes on when it does).
			got := make(chan struct{})
			reads.Add(1)
			go func() {
				defer reads.Done()
				h, err := r.Health(context.Background())
				if err == nil {
					mu.Lock()
					seen = append(seen, h)
					mu.Unlock()
				}
				close(got)
			}()
			select {
			case <-got:
			case <-time.After(2 * time.Second):
			}
		})
		e.run(r)
		h := e.drained(r)
		reads.Wait()
		seen = append(seen, h)
		require.Greater(t, len(seen), 1)
		for _, h := range seen {
			require.Equal(t, int64(rows), h.Backlog+h.Published+h.Parked, "every row in the table or in the counters: %+v", h)
			require.LessOrEqual(t, h.Corrupt, h.Parked, "%+v", h)
		}
		require.Equal(t, int64(2), h.Published)
		require.Equal(t, int64(1), h.Corrupt)
	})
}

// The schema is created only by CreateSchema, and twice is harmless.
func TestCreateSchemaIdempotent(t *testing.T) {
	dialects(t, func(t *testing.T, d outbox.Dialect, db *sql.DB) {
		e := newEnv(t, d, db, nil)
		require.NoError(t, e.ob.CreateSchema(context.Background(), db))
		require.Equal(t, outbox.Shards, count(t, db, e.table+"_shards"))
		other, err := outbox.New(e.client, outbox.Config{Dialect: d, Table: e.table + "_none"})
		require.NoError(t, err)
		tx, err := db.Begin()
		require.NoError(t, err)
		defer tx.Rollback()
		_, err = other.Publish(context.Background(), tx, &OrderPlaced{OrderID: "o", Amount: 1})
		require.Error(t, err, "Publish into an outbox whose schema was never created")
	})
}

// A relay stopped (Run's context canceled) while a batch is in flight
// finishes and marks it: a graceful stop publishes nothing twice.
func TestStopMarksInFlightBatch(t *testing.T) {
	dialects(t, func(t *testing.T, d outbox.Dialect, db *sql.DB) {
		e := newEnv(t, d, db, nil)
		ids := writeKeys(e, 4, 30)
		r1 := e.relay(outbox.RelayConfig{Workers: 1, BatchSize: 20})
		ctx, cancel := context.WithCancel(context.Background())
		var once sync.Once
		relaytest.SetBeforeMark(r1, func(acked []int64) bool {
			once.Do(cancel) // the stop arrives between the ack and the mark
			return true
		})
		require.NoError(t, r1.Run(ctx))
		require.Equal(t, len(ids)-20, count(t, db, e.table), "rows left after the stop")
		r2 := e.relay(outbox.RelayConfig{})
		e.run(r2)
		e.drained(r2)
		recs := readAll(t, e.brokers, e.topic)
		require.Len(t, recs, len(ids), "records (no duplicate after a graceful stop)")
		checkOrder(t, recs, false)
	})
}

// On PostgreSQL, a transaction publishing a key waits at Publish (and at
// PublishBatch) while another open transaction published the same key,
// so that rows of one key are inserted in commit order; another key does
// not wait.
func TestPublishSameKeyWaitsForCommit(t *testing.T) {
	db := openPG(t)
	e := newEnv(t, outbox.Postgres, db, nil)
	ctx := context.Background()
	waiting := func() bool {
		var n int
		require.NoError(t, db.QueryRow(`SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`).Scan(&n))
		return n > 0
	}
	for _, batch := range []bool{false, true} {
		txA, err := db.BeginTx(ctx, nil)
		require.NoError(t, err)
		_, err = e.ob.Publish(ctx, txA, &OrderPlaced{OrderID: "same", Seq: 1, Amount: 1})
		require.NoError(t, err)
		// Another key does not wait.
		e.write(false, &OrderPlaced{OrderID: "other", Seq: 1, Amount: 1})
		done := make(chan error, 1)
		go func() {
			txB, err := db.BeginTx(ctx, nil)
			if err != nil {
				done <- err
				return
			}
			if batch {
				_, err = e.ob.PublishBatch(ctx, txB, &OrderPlaced{OrderID: "other2", Seq: 1, Amount: 1}, &OrderPlaced{OrderID: "same", Seq: 2, Amount: 1})
			} else {
				_, err = e.ob.Publish(ctx, txB, &OrderPlaced{OrderID: "same", Seq: 2, Amount: 1})
			}
			if err != nil {
				_ = txB.Rollback()
				done <- err
				return
			}
			done <- txB.Commit()
		}()
		testkit.Eventually(t, 30*time.Second, waiting, "the second transaction (batch %v) did not wait for the key's lock", batch)
		select {
		case err := <-done:
			t.Fatalf("the second transaction (batch %v) ended while the first held the key: %v", batch, err)
		default:
		}
		require.NoError(t, txA.Commit())
		require.NoError(t, <-done)
	}
}
