package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/kavari-go/kavari"
)

// RelayConfig configures a Relay. The zero value is usable.
type RelayConfig struct {
	// Workers is how many batches the relay publishes at once (default 4,
	// at most Shards); a worker claims up to Shards/Workers shards for a
	// batch. Each holds one database connection while it publishes.
	Workers int
	// BatchSize is the most rows a worker publishes at once (default 500).
	BatchSize int
	// PollInterval is how long a worker that found nothing to publish
	// waits before it looks again (default 100ms).
	PollInterval time.Duration
	// MaxBackoff bounds the wait between attempts while Kafka or the
	// database fails (default 30s); the wait starts at PollInterval and
	// doubles.
	MaxBackoff time.Duration
	// Lease is how long an SQLite relay keeps a shard it claimed (default
	// 30s); a relay that dies holding one leaves it to the others once it
	// expired. A batch's publish is cut at 80 % of it (for both dialects).
	// PostgreSQL relays hold row locks instead, which end with their
	// connection.
	Lease time.Duration
	// Permanent reports whether a publish error is a refusal for good: the
	// row is then moved to the dead table (Table+"_dead") and not retried.
	// Default: the error matches kavari.ErrTooLarge or
	// kavari.ErrUnknownTopic.
	Permanent func(error) bool
	// Logger receives the relay's logs (default slog.Default()).
	Logger *slog.Logger
	// ID names the relay in SQLite leases (default a random id).
	ID string
}

// Relay publishes the committed rows of an outbox through its Client.
type Relay struct {
	o   *Outbox
	db  *sql.DB
	cfg RelayConfig
	log *slog.Logger

	published atomic.Int64
	parked    atomic.Int64
	corrupt   atomic.Int64
	down      atomic.Bool
	lastErr   atomic.Pointer[string]
	logMu     sync.Mutex
	lastLog   time.Time

	// marking is held (read) from a batch's mark to its count in
	// published, parked and corrupt, and taken (write) by Health between
	// reading the table and the counters: a row Health no longer sees in
	// the table is in its counters.
	marking sync.RWMutex

	// beforeMark, set by tests, runs after a batch was acknowledged and
	// before its rows are deleted; returning false abandons the batch as a
	// crash would (the rows stay, the relay stops). afterMark, set by
	// tests, runs after a batch's mark committed and before it is counted.
	beforeMark func(ids []int64) bool
	afterMark  func()
	// startAt, set by tests, is the shard a claim starts its search at
	// (else a random one).
	startAt func() int

	// claimShards locks a claim's shards from $1 on, then below $1;
	// claimSQL[n] is claimDelete for n shards (PostgreSQL).
	claimShards [2]string
	claimSQL    []string
}

// NewRelay returns a relay of o's rows in db. Run starts it.
func (o *Outbox) NewRelay(db *sql.DB, cfg RelayConfig) *Relay {
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	cfg.Workers = min(cfg.Workers, Shards)
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 500
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 100 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.Lease <= 0 {
		cfg.Lease = 30 * time.Second
	}
	if cfg.Permanent == nil {
		cfg.Permanent = func(err error) bool {
			return errors.Is(err, kavari.ErrTooLarge) || errors.Is(err, kavari.ErrUnknownTopic)
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ID == "" {
		cfg.ID = "relay-" + strconv.FormatUint(rand.Uint64(), 36)
	}
	r := &Relay{o: o, db: db, cfg: cfg, log: cfg.Logger}
	if o.d == Postgres {
		for i, cmp := range []string{">=", "<"} {
			r.claimShards[i] = `SELECT s.shard FROM ` + o.table + `_shards s
WHERE s.shard ` + cmp + ` $1 AND EXISTS (SELECT 1 FROM ` + o.table + ` o WHERE o.shard = s.shard)
ORDER BY s.shard LIMIT $2 FOR UPDATE OF s SKIP LOCKED`
		}
		r.claimSQL = make([]string, r.perClaim()+1)
		for n := 1; n < len(r.claimSQL); n++ {
			r.claimSQL[n] = claimDelete(o.table, n)
		}
	}
	return r
}

// perClaim is the most shards a worker claims at once.
func (r *Relay) perClaim() int { return max(1, Shards/r.cfg.Workers) }

// errCrashed ends Run when a test's beforeMark abandoned a batch.
var errCrashed = errors.New("outbox: relay abandoned a batch (test crash)")

// Run publishes committed rows until ctx ends, then returns ctx's error
// (nil when it was canceled). Failures of Kafka or of the database are
// logged and retried with back-off, however long they last; rows the broker
// refuses for good are parked in the dead table. A batch whose publish
// failed with its outcome unknown (the producer may still write it, as
// franz-go's does once the broker is back) is held, its rows claimed, and
// published again until that write settles, so that an outage alone
// publishes no row twice; a relay stopped (or killed) meanwhile may leave
// such rows to be published again, with the same ce_id. Several relays, in
// one process or many, may run on one outbox.
func (r *Relay) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	errc := make(chan error, r.cfg.Workers)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for w := 0; w < r.cfg.Workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.worker(wctx, w); err != nil {
				errc <- err
				cancel()
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		return nil
	}
	return ctx.Err()
}

func (r *Relay) worker(ctx context.Context, w int) error {
	wait := r.cfg.PollInterval
	for ctx.Err() == nil {
		start := rand.IntN(Shards)
		if r.startAt != nil {
			start = r.startAt()
		}
		c, rows, err := r.claim(ctx, start)
		n := 0
		if err == nil && c != nil {
			n, err = r.step(ctx, c, rows)
		}
		switch {
		case errors.Is(err, errCrashed):
			return err
		case err != nil && ctx.Err() == nil:
			r.failed(ctx, err)
			sleep(ctx, wait)
			wait = min(2*wait, r.cfg.MaxBackoff)
			continue
		}
		wait = r.cfg.PollInterval
		if n == 0 {
			sleep(ctx, r.cfg.PollInterval)
		}
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// kafkaError is a publish failure that is not a refusal for good.
type kafkaError struct{ err error }

func (e *kafkaError) Error() string { return e.err.Error() }
func (e *kafkaError) Unwrap() error { return e.err }

// failed records and logs a failed step, at most every 5 seconds.
func (r *Relay) failed(ctx context.Context, err error) {
	s := err.Error()
	r.lastErr.Store(&s)
	var ke *kafkaError
	isKafka := errors.As(err, &ke)
	if isKafka {
		r.down.Store(true)
	}
	r.logMu.Lock()
	due := time.Since(r.lastLog) >= 5*time.Second
	if due {
		r.lastLog = time.Now()
	}
	r.logMu.Unlock()
	if !due {
		return
	}
	h, herr := r.backlog(ctx)
	attrs := []any{"err", err}
	if herr == nil {
		attrs = append(attrs, "backlog_rows", h.Backlog, "oldest_age", h.OldestAge.Round(time.Millisecond))
	}
	if isKafka {
		r.log.Warn("kavari outbox: Kafka is unavailable, the relay backs off and keeps the rows", attrs...)
	} else {
		r.log.Warn("kavari outbox: relay step failed (database?), retrying", attrs...)
	}
}

// row is one outbox row.
type row struct {
	id      int64
	shard   int
	topic   string
	key     []byte
	value   []byte
	headers sql.NullString
	ceID    sql.NullString
	created int64
}

// parkedRow is a row moved to the dead table, with why.
type parkedRow struct {
	row
	reason string
}

// claim is a shard a worker has the right to publish.
type claim interface {
	// finish deletes acked, parks parked and releases the shard.
	finish(ctx context.Context, acked []int64, parked []parkedRow) error
	// abort releases the shard without changing its rows.
	abort()
	// hold keeps the claim for another publish of its rows (an SQLite
	// lease is renewed); an error means it was lost.
	hold(ctx context.Context) error
}

// step publishes the rows of claim c and marks the outcome. It returns
// how many rows it took care of.
func (r *Relay) step(ctx context.Context, c claim, rows []row) (int, error) {
	done := false
	defer func() {
		if !done {
			c.abort()
		}
	}()
	var parked []parkedRow
	var encs []kavari.Encoded
	var sent []row
	corrupt := 0
	for _, rw := range rows {
		e, err := decodeRow(rw)
		if err != nil {
			corrupt++
			r.log.Error("kavari outbox: corrupt row parked in the dead table", "table", r.o.table, "id", rw.id, "err", err)
			parked = append(parked, parkedRow{rw, "corrupt: " + err.Error()})
			continue
		}
		encs = append(encs, e)
		sent = append(sent, rw)
	}
	acked, more, transient := r.publish(ctx, c, sent, encs)
	parked = append(parked, more...)
	if r.beforeMark != nil && !r.beforeMark(acked) {
		return 0, errCrashed
	}
	if len(acked) > 0 || len(parked) > 0 {
		mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		r.marking.RLock()
		err := c.finish(mctx, acked, parked)
		if err == nil {
			if r.afterMark != nil {
				r.afterMark()
			}
			r.published.Add(int64(len(acked)))
			r.parked.Add(int64(len(parked)))
			r.corrupt.Add(int64(corrupt))
		}
		r.marking.RUnlock()
		cancel()
		if err != nil {
			return 0, fmt.Errorf("outbox: marking %d published rows (they will be published again, same ce_id): %w", len(acked), err)
		}
	} else {
		c.abort()
	}
	done = true
	if len(acked) > 0 && transient == nil && r.down.Swap(false) {
		h, err := r.backlog(ctx)
		if err == nil {
			r.log.Info("kavari outbox: Kafka is reachable again, catching up", "backlog_rows", h.Backlog, "oldest_age", h.OldestAge.Round(time.Millisecond))
		}
	}
	return len(acked) + len(parked), transient
}

// publish publishes encs, the rows sent, and returns the ids acknowledged,
// the rows refused for good, and the error of those neither (nil when
// none).
//
// A row whose publish failed with its outcome unknown
// (kavari.PublishError.MayHaveBeenWritten) may still be written by the
// producer (franz-go's idempotent producer keeps a record it sent until
// the broker answers, however long Kafka is down, while the Client's
// retry policy gives up after seconds). Read again and published anew, it
// would be a second record: the duplicates of an outage. So while such
// rows remain, publish keeps the claim and publishes the same Encoded
// values again, with back-off, which waits for the producer's write
// instead of sending a copy (see kavari.Client.PublishEncoded); it lets
// go only when Run's context ends or the claim is lost (then the rows may
// be published twice, with the same ce_id). Rows that failed otherwise
// (never sent) are left to a later batch.
//
// A batch that began is finished when Run's context ends, so that a
// stopping relay does not leave acknowledged rows to be published again;
// each publish is bounded by 80 % of Lease (an SQLite lease must not
// expire under it; it is renewed between two publishes).
func (r *Relay) publish(ctx context.Context, c claim, sent []row, encs []kavari.Encoded) (acked []int64, parked []parkedRow, transient error) {
	pending := make([]int, len(encs)) // indexes into sent and encs
	for i := range pending {
		pending[i] = i
	}
	wait := r.cfg.PollInterval
	batch := make([]kavari.Encoded, 0, len(encs))
	for len(pending) > 0 {
		batch = batch[:0]
		for _, i := range pending {
			batch = append(batch, encs[i])
		}
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.Lease*8/10)
		_, perr := r.o.client.PublishEncoded(pctx, batch...)
		// PublishEncoded keeps in each value the write the producer may
		// still make: the next attempt must pass that value.
		for j, i := range pending {
			encs[i] = batch[j]
		}
		failed := make(map[int]error)
		var be *kavari.BatchError
		if errors.As(perr, &be) {
			for _, pe := range be.Failed {
				failed[pe.Index] = pe
			}
		} else if perr != nil {
			for j := range batch {
				failed[j] = perr
			}
		}
		// A refusal for good may fail the other records of the request
		// (an unknown topic does on kafka-go): such rows are sent again
		// one at a time, in order, and only those refused alone are
		// parked.
		if len(batch) > 1 {
			for j := range batch {
				if err, bad := failed[j]; bad && r.cfg.Permanent(err) {
					if _, err := r.o.client.PublishEncoded(pctx, encs[pending[j]]); err != nil {
						failed[j] = err
					} else {
						delete(failed, j)
					}
				}
			}
		}
		cancel()
		unsure := false
		still := pending[:0]
		for j, i := range pending {
			rw := sent[i]
			err, bad := failed[j]
			switch {
			case !bad:
				acked = append(acked, rw.id)
			case r.cfg.Permanent(err):
				r.log.Error("kavari outbox: the broker refused a row for good; parked in the dead table", "table", r.o.table, "id", rw.id, "topic", rw.topic, "ce_id", rw.ceID.String, "err", err)
				parked = append(parked, parkedRow{rw, refusal(err)})
			default:
				transient = &kafkaError{err}
				var pe *kavari.PublishError
				unsure = unsure || errors.As(err, &pe) && pe.MayHaveBeenWritten
				still = append(still, i)
			}
		}
		pending = still
		if !unsure || ctx.Err() != nil {
			break
		}
		// Rows the producer may still write: hold them and try again.
		r.failed(ctx, transient)
		sleep(ctx, wait)
		wait = min(2*wait, r.cfg.MaxBackoff)
		if ctx.Err() != nil {
			break
		}
		if err := c.hold(ctx); err != nil {
			r.log.Warn("kavari outbox: lost the claim on a batch the producer may still write; its rows may be published twice (same ce_id)", "table", r.o.table, "rows", len(pending), "err", err)
			break
		}
	}
	if len(pending) == 0 {
		transient = nil
	}
	return acked, parked, transient
}

// park inserts the parked rows into the dead table, through tx.
func (r *Relay) park(ctx context.Context, tx *sql.Tx, parked []parkedRow) error {
	now := time.Now().UnixMicro()
	for _, p := range parked {
		if _, err := tx.ExecContext(ctx, r.o.q(`INSERT INTO `+r.o.table+`_dead (id, topic, msg_key, value, headers, ce_id, created_at, parked_at, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`),
			p.id, p.topic, p.key, p.value, p.headers, p.ceID, p.created, now, p.reason); err != nil {
			return err
		}
	}
	return nil
}

// refusal is the error column of a row refused for good: "too large: ",
// "unknown topic: " or "refused: ", then the error.
func refusal(err error) string {
	switch {
	case errors.Is(err, kavari.ErrTooLarge):
		return "too large: " + err.Error()
	case errors.Is(err, kavari.ErrUnknownTopic):
		return "unknown topic: " + err.Error()
	}
	return "refused: " + err.Error()
}

func decodeRow(rw row) (kavari.Encoded, error) {
	if rw.topic == "" {
		return kavari.Encoded{}, errors.New("empty topic")
	}
	if !rw.headers.Valid {
		return kavari.Encoded{}, errors.New("no headers")
	}
	// parseHeaders only reads its argument (the values it returns are
	// its own bytes), so the column is not copied.
	hs, err := parseHeaders(unsafe.Slice(unsafe.StringData(rw.headers.String), len(rw.headers.String)))
	if err != nil {
		return kavari.Encoded{}, fmt.Errorf("headers: %w", err)
	}
	e := kavari.Encoded{Topic: rw.topic, Key: rw.key, Value: rw.value, Headers: hs}
	if !hasID(hs) {
		return kavari.Encoded{}, errors.New("no ce_id header")
	}
	if e.Value == nil {
		e.Value = []byte{}
	}
	return e, nil
}

// hasID reports whether hs has a ce_id header that is not empty
// (kavari.Encoded.ID, without its string).
func hasID(hs []kavari.Header) bool {
	for _, h := range hs {
		if h.Key == kavari.HeaderID {
			return len(h.Value) > 0
		}
	}
	return false
}

// rowColumns are the columns of a row, as scanRows reads them.
const rowColumns = "id, shard, topic, msg_key, value, headers, ce_id, created_at"

// scanRows reads rows of rowColumns.
func scanRows(rs *sql.Rows, err error) ([]row, error) {
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var out []row
	for rs.Next() {
		var rw row
		if err := rs.Scan(&rw.id, &rw.shard, &rw.topic, &rw.key, &rw.value, &rw.headers, &rw.ceID, &rw.created); err != nil {
			return nil, err
		}
		out = append(out, rw)
	}
	return out, rs.Err()
}

// inList is shards as an SQL list (integers only).
func inList(shards []int) string {
	var b strings.Builder
	for i, s := range shards {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(s))
	}
	return b.String()
}

// claim takes up to Shards/Workers shards with rows that no other worker
// holds, starting the search at shard start, and reads their first
// BatchSize rows in id order (a prefix of each shard's rows). It returns a
// nil claim when it found no such shard.
func (r *Relay) claim(ctx context.Context, start int) (claim, []row, error) {
	per := r.perClaim()
	t := r.o.table
	if r.o.d == Postgres {
		// Not ctx: database/sql rolls a transaction back when the context
		// of BeginTx ends, and a batch acknowledged while Run stops must
		// still be marked. Every path ends the transaction (finish, abort).
		tx, err := r.db.BeginTx(context.WithoutCancel(ctx), nil)
		if err != nil {
			return nil, nil, err
		}
		// The first per shards with rows that no other claim holds, from
		// start on, then from 0: in shard order, which the primary key
		// gives, each shard is asked whether it has rows only until per
		// are found (ordered by a rotation of the shard numbers instead,
		// every shard was asked, each an index probe past the rows
		// claims deleted lately, before the sort).
		shards, err := scanInts(tx.QueryContext(ctx, r.claimShards[0], start, per))
		if err == nil && len(shards) < per && start > 0 {
			var more []int
			more, err = scanInts(tx.QueryContext(ctx, r.claimShards[1], start, per-len(shards)))
			shards = append(shards, more...)
		}
		if err != nil || len(shards) == 0 {
			_ = tx.Rollback()
			return nil, nil, err
		}
		// A statement of its own: its snapshot, taken once the locks are
		// held, sees the deletions of the batch that held them before (in
		// the claim's snapshot they may still be rows). The rows are
		// deleted here, in the claim's transaction, which saves a
		// statement per batch: finish puts back those neither
		// acknowledged nor parked and commits; abort rolls back.
		rows, err := scanRows(tx.QueryContext(ctx, r.claimSQL[len(shards)], claimArgs(shards, r.cfg.BatchSize)...))
		if err != nil || len(rows) == 0 {
			_ = tx.Rollback()
			return nil, nil, err
		}
		sort.Slice(rows, func(i, j int) bool { return rows[i].id < rows[j].id })
		return &pgClaim{r: r, tx: tx, rows: rows}, rows, nil
	}
	now := time.Now().UnixMilli()
	shards, err := scanInts(r.db.QueryContext(ctx, `UPDATE `+t+`_shards SET owner = ?, lease_until = ? WHERE shard IN (
SELECT s.shard FROM `+t+`_shards s
WHERE (s.owner IS NULL OR s.lease_until < ?) AND EXISTS (SELECT 1 FROM `+t+` o WHERE o.shard = s.shard)
ORDER BY (s.shard + ?) % `+strconv.Itoa(Shards)+` LIMIT ?)
RETURNING shard`, r.cfg.ID, now+r.cfg.Lease.Milliseconds(), now, start, per))
	if err != nil || len(shards) == 0 {
		return nil, nil, err
	}
	c := &leaseClaim{r: r, shards: shards}
	rows, err := scanRows(r.db.QueryContext(ctx, `SELECT `+rowColumns+` FROM `+t+` WHERE shard IN (`+inList(shards)+`) ORDER BY id LIMIT ?`, r.cfg.BatchSize))
	if err != nil {
		c.abort()
		return nil, nil, err
	}
	return c, rows, nil
}

// claimDelete is the PostgreSQL statement that deletes and returns the
// first BatchSize rows, in id order, of n shards (parameters $1..$n, then
// the limit: claimArgs). Each shard's rows are read apart, from the
// (shard, id) index in order and no further than the limit, then merged:
// one scan of the primary key filtered by shard, or of the index and a
// sort, reads every row of the shards up to the batch's last and the
// deleted ones a concurrent claim left in the index. Its text depends on
// n only (at most Shards/Workers), so drivers that cache prepared
// statements prepare it once per connection and n.
func claimDelete(table string, n int) string {
	lim := "$" + strconv.Itoa(n+1)
	var q strings.Builder
	q.WriteString(`DELETE FROM ` + table + ` WHERE id IN (SELECT id FROM (`)
	for i := 1; i <= n; i++ {
		if i > 1 {
			q.WriteString(` UNION ALL `)
		}
		q.WriteString(`(SELECT id FROM ` + table + ` WHERE shard = $` + strconv.Itoa(i) + `::integer ORDER BY id LIMIT ` + lim + `::bigint)`)
	}
	q.WriteString(`) first ORDER BY id LIMIT ` + lim + `::bigint) RETURNING ` + rowColumns)
	return q.String()
}

// claimArgs are claimDelete's arguments.
func claimArgs(shards []int, limit int) []any {
	args := make([]any, 0, len(shards)+1)
	for _, s := range shards {
		args = append(args, s)
	}
	return append(args, limit)
}

// scanInts reads one integer column.
func scanInts(rs *sql.Rows, err error) ([]int, error) {
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var out []int
	for rs.Next() {
		var v int
		if err := rs.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rs.Err()
}

// pgClaim holds a shard's row lock in a transaction, in which its rows
// are deleted.
type pgClaim struct {
	r    *Relay
	tx   *sql.Tx
	rows []row // deleted by the claim
}

func (c *pgClaim) finish(ctx context.Context, acked []int64, parked []parkedRow) error {
	done := make(map[int64]bool, len(acked)+len(parked))
	for _, id := range acked {
		done[id] = true
	}
	for _, p := range parked {
		done[p.id] = true
	}
	var back []row
	for _, rw := range c.rows {
		if !done[rw.id] {
			back = append(back, rw)
		}
	}
	err := c.r.park(ctx, c.tx, parked)
	if err == nil {
		err = c.r.putBack(ctx, c.tx, back)
	}
	if err != nil {
		_ = c.tx.Rollback()
		return err
	}
	return c.tx.Commit()
}

// putBack inserts rows again, as they were (PostgreSQL: rows its claim
// deleted that were not published).
func (r *Relay) putBack(ctx context.Context, tx *sql.Tx, rows []row) error {
	for len(rows) > 0 {
		n := min(len(rows), 500)
		var q strings.Builder
		q.WriteString(`INSERT INTO ` + r.o.table + ` (id, shard, topic, msg_key, value, headers, ce_id, created_at) VALUES `)
		args := make([]any, 0, 8*n)
		for i, rw := range rows[:n] {
			if i > 0 {
				q.WriteString(", ")
			}
			q.WriteString("(?::bigint, ?::integer, ?::text, ?::bytea, ?::bytea, ?::text, ?::text, ?::bigint)")
			args = append(args, rw.id, rw.shard, rw.topic, rw.key, rw.value, rw.headers, rw.ceID, rw.created)
		}
		if _, err := tx.ExecContext(ctx, r.o.q(q.String()), args...); err != nil {
			return err
		}
		rows = rows[n:]
	}
	return nil
}

func (c *pgClaim) abort() { _ = c.tx.Rollback() }

// hold does nothing: the row locks last as long as the transaction.
func (c *pgClaim) hold(context.Context) error { return nil }

// leaseClaim holds a shard's lease (SQLite).
type leaseClaim struct {
	r      *Relay
	shards []int
}

func (c *leaseClaim) finish(ctx context.Context, acked []int64, parked []parkedRow) error {
	tx, err := c.r.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	if err := c.r.mark(ctx, tx, acked, parked); err != nil {
		return err
	}
	if err := c.release(ctx, tx); err != nil {
		return err
	}
	return tx.Commit()
}

func (c *leaseClaim) release(ctx context.Context, ex Execer) error {
	_, err := ex.ExecContext(ctx, `UPDATE `+c.r.o.table+`_shards SET owner = NULL, lease_until = 0 WHERE shard IN (`+inList(c.shards)+`) AND owner = ?`, c.r.cfg.ID)
	return err
}

// hold renews the lease of every shard of the claim.
func (c *leaseClaim) hold(ctx context.Context) error {
	res, err := c.r.db.ExecContext(ctx, `UPDATE `+c.r.o.table+`_shards SET lease_until = ? WHERE shard IN (`+inList(c.shards)+`) AND owner = ?`,
		time.Now().Add(c.r.cfg.Lease).UnixMilli(), c.r.cfg.ID)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n != int64(len(c.shards)) {
		return fmt.Errorf("outbox: the lease of shards %s expired (renewed %d)", inList(c.shards), n)
	}
	return nil
}

func (c *leaseClaim) abort() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = c.release(ctx, c.r.db)
}

// mark deletes the acknowledged rows and moves the parked ones to the dead
// table, through tx (SQLite: a PostgreSQL claim deletes its rows itself).
func (r *Relay) mark(ctx context.Context, tx *sql.Tx, acked []int64, parked []parkedRow) error {
	t := r.o.table
	if err := r.park(ctx, tx, parked); err != nil {
		return err
	}
	for _, p := range parked {
		acked = append(acked, p.id)
	}
	for len(acked) > 0 {
		n := min(len(acked), 500)
		args := make([]any, n)
		for i := range args {
			args[i] = acked[i]
		}
		ph := strings.TrimSuffix(strings.Repeat("?,", n), ",")
		if _, err := tx.ExecContext(ctx, `DELETE FROM `+t+` WHERE id IN (`+ph+`)`, args...); err != nil {
			return err
		}
		acked = acked[n:]
	}
	return nil
}

// Health is what a relay reports about its outbox.
type Health struct {
	// Table is the outbox table (Config.Table).
	Table string
	// Backlog is the number of rows waiting to be published, OldestAge
	// the age of the oldest (0 when none).
	Backlog   int64
	OldestAge time.Duration
	// Dead is the number of rows in the dead table (refused for good, or
	// corrupt).
	Dead int64
	// KafkaDown is true while the relay's last publish failed for a
	// reason other than a refusal for good.
	KafkaDown bool
	// LastError is the relay's last failure ("" when none).
	LastError string
	// Published, Parked and Corrupt count this relay's rows since it was
	// made: acknowledged by the broker and deleted, moved to the dead
	// table, and of those the corrupt ones.
	Published, Parked, Corrupt int64
}

// Health reports the outbox's backlog and the relay's state; it queries
// the database.
func (r *Relay) Health(ctx context.Context) (Health, error) {
	h, err := r.backlog(ctx)
	h.KafkaDown = r.down.Load()
	if s := r.lastErr.Load(); s != nil {
		h.LastError = *s
	}
	// A mark that committed before the backlog was read is counted once
	// the marks under way are.
	r.marking.Lock()
	h.Published, h.Parked, h.Corrupt = r.published.Load(), r.parked.Load(), r.corrupt.Load()
	r.marking.Unlock()
	return h, err
}

func (r *Relay) backlog(ctx context.Context) (Health, error) {
	h := Health{Table: r.o.table}
	var oldest sql.NullInt64
	t := r.o.table
	if err := r.db.QueryRowContext(ctx, `SELECT COUNT(*), MIN(created_at) FROM `+t).Scan(&h.Backlog, &oldest); err != nil {
		return h, fmt.Errorf("outbox: backlog: %w", err)
	}
	if oldest.Valid {
		h.OldestAge = max(0, time.Since(time.UnixMicro(oldest.Int64)))
	}
	if err := r.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+t+`_dead`).Scan(&h.Dead); err != nil {
		return h, fmt.Errorf("outbox: backlog: %w", err)
	}
	return h, nil
}
