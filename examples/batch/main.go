// Command batch is a batch handler: orders are written to a table in bulk,
// one insert per batch, and the one row the table refuses is named with
// kavari.BatchFailed, retried alone and dead-lettered while every other row
// is inserted.
//
//	go run ./examples/batch            # embedded broker, nothing to install
//	go run ./examples/batch -n 20000
//	KAVARI_BROKERS=localhost:9092 go run ./examples/batch
//
// It exits 0 when every healthy row was inserted once and the poison row
// dead-lettered, 1 otherwise.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/kavaritest"
)

// OrderPlaced goes to topic batch.orders, keyed by OrderID.
type OrderPlaced struct {
	kavari.Message `kavari:"topic=batch.orders,key=OrderID"`
	OrderID        string `json:"order_id" validate:"required"`
	AmountCents    int64  `json:"amount_cents" validate:"gt=0"`
}

// table stands for a database table with a bulk insert; it refuses rows
// whose order id it already has under another amount (a constraint the
// message's validation cannot know).
type table struct {
	mu      sync.Mutex
	rows    map[string]int64
	inserts int
	largest int
	refuse  string // the order id the table refuses
}

var errConstraint = errors.New("duplicate key value violates unique constraint \"orders_pkey\"")

// insert writes rows in one statement; like a database, it writes none of
// them when one fails and says which.
func (t *table) insert(rows []*OrderPlaced) (failed int, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, r := range rows {
		if r.OrderID == t.refuse {
			return i, errConstraint
		}
	}
	for _, r := range rows {
		t.rows[r.OrderID] = r.AmountCents
	}
	t.inserts++
	t.largest = max(t.largest, len(rows))
	return -1, nil
}

// OrderWriter is a batch handler: kavari hands it the orders of one
// partition together.
type OrderWriter struct{ db *table }

// HandleBatch inserts the batch at once. When the table refuses a row, the
// rows before it are inserted, and kavari.BatchFailed names the refused one:
// kavari marks those before it done, retries it alone and dead-letters it,
// and hands the rows after it over again in a later batch.
func (w *OrderWriter) HandleBatch(ctx context.Context, orders []*OrderPlaced) error {
	i, err := w.db.insert(orders)
	if err == nil {
		return nil
	}
	if _, err := w.db.insert(orders[:i]); err != nil {
		return err // the whole batch failed: kavari retries it, then splits it
	}
	if r, ok := kavari.BatchRecordFromContext(ctx, i); ok {
		slog.Debug("row refused", "offset", r.Offset, "ce_id", r.ID)
	}
	return kavari.BatchFailed(i, err)
}

// deadLetters is a hook that prints each dead letter.
type deadLetters struct {
	mu   sync.Mutex
	seen []string
}

// The compiler checks the hook's method: a method that drifted from the
// interface would make New refuse the hook at run time.
var _ kavari.HookDeadLettered = (*deadLetters)(nil)

func (d *deadLetters) OnDeadLettered(r *kavari.Record, kind kavari.ErrorKind, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seen = append(d.seen, fmt.Sprintf("%s (%s@%d, %s after %d attempts)", r.Key, r.Topic, r.Offset, kind, r.Attempt))
}

func (d *deadLetters) list() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.seen...)
}

func main() {
	os.Exit(run())
}

func run() int {
	n := flag.Int("n", 1000, "orders to publish")
	timeout := flag.Duration("timeout", 2*time.Minute, "how long to wait for every order")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))

	brokers, where, closeBroker, err := kafka()
	if err != nil {
		return fail(err)
	}
	defer closeBroker()
	fmt.Println("kavari batch handler")
	fmt.Println("  broker:   ", where)

	run := runID()
	poison := fmt.Sprintf("%s-%06d", run, *n/2)
	db := &table{rows: map[string]int64{}, refuse: poison}
	reg := kavari.NewRegistry()
	if err := kavari.RegisterBatchOn(reg, &OrderPlaced{}, func() *OrderWriter { return &OrderWriter{db: db} }); err != nil {
		return fail(err)
	}
	dls := &deadLetters{}
	k, err := kavari.New(kavari.Config{
		Brokers:  brokers,
		Logger:   log,
		Registry: reg,
		Hooks:    []kavari.Hook{dls},
		Consume: kavari.ConsumeConfig{
			GroupID:         "kavari-batch-" + run,
			MaxBatchRecords: 200,
			Retry:           kavari.ConstantRetry(50*time.Millisecond, 3),
		},
		Topics: kavari.TopicConfig{Create: true},
	})
	if err != nil {
		return fail(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := k.Start(ctx); err != nil {
		return fail(err)
	}

	msgs := make([]kavari.Msg, *n)
	for i := range msgs {
		msgs[i] = &OrderPlaced{OrderID: fmt.Sprintf("%s-%06d", run, i), AmountCents: int64(100 + i)}
	}
	if _, err := k.PublishBatch(ctx, msgs...); err != nil {
		return fail(err)
	}
	fmt.Printf("published %d orders with PublishBatch; the table refuses one of them\n", *n)

	for ctx.Err() == nil {
		db.mu.Lock()
		inserted := len(db.rows)
		db.mu.Unlock()
		if inserted == *n-1 && len(dls.list()) == 1 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopCtx, stopCancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer stopCancel()
	if err := k.Stop(stopCtx); err != nil {
		return fail(err)
	}

	db.mu.Lock()
	inserted, inserts, largest := len(db.rows), db.inserts, db.largest
	_, poisonInserted := db.rows[poison]
	db.mu.Unlock()
	fmt.Printf("inserted  %d orders in %d bulk inserts (largest %d rows)\n", inserted, inserts, largest)
	dead := dls.list()
	for _, d := range dead {
		fmt.Println("dead-lettered", strings.TrimPrefix(d, run+"-"))
	}
	if inserted != *n-1 || poisonInserted || len(dead) != 1 {
		fmt.Printf("FAIL: want %d orders inserted and the refused one dead-lettered\n", *n-1)
		return 1
	}
	fmt.Println("OK: every order but the refused one inserted; the refused one dead-lettered")
	return 0
}

// kafka returns the brokers of KAVARI_BROKERS, or starts an embedded one.
func kafka() (brokers []string, where string, closeFn func(), err error) {
	if env := os.Getenv("KAVARI_BROKERS"); env != "" {
		return strings.Split(env, ","), env + " (KAVARI_BROKERS)", func() {}, nil
	}
	b, err := kavaritest.Start()
	if err != nil {
		return nil, "", nil, err
	}
	return b.Addrs(), "embedded, in this process (set KAVARI_BROKERS=host:9092 to use your Kafka)", b.Close, nil
}

func runID() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func fail(err error) int {
	fmt.Fprintln(os.Stderr, "batch:", err)
	return 1
}
