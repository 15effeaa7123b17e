package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/pgproc"
	"github.com/kavari-go/kavari/outbox"
)

// The transactional outbox (issue 21) on PostgreSQL, kavari on franz-go:
//
//   - outbox/direct-publishbatch: N messages published with PublishBatch,
//     batches of outboxBatch, outboxWorkers senders;
//   - outbox/postgres/relay: the same N messages written to the outbox
//     first (not timed), then drained by a relay of outboxWorkers workers
//     and batches of outboxBatch: from Run to an empty table. The two
//     alternate -reps times on fresh topics; the target is relay ≥ 0.8×
//     direct; outbox/postgres/relay-batch2000 is the same relay with
//     batches of 2,000, beside them;
//   - outbox/postgres/latency: orders written at a steady 1,000/s, one a
//     transaction, with the relay running: from the commit call to the
//     broker's acknowledgement (HookPublishAfter), p50/p99;
//   - outbox/postgres/insert: what outbox.Publish costs the caller's
//     transaction per message (one a call, and PublishBatch of 10), in
//     transactions of 100, beside a SELECT 1 round trip.
//
// The coordinator starts PostgreSQL (internal/pgproc) unless -pg-dsn or
// KAVARI_PG_DSN names one, and passes its DSN to the workers in
// KAVARI_PG_DSN.

const (
	outboxWorkers = 4
	outboxBatch   = 500
	// outboxN is how many messages the direct and relay runs publish.
	outboxN = 20_000
	// outboxInsertN is how many messages each insert measure writes.
	outboxInsertN = 5_000
	// outboxRate is the latency run's orders per second.
	outboxRate = 1000
	// outboxTarget: relay throughput ÷ direct PublishBatch.
	outboxTarget = 0.8
	// outboxInsertTarget: µs per message Publish may cost the caller's
	// transaction.
	outboxInsertTarget = 50.0
)

const (
	outboxDirectID = "outbox/direct-publishbatch"
	outboxRelayID  = "outbox/postgres/relay"
	// outboxRelay2000ID: the relay with batches of 2,000 (the per-batch
	// round trips amortised over more rows), beside the target's row.
	outboxRelay2000ID = "outbox/postgres/relay-batch2000"
	outboxLatencyID   = "outbox/postgres/latency"
	outboxInsertID    = "outbox/postgres/insert"
)

// outboxStats are the insert run's figures, µs per message.
type outboxStats struct {
	InsertUs    float64 `json:"insert_us"`     // Publish, one message a call
	Insert10Us  float64 `json:"insert10_us"`   // PublishBatch of 10
	RoundTripUs float64 `json:"round_trip_us"` // SELECT 1, one a statement
	Messages    int     `json:"messages"`      // per measure
}

func (b *bench) outbox() {
	ids := []string{outboxDirectID, outboxRelayID, outboxRelay2000ID, outboxLatencyID, outboxInsertID}
	if !b.wantAny(ids...) {
		return
	}
	dsn, stop, err := b.postgres()
	if err != nil {
		b.fail("outbox", err)
		return
	}
	defer stop()
	// The workers inherit it.
	if err := os.Setenv(pgproc.EnvDSN, dsn); err != nil {
		b.fail("outbox", err)
		return
	}
	spec := func(id, mode string) spec {
		s := b.base(id, "outbox", implKavariFranz)
		s.Mode, s.Size, s.Count, s.Batch, s.Callers = mode, 100, outboxN, outboxBatch, outboxWorkers
		return s
	}
	// Alternated, so that a busy moment of the machine hits both.
	for rep := 0; rep < max(b.o.reps, 1); rep++ {
		if b.want(outboxDirectID) {
			b.runSpec(spec(outboxDirectID, "direct"), true)
		}
		if b.want(outboxRelayID) {
			b.runSpec(spec(outboxRelayID, "relay"), true)
		}
		if b.want(outboxRelay2000ID) {
			s := spec(outboxRelay2000ID, "relay")
			s.Batch = 2000
			b.runSpec(s, true)
		}
	}
	if b.want(outboxLatencyID) {
		s := spec(outboxLatencyID, "latency")
		s.Rate, s.Duration = outboxRate, b.o.e2eDuration
		s.Count = int(int64(s.Rate) * int64(s.Duration) / int64(time.Second))
		b.runSpec(s, true)
	}
	if b.want(outboxInsertID) {
		s := spec(outboxInsertID, "insert")
		s.Count = outboxInsertN
		b.runSpec(s, false)
	}
}

// postgres returns the DSN of -pg-dsn (KAVARI_PG_DSN), or starts a
// PostgreSQL server (internal/pgproc, binaries cached in .cache/postgres).
func (b *bench) postgres() (dsn string, stop func(), err error) {
	if b.o.pgDSN != "" {
		return b.o.pgDSN, func() {}, nil
	}
	home := os.Getenv(pgproc.EnvHome)
	if home == "" {
		logf("fetching the PostgreSQL binaries %s (cached in .cache/postgres)...", pgproc.DefaultVersion)
		if home, err = pgproc.Fetch(b.ctx, filepath.Join(b.o.root, ".cache", "postgres"), pgproc.DefaultVersion); err != nil {
			return "", nil, err
		}
	}
	srv, err := pgproc.Start(b.ctx, pgproc.Options{Home: home})
	if err != nil {
		return "", nil, err
	}
	logf("PostgreSQL %s on 127.0.0.1:%d", pgproc.DefaultVersion, srv.Port)
	return srv.DSN, srv.Stop, nil
}

// runOutbox is the worker's side of the outbox workloads.
func runOutbox(ctx context.Context, s *spec) (*result, error) {
	db, err := sql.Open("pgx", os.Getenv(pgproc.EnvDSN))
	if err != nil {
		return nil, err
	}
	defer db.Close()
	db.SetMaxOpenConns(4 * outboxWorkers)
	acks := &ackTimes{at: map[string]time.Time{}}
	cfg := kavariConfig(s, kavari.NewRegistry())
	if s.Mode == "latency" {
		cfg.Hooks = append(cfg.Hooks, acks)
	}
	k, err := kavari.New(cfg)
	if err != nil {
		return nil, err
	}
	defer k.Stop(context.Background())
	table := fmt.Sprintf("bench_outbox_%d", time.Now().UnixNano())
	ob, err := outbox.New(k, outbox.Config{Dialect: outbox.Postgres, Table: table})
	if err != nil {
		return nil, err
	}
	if s.Mode != "direct" {
		if err := ob.CreateSchema(ctx, db); err != nil {
			return nil, err
		}
		defer dropOutbox(db, table)
	}
	payload := payloadFor(s.Size)
	msg := func(i int) kavari.Msg { return &BenchMessage{ID: msgID(i), Seq: int64(i), Payload: payload} }
	batches := func() [][]kavari.Msg {
		var out [][]kavari.Msg
		for i := 0; i < s.Count; i += s.Batch {
			b := make([]kavari.Msg, 0, s.Batch)
			for j := i; j < min(i+s.Batch, s.Count); j++ {
				b = append(b, msg(j))
			}
			out = append(out, b)
		}
		return out
	}
	switch s.Mode {
	case "direct":
		bs := batches()
		start := time.Now()
		if err := inParallel(s.Callers, len(bs), func(i int) error {
			_, err := k.PublishBatch(ctx, bs[i]...)
			return err
		}); err != nil {
			return nil, err
		}
		return &result{Count: s.Count, Seconds: time.Since(start).Seconds()}, nil
	case "relay":
		for _, b := range batches() {
			if err := inTx(ctx, db, func(tx *sql.Tx) error { _, err := ob.PublishBatch(ctx, tx, b...); return err }); err != nil {
				return nil, err
			}
		}
		r := ob.NewRelay(db, outbox.RelayConfig{Workers: s.Callers, BatchSize: s.Batch, PollInterval: 5 * time.Millisecond, Logger: benchLogger()})
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		start := time.Now()
		go func() { done <- r.Run(rctx) }()
		err := waitEmpty(ctx, db, table)
		secs := time.Since(start).Seconds()
		cancel()
		if rerr := <-done; err == nil {
			err = rerr
		}
		if err != nil {
			return nil, err
		}
		return &result{Count: s.Count, Seconds: secs}, nil
	case "latency":
		return outboxLatency(ctx, s, db, ob, table, acks, msg)
	case "insert":
		return outboxInsert(ctx, s, db, k, msg)
	}
	return nil, fmt.Errorf("unknown outbox mode %q", s.Mode)
}

// dropOutbox drops the tables of an outbox the workload made (the
// database may be the caller's, -pg-dsn).
func dropOutbox(db *sql.DB, table string) {
	_, _ = db.Exec("DROP TABLE IF EXISTS " + table + ", " + table + "_dead, " + table + "_shards")
}

// inParallel runs f(0..n-1) on workers goroutines and returns the first
// error.
func inParallel(workers, n int, f func(i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				if err := f(i); err != nil {
					errs[w] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func inTx(ctx context.Context, db *sql.DB, f func(tx *sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := f(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// waitEmpty waits until the outbox table has no row (a cheap probe every
// 5 ms).
func waitEmpty(ctx context.Context, db *sql.DB, table string) error {
	for {
		var one int
		err := db.QueryRowContext(ctx, "SELECT 1 FROM "+table+" LIMIT 1").Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := sleepCtx(ctx, 5*time.Millisecond); err != nil {
			return err
		}
	}
}

// ackTimes records when the broker acknowledged each message, by ce_id.
type ackTimes struct {
	mu sync.Mutex
	at map[string]time.Time
}

var _ kavari.HookPublishAfter = (*ackTimes)(nil)

func (a *ackTimes) OnPublishAfter(_ context.Context, r *kavari.Record, _ time.Time, err error) {
	if err != nil {
		return
	}
	now := time.Now()
	for _, h := range r.Headers {
		if h.Key == kavari.HeaderID {
			a.mu.Lock()
			if _, ok := a.at[string(h.Value)]; !ok {
				a.at[string(h.Value)] = now
			}
			a.mu.Unlock()
			return
		}
	}
}

// outboxLatency writes s.Count orders at s.Rate a second, one a
// transaction (each in its own goroutine, so a slow commit never delays
// the next), with a relay running, and measures from the commit call to
// the broker's acknowledgement.
func outboxLatency(ctx context.Context, s *spec, db *sql.DB, ob *outbox.Outbox, table string, acks *ackTimes, msg func(int) kavari.Msg) (*result, error) {
	r := ob.NewRelay(db, outbox.RelayConfig{Workers: s.Callers, BatchSize: s.Batch, Logger: benchLogger()})
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	committed := make([]time.Time, s.Count)
	ids := make([]string, s.Count)
	var failed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < s.Count; i++ {
		if d := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(s.Rate))); d > 0 {
			time.Sleep(d)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := inTx(ctx, db, func(tx *sql.Tx) error {
				id, err := ob.Publish(ctx, tx, msg(i))
				ids[i] = id
				committed[i] = time.Now() // the commit call follows
				return err
			})
			if err != nil {
				failed.Add(1)
				ids[i] = ""
			}
		}()
	}
	wg.Wait()
	issued := time.Since(start)
	if err := waitEmpty(ctx, db, table); err != nil {
		return nil, err
	}
	cancel()
	if err := <-done; err != nil {
		return nil, err
	}
	var ls []int64
	acks.mu.Lock()
	for i, id := range ids {
		if at, ok := acks.at[id]; ok && id != "" {
			ls = append(ls, max(at.Sub(committed[i]).Nanoseconds(), 0))
		}
	}
	acks.mu.Unlock()
	slices.Sort(ls)
	st := &latencyStats{Rate: s.Rate, Sent: s.Count, Received: len(ls), AchievedRate: float64(s.Count) / issued.Seconds(),
		P50: pct(ls, 0.50), P99: pct(ls, 0.99), P999: pct(ls, 0.999)}
	if len(ls) > 0 {
		st.Max = float64(ls[len(ls)-1]) / 1e6
	}
	res := &result{Count: len(ls), Errors: s.Count - len(ls), Seconds: issued.Seconds(), Latency: st}
	if n := failed.Load(); n > 0 {
		res.Note = fmt.Sprintf("%d transactions failed", n)
	}
	return res, nil
}

// outboxInsert measures Publish (one message a call) and PublishBatch of
// 10 in the caller's transactions of 100 messages, each on a fresh table,
// and a SELECT 1 round trip, µs per message.
func outboxInsert(ctx context.Context, s *spec, db *sql.DB, k *kavari.Client, msg func(int) kavari.Msg) (*result, error) {
	db.SetMaxOpenConns(1) // one connection, as a caller's transaction has
	st := &outboxStats{Messages: s.Count}
	var total time.Duration
	measure := func(per int) (float64, error) {
		table := fmt.Sprintf("bench_outbox_%d", time.Now().UnixNano())
		ob, err := outbox.New(k, outbox.Config{Dialect: outbox.Postgres, Table: table})
		if err != nil {
			return 0, err
		}
		if err := ob.CreateSchema(ctx, db); err != nil {
			return 0, err
		}
		defer dropOutbox(db, table)
		start := time.Now()
		for i := 0; i < s.Count; {
			err := inTx(ctx, db, func(tx *sql.Tx) error {
				for j := 0; j < 100 && i < s.Count; j += per {
					msgs := make([]kavari.Msg, 0, per)
					for ; len(msgs) < per && i < s.Count; i++ {
						msgs = append(msgs, msg(i))
					}
					if _, err := ob.PublishBatch(ctx, tx, msgs...); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return 0, err
			}
		}
		d := time.Since(start)
		total += d
		return float64(d.Microseconds()) / float64(s.Count), nil
	}
	var err error
	if st.InsertUs, err = measure(1); err != nil {
		return nil, err
	}
	if st.Insert10Us, err = measure(10); err != nil {
		return nil, err
	}
	start := time.Now()
	for i := 0; i < s.Count; {
		if err := inTx(ctx, db, func(tx *sql.Tx) error {
			for j := 0; j < 100 && i < s.Count; j, i = j+1, i+1 {
				if _, err := tx.ExecContext(ctx, "SELECT 1"); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return nil, err
		}
	}
	st.RoundTripUs = float64(time.Since(start).Microseconds()) / float64(s.Count)
	return &result{Count: 2 * s.Count, Seconds: total.Seconds(), Outbox: st}, nil
}
