// Command orders is an HTTP service that writes orders to its database and
// publishes OrderPlaced through kavari's transactional outbox: the event
// exists exactly when the order does, and it reaches Kafka once Kafka is
// there, however long it was away.
//
//	go run ./outbox/example/orders                          # SQLite file orders.db
//	go run ./outbox/example/orders -dsn postgres://...      # PostgreSQL
//
//	curl -XPOST localhost:8080/orders -d '{"order_id":"o-1","amount":10}'
//	curl localhost:8080/health
//
// The brokers come from -brokers or KAVARI_BROKERS (default
// 127.0.0.1:9092).
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"log"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/outbox"
)

// OrderPlaced is the event of a new order.
type OrderPlaced struct {
	kavari.Message `kavari:"topic=orders,key=OrderID"`
	OrderID        string `json:"order_id" validate:"required"`
	Amount         int64  `json:"amount" validate:"gt=0"`
}

func main() {
	addr := flag.String("addr", ":8080", "HTTP address")
	dsn := flag.String("dsn", "", "PostgreSQL DSN (postgres://...); empty: SQLite")
	file := flag.String("sqlite", "orders.db", "SQLite file when -dsn is empty")
	brokers := flag.String("brokers", envOr("KAVARI_BROKERS", "127.0.0.1:9092"), "Kafka brokers, comma-separated")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	db, dialect, err := open(*dsn, *file)
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	if err := kavari.Declare(&OrderPlaced{}); err != nil {
		log.Fatal(err)
	}
	k, err := kavari.New(kavari.Config{Brokers: strings.Split(*brokers, ",")})
	if err != nil {
		log.Fatal(err)
	}
	s, err := newService(ctx, db, dialect, k)
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		// Creating the topic needs Kafka; the service works without it.
		for ctx.Err() == nil {
			if err := k.EnsureTopics(ctx); err == nil {
				return
			}
			time.Sleep(5 * time.Second)
		}
	}()
	relayDone := make(chan error, 1)
	go func() { relayDone <- s.relay.Run(ctx) }()

	srv := &http.Server{Addr: *addr, Handler: s.routes()}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	slog.Info("orders: listening", "addr", *addr, "database", dialect.String())
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
	<-relayDone // the batch in flight is marked before Run returns
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = k.Stop(sctx)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// open opens PostgreSQL when dsn is set, else the SQLite file.
func open(dsn, file string) (*sql.DB, outbox.Dialect, error) {
	if dsn != "" {
		db, err := sql.Open("pgx", dsn)
		return db, outbox.Postgres, err
	}
	// A busy timeout and WAL let the relay and the handlers share the
	// file; immediate transactions take the write lock at BEGIN.
	db, err := sql.Open("sqlite", "file:"+file+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_txlock=immediate")
	return db, outbox.SQLite, err
}

// service is the HTTP service: its database, outbox and relay.
type service struct {
	db    *sql.DB
	d     outbox.Dialect
	ob    *outbox.Outbox
	relay *outbox.Relay
}

// newService creates the schema (orders and the outbox) and the relay.
func newService(ctx context.Context, db *sql.DB, d outbox.Dialect, k *kavari.Client) (*service, error) {
	ob, err := outbox.New(k, outbox.Config{Dialect: d})
	if err != nil {
		return nil, err
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, amount BIGINT NOT NULL)`); err != nil {
		return nil, err
	}
	if err := ob.CreateSchema(ctx, db); err != nil {
		return nil, err
	}
	return &service{db: db, d: d, ob: ob, relay: ob.NewRelay(db, outbox.RelayConfig{})}, nil
}

func (s *service) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /orders", s.placeOrder)
	mux.HandleFunc("GET /health", s.health)
	return mux
}

// placeOrder stores the order and its OrderPlaced event in one transaction.
func (s *service) placeOrder(w http.ResponseWriter, r *http.Request) {
	var o OrderPlaced
	if err := json.NewDecoder(r.Body).Decode(&o); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ctx := r.Context()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer func() { _ = tx.Rollback() }()
	insert := `INSERT INTO orders (id, amount) VALUES (?, ?)`
	if s.d == outbox.Postgres {
		insert = `INSERT INTO orders (id, amount) VALUES ($1, $2)`
	}
	// Validate first: an invalid order stores nothing.
	id, err := s.ob.Publish(ctx, tx, &o)
	if errors.Is(err, kavari.ErrInvalid) {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	if _, err := tx.ExecContext(ctx, insert, o.OrderID, o.Amount); err != nil {
		http.Error(w, err.Error(), http.StatusConflict)
		return
	}
	if err := tx.Commit(); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(map[string]string{"order_id": o.OrderID, "ce_id": id})
}

// health reports the outbox's backlog.
func (s *service) health(w http.ResponseWriter, r *http.Request) {
	h, err := s.relay.Health(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"backlog_rows": h.Backlog, "oldest_age_seconds": h.OldestAge.Seconds(), "dead_rows": h.Dead,
		"kafka_down": h.KafkaDown, "published": h.Published, "last_error": h.LastError,
	})
}
