package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/kavari-go/kavari"
)

// Dialect is the SQL dialect of the outbox's database.
type Dialect int

const (
	// Postgres is PostgreSQL (any database/sql driver, e.g. pgx's stdlib).
	// Relays share the work with row locks (SELECT ... FOR UPDATE SKIP
	// LOCKED) held while they publish a batch.
	Postgres Dialect = iota + 1
	// SQLite is SQLite (e.g. the pure-Go modernc.org/sqlite; open it with a
	// busy timeout and WAL, see the README). Relays share the work with
	// leases that expire (RelayConfig.Lease).
	SQLite
)

func (d Dialect) String() string {
	switch d {
	case Postgres:
		return "postgres"
	case SQLite:
		return "sqlite"
	}
	return "Dialect(" + strconv.Itoa(int(d)) + ")"
}

// Shards is the number of shards of an outbox: a row's shard is a hash of
// its topic and key (rows without a key get a random one). One relay worker
// at a time publishes a shard's rows, in id order, so at most Shards
// workers publish in parallel, and rows of one key keep their order.
const Shards = 64

// Config configures an Outbox.
type Config struct {
	// Dialect is the database's SQL dialect (required).
	Dialect Dialect
	// Table is the outbox table's name (default "kavari_outbox"); the
	// schema also has Table+"_dead" (rows parked for good) and
	// Table+"_shards" (which relay works on which shard). Letters, digits
	// and underscores, optionally prefixed with a schema name and a dot.
	Table string
}

// Outbox writes messages into an outbox table in the caller's transaction
// (Publish, PublishBatch); a Relay publishes them once committed. It
// encodes with its Client, so the rows hold what that Client's Publish
// would send: the same topic mapping, key, codec and headers.
type Outbox struct {
	client *kavari.Client
	d      Dialect
	table  string
	// insertOne and insertOneLocked insert one row (PostgreSQL: the
	// second also takes its key's lock), texts made once.
	insertOne, insertOneLocked string
}

var tableRE = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*\.)?[A-Za-z_][A-Za-z0-9_]*$`)

// New returns the Outbox of client in the database described by cfg.
func New(client *kavari.Client, cfg Config) (*Outbox, error) {
	if client == nil {
		return nil, errors.New("outbox: nil client")
	}
	if cfg.Dialect != Postgres && cfg.Dialect != SQLite {
		return nil, fmt.Errorf("outbox: Config.Dialect must be Postgres or SQLite, not %v", cfg.Dialect)
	}
	if cfg.Table == "" {
		cfg.Table = "kavari_outbox"
	}
	if !tableRE.MatchString(cfg.Table) {
		return nil, fmt.Errorf("outbox: invalid table name %q", cfg.Table)
	}
	o := &Outbox{client: client, d: cfg.Dialect, table: cfg.Table}
	cols := "INSERT INTO " + o.table + " (shard, topic, msg_key, value, headers, ce_id, created_at) "
	if o.d == Postgres {
		o.insertOne = cols + "VALUES ($1::integer, $2::text, $3::bytea, $4::bytea, $5::text, $6::text, $7::bigint)"
		// The lock in a subquery of its own, evaluated once before the
		// row is inserted: one statement, planned as simply as an insert.
		o.insertOneLocked = cols + "SELECT $1::integer, $2::text, $3::bytea, $4::bytea, $5::text, $6::text, $7::bigint FROM (SELECT pg_advisory_xact_lock($8::bigint)) l"
	} else {
		o.insertOne = cols + "VALUES (?, ?, ?, ?, ?, ?, ?)"
	}
	return o, nil
}

// q rewrites the ? placeholders of query for the dialect.
func (o *Outbox) q(query string) string {
	if o.d != Postgres {
		return query
	}
	var b strings.Builder
	n := 0
	for _, c := range query {
		if c == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(c)
	}
	return b.String()
}

// Schema returns the statements that create the outbox's tables and
// indexes (idempotent: IF NOT EXISTS), for a migration tool; CreateSchema
// runs them.
func (o *Outbox) Schema() []string {
	id, blob := "BIGSERIAL PRIMARY KEY", "BYTEA"
	if o.d == SQLite {
		id, blob = "INTEGER PRIMARY KEY AUTOINCREMENT", "BLOB"
	}
	t := o.table
	bare := t[strings.LastIndex(t, ".")+1:]
	stmts := []string{
		`CREATE TABLE IF NOT EXISTS ` + t + ` (
	id ` + id + `,
	shard INTEGER NOT NULL,
	topic TEXT NOT NULL,
	msg_key ` + blob + `,
	value ` + blob + ` NOT NULL,
	headers TEXT NOT NULL,
	ce_id TEXT NOT NULL,
	created_at BIGINT NOT NULL
)`,
		`CREATE INDEX IF NOT EXISTS ` + bare + `_shard_id ON ` + t + ` (shard, id)`,
		`CREATE TABLE IF NOT EXISTS ` + t + `_dead (
	id BIGINT PRIMARY KEY,
	topic TEXT NOT NULL,
	msg_key ` + blob + `,
	value ` + blob + `,
	headers TEXT,
	ce_id TEXT,
	created_at BIGINT NOT NULL,
	parked_at BIGINT NOT NULL,
	error TEXT NOT NULL
)`,
		`CREATE TABLE IF NOT EXISTS ` + t + `_shards (
	shard INTEGER PRIMARY KEY,
	owner TEXT,
	lease_until BIGINT NOT NULL DEFAULT 0
)`,
	}
	var vals []string
	for i := 0; i < Shards; i++ {
		vals = append(vals, "("+strconv.Itoa(i)+")")
	}
	ins := `INSERT INTO ` + t + `_shards (shard) VALUES ` + strings.Join(vals, ", ")
	if o.d == Postgres {
		ins += ` ON CONFLICT DO NOTHING`
	} else {
		ins = strings.Replace(ins, "INSERT INTO", "INSERT OR IGNORE INTO", 1)
	}
	return append(stmts, ins)
}

// Execer is what Publish writes through: a *sql.Tx (or a *sql.Conn inside
// a transaction the caller manages).
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// CreateSchema creates the outbox's tables when they do not exist (the
// statements of Schema, in one transaction when db is a *sql.DB). It is
// never called implicitly.
func (o *Outbox) CreateSchema(ctx context.Context, db *sql.DB) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("outbox: create schema: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	for _, s := range o.Schema() {
		if _, err := tx.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("outbox: create schema: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("outbox: create schema: %w", err)
	}
	return nil
}

// Publish validates and encodes msg as Client.Publish would and inserts it
// into the outbox table through tx, the caller's transaction; it returns
// the message's ce_id. Nothing is sent: a Relay publishes the row once the
// transaction committed, and a rolled-back transaction publishes nothing.
// An invalid message returns the error Client.Publish would (matching
// kavari.ErrInvalid, ErrTooLarge, ...) and inserts nothing; the caller can
// roll back.
//
// On PostgreSQL, Publish takes a transaction-level advisory lock on the
// message's topic and key (pg_advisory_xact_lock), so that two
// transactions writing the same key insert their rows in commit order:
// the second waits at Publish until the first commits or rolls back. A
// transaction publishing several keys can deadlock with another publishing
// them in the opposite order (PostgreSQL then aborts one); PublishBatch
// takes its locks in a fixed order (per 1,000 messages: a larger batch is
// inserted in statements of 1,000).
func (o *Outbox) Publish(ctx context.Context, tx Execer, msg kavari.Msg) (string, error) {
	ids, err := o.PublishBatch(ctx, tx, msg)
	if err != nil {
		return "", err
	}
	return ids[0], nil
}

// PublishBatch is Publish for several messages: if any is invalid, none is
// inserted and the error is a *kavari.BatchError as PublishBatch's (Refused,
// one *kavari.PublishError per invalid message). It returns the ce_ids in
// order.
func (o *Outbox) PublishBatch(ctx context.Context, tx Execer, msgs ...kavari.Msg) ([]string, error) {
	encs := make([]kavari.Encoded, len(msgs))
	var be *kavari.BatchError
	for i, m := range msgs {
		e, err := o.client.Encode(ctx, m)
		if err != nil {
			if be == nil {
				be = &kavari.BatchError{Refused: true}
			}
			be.Failed = append(be.Failed, &kavari.PublishError{Index: i, Err: err})
			continue
		}
		encs[i] = e
	}
	if be != nil {
		if len(msgs) == 1 {
			return nil, be.Failed[0].Err
		}
		return nil, be
	}
	ids := make([]string, 0, len(encs))
	for len(encs) > 0 {
		// At most insertChunk messages a statement (the drivers' limits
		// on parameters).
		n := min(len(encs), insertChunk)
		got, err := o.insertRows(ctx, tx, encs[:n])
		if err != nil {
			return nil, err
		}
		ids = append(ids, got...)
		encs = encs[n:]
	}
	return ids, nil
}

// insertChunk is the most messages PublishBatch inserts with one statement.
const insertChunk = 1000

// insertRows inserts encs with one statement, after taking their keys'
// locks on PostgreSQL, and returns their ce_ids.
func (o *Outbox) insertRows(ctx context.Context, tx Execer, encs []kavari.Encoded) ([]string, error) {
	if len(encs) == 1 {
		return o.insertRow(ctx, tx, &encs[0])
	}
	// One statement: the key locks (PostgreSQL), then every row.
	var q strings.Builder
	args := make([]any, 0, 7*len(encs)+len(encs))
	if o.d == Postgres {
		locks := make([]int64, 0, len(encs))
		for i := range encs {
			if encs[i].Key != nil {
				locks = append(locks, keyLock(encs[i].Topic, encs[i].Key))
			}
		}
		sort.Slice(locks, func(i, j int) bool { return locks[i] < locks[j] })
		locks = slices.Compact(locks)
		if len(locks) > 0 {
			// Taken in id order (a fixed order across transactions), all
			// before the insert reads the subquery's single row.
			q.WriteString("WITH l AS (SELECT count(pg_advisory_xact_lock(x)) FROM (SELECT x FROM (VALUES ")
			for i, l := range locks {
				if i > 0 {
					q.WriteString(", ")
				}
				q.WriteString("(?::bigint)")
				args = append(args, l)
			}
			q.WriteString(") v(x) ORDER BY x OFFSET 0) s) ")
		}
	}
	q.WriteString("INSERT INTO " + o.table + " (shard, topic, msg_key, value, headers, ce_id, created_at) ")
	locked := len(args) > 0
	if locked {
		q.WriteString("SELECT r.* FROM (VALUES ")
	} else {
		q.WriteString("VALUES ")
	}
	now := time.Now().UnixMicro()
	ids := make([]string, len(encs))
	for i := range encs {
		e := &encs[i]
		hs := appendHeaders(nil, e.Headers)
		ids[i] = e.ID()
		var key any
		if e.Key != nil {
			key = e.Key
		}
		if i > 0 {
			q.WriteString(", ")
		}
		if o.d == Postgres {
			q.WriteString("(?::integer, ?::text, ?::bytea, ?::bytea, ?::text, ?::text, ?::bigint)")
		} else {
			q.WriteString("(?, ?, ?, ?, ?, ?, ?)")
		}
		args = append(args, shardOf(e.Topic, e.Key), e.Topic, key, e.Value, string(hs), ids[i], now)
	}
	if locked {
		q.WriteString(") r CROSS JOIN l WHERE l.count >= 0")
	}
	if _, err := tx.ExecContext(ctx, o.q(q.String()), args...); err != nil {
		return nil, fmt.Errorf("outbox: insert: %w", err)
	}
	return ids, nil
}

// insertRow inserts one row (Publish) with a statement of a fixed text,
// after taking its key's lock on PostgreSQL, and returns its ce_id.
func (o *Outbox) insertRow(ctx context.Context, tx Execer, e *kavari.Encoded) ([]string, error) {
	id := e.ID()
	var key any
	if e.Key != nil {
		key = e.Key
	}
	args := []any{shardOf(e.Topic, e.Key), e.Topic, key, e.Value, string(appendHeaders(nil, e.Headers)), id, time.Now().UnixMicro()}
	q := o.insertOne
	if o.d == Postgres && e.Key != nil {
		q = o.insertOneLocked
		args = append(args, keyLock(e.Topic, e.Key))
	}
	if _, err := tx.ExecContext(ctx, q, args...); err != nil {
		return nil, fmt.Errorf("outbox: insert: %w", err)
	}
	return []string{id}, nil
}

// shardOf is the shard of a row: a hash of topic and key, or random
// without a key.
func shardOf(topic string, key []byte) int {
	if key == nil {
		return rand.IntN(Shards)
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(topic))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write(key)
	return int(h.Sum32() % Shards)
}

// keyLock is the advisory lock id of a topic and key.
func keyLock(topic string, key []byte) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte("kavari-outbox\x00" + topic + "\x00"))
	_, _ = h.Write(key)
	return int64(h.Sum64())
}
