package outbox_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	_ "modernc.org/sqlite"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/pgproc"
	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/internal/testkit"
	"github.com/kavari-go/kavari/outbox"
)

// OrderPlaced is the tests' message.
type OrderPlaced struct {
	kavari.Message `kavari:"topic=orders,key=OrderID"`
	OrderID        string `json:"order_id" validate:"required"`
	Seq            int    `json:"seq"`
	Amount         int64  `json:"amount" validate:"gt=0"`
}

// Missing goes to a topic nobody creates.
type Missing struct {
	kavari.Message `kavari:"topic=missing,key=ID"`
	ID             string `json:"id" validate:"required"`
}

// dialects are the databases a test runs on: outbox.SQLite always, PostgreSQL
// from KAVARI_PG_DSN (pgctl, scripts/test.sh).
func dialects(t *testing.T, f func(t *testing.T, d outbox.Dialect, db *sql.DB)) {
	t.Run("sqlite", func(t *testing.T) { f(t, outbox.SQLite, openSQLite(t)) })
	t.Run("postgres", func(t *testing.T) { f(t, outbox.Postgres, openPG(t)) })
}

func openSQLite(t *testing.T) *sql.DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "outbox.db")
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(20000)&_pragma=journal_mode(WAL)&_txlock=immediate")
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	return db
}

// openPG opens the PostgreSQL of KAVARI_PG_DSN. Without it the test is
// skipped in -short runs and fails otherwise: the guarantees are proven on
// a real server.
func openPG(t *testing.T) *sql.DB {
	t.Helper()
	dsn := os.Getenv(pgproc.EnvDSN)
	if dsn == "" {
		if testing.Short() {
			t.Skip("needs PostgreSQL: " + pgproc.EnvDSN + " is unset (scripts/test.sh, or go run ./internal/pgproc/cmd/pgctl run -- go test ..., sets it)")
		}
		t.Fatal(pgproc.EnvDSN + " is unset: run through scripts/test.sh or `go run ./internal/pgproc/cmd/pgctl run -- go test ...` (with -short the PostgreSQL tests are skipped)")
	}
	return openDSN(t, dsn)
}

func openDSN(t *testing.T, dsn string) *sql.DB {
	db, err := sql.Open("pgx", dsn)
	require.NoError(t, err)
	db.SetMaxOpenConns(40)
	t.Cleanup(func() { db.Close() })
	return db
}

// env is one test's outbox: a client on the test broker whose topics are
// prefixed with a fresh id, an outbox table of its own, and the topic.
type env struct {
	t       *testing.T
	brokers []string
	client  *kavari.Client
	ob      *outbox.Outbox
	db      *sql.DB
	d       outbox.Dialect
	table   string // the outbox table
	topic   string // real topic of OrderPlaced
	prefix  string
}

func newEnv(t *testing.T, d outbox.Dialect, db *sql.DB, brokers []string, mutate ...func(*kavari.Config)) *env {
	t.Helper()
	if brokers == nil {
		brokers, _ = testenv.Brokers(t)
	}
	prefix := testenv.ID("ob")
	reg := kavari.NewRegistry()
	require.NoError(t, reg.Declare(&OrderPlaced{}))
	mut := append([]func(*kavari.Config){func(c *kavari.Config) {
		c.Topics.Name = func(topic string) string { return prefix + "-" + topic }
	}}, mutate...)
	k := testkit.NewClient(t, reg, brokers, mut...)
	table := strings.ReplaceAll(prefix, "-", "_")
	ob, err := outbox.New(k, outbox.Config{Dialect: d, Table: table})
	require.NoError(t, err)
	require.NoError(t, ob.CreateSchema(context.Background(), db))
	return &env{t: t, brokers: brokers, client: k, ob: ob, db: db, d: d, table: table, topic: prefix + "-orders", prefix: prefix}
}

// q rewrites the ? placeholders of query for PostgreSQL ($1, $2, ...).
func (e *env) q(query string) string {
	if e.d != outbox.Postgres {
		return query
	}
	var b strings.Builder
	n := 0
	for _, c := range query {
		if c == '?' {
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteRune(c)
	}
	return b.String()
}

// write publishes msgs in one transaction and commits it (rollback: rolls
// back); it returns the ce_ids.
func (e *env) write(rollback bool, msgs ...kavari.Msg) []string {
	e.t.Helper()
	ctx := context.Background()
	for attempt := 0; ; attempt++ {
		ids, err := e.tryWrite(ctx, rollback, msgs...)
		if err == nil {
			return ids
		}
		// outbox.SQLite: a busy database under concurrent writers; PostgreSQL: a
		// deadlock victim. The caller's retry, as an application's.
		if attempt > 20 {
			require.NoError(e.t, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *env) tryWrite(ctx context.Context, rollback bool, msgs ...kavari.Msg) ([]string, error) {
	tx, err := e.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	ids, err := e.ob.PublishBatch(ctx, tx, msgs...)
	if err != nil {
		_ = tx.Rollback()
		return nil, err
	}
	if rollback {
		return ids, tx.Rollback()
	}
	return ids, tx.Commit()
}

func (e *env) relay(cfg outbox.RelayConfig) *outbox.Relay {
	if cfg.Logger == nil {
		cfg.Logger = testkit.Logger()
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 20 * time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = time.Second
	}
	return e.ob.NewRelay(e.db, cfg)
}

// run starts r until the test ends; the returned channel yields Run's
// result.
func (e *env) run(r *outbox.Relay) (stop func(), done <-chan error) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	fin := make(chan struct{})
	go func() { ch <- r.Run(ctx); close(fin) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			<-fin
		})
	}
	e.t.Cleanup(stop)
	return stop, ch
}

// drained waits until the outbox table is empty.
func (e *env) drained(r *outbox.Relay) outbox.Health {
	e.t.Helper()
	var h outbox.Health
	testkit.Eventually(e.t, 3*time.Minute, func() bool {
		var err error
		h, err = r.Health(context.Background())
		return err == nil && h.Backlog == 0
	}, "the outbox was not drained: %+v", &h)
	return h
}

// published is one record of the topic.
type published struct {
	id        string
	key       string
	seq       int
	partition int
	offset    int64
	msg       kafka.Message
}

// readAll reads topic (of brokers) from the start to its end.
func readAll(t *testing.T, brokers []string, topic string) []published {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := kafka.DialContext(ctx, "tcp", brokers[0])
	require.NoError(t, err)
	parts, err := conn.ReadPartitions(topic)
	conn.Close()
	require.NoError(t, err)
	var out []published
	for _, p := range parts {
		lc, err := kafka.DialLeader(ctx, "tcp", brokers[0], topic, p.ID)
		require.NoError(t, err)
		last, err := lc.ReadLastOffset()
		lc.Close()
		require.NoError(t, err)
		if last == 0 {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p.ID, MaxWait: 200 * time.Millisecond})
		for {
			m, err := r.ReadMessage(ctx)
			require.NoError(t, err)
			var o OrderPlaced
			require.NoError(t, json.Unmarshal(m.Value, &o))
			out = append(out, published{id: testkit.Header(m, kavari.HeaderID), key: string(m.Key), seq: o.Seq, partition: m.Partition, offset: m.Offset, msg: m})
			if m.Offset >= last-1 {
				break
			}
		}
		r.Close()
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].partition != out[j].partition {
			return out[i].partition < out[j].partition
		}
		return out[i].offset < out[j].offset
	})
	return out
}

// checkOrder fails unless, per key, the sequence numbers on the topic never
// go back (duplicates of the last one aside, a re-sent batch starts over
// from its first row: allowed when dupOK).
func checkOrder(t *testing.T, recs []published, dupOK bool) {
	t.Helper()
	last := map[string]int{}
	seen := map[string]bool{}
	for _, r := range recs {
		prev, ok := last[r.key]
		if ok && r.seq <= prev {
			if !(dupOK && seen[r.id]) {
				t.Fatalf("key %s: seq %d after %d (offset %d, partition %d), ce_id %s not a duplicate", r.key, r.seq, prev, r.offset, r.partition, r.id)
			}
			continue
		}
		last[r.key] = r.seq
		seen[r.id] = true
	}
}
