// Command httpservice is a net/http service that publishes and consumes with
// kavari: the Go counterpart of the Python kavari's FastAPI lifespan example.
//
//	POST /orders       JSON order -> OrderPlaced; 202 when published, 400 with
//	                   the failing fields when invalid, 503 when Kafka fails
//	GET  /orders/{id}  202 while the order waits for its handler, 200 once handled
//	GET  /health       kavari's Health as JSON; 503 until the consumer is ready (Health.Ready)
//	GET  /metrics      Prometheus metrics (kavariotel's, through the OTel Prometheus exporter)
//
// Lifespan: kavari starts consuming before the server accepts requests; on
// SIGINT or SIGTERM the server stops taking requests and finishes those in
// progress (http.Server.Shutdown), then kavari drains its handlers, commits
// and flushes (Client.Stop), each within a deadline.
//
//	go run ./examples/httpservice -addr :8080
//	curl -i -d '{"order_id":"o-1","customer":"ann@example.com","amount_cents":1250}' localhost:8080/orders
//	curl -i localhost:8080/orders/o-1
//	curl -s localhost:8080/health
//	curl -s localhost:8080/metrics | grep -E '^(messaging|kavari)_'
//
// -trace stdout prints every span (publish, process) on stdout; -trace otlp
// sends them to OTEL_EXPORTER_OTLP_ENDPOINT (default localhost:4318).
//
// With -selftest it serves on a free port, sends itself a few orders (one
// invalid), waits until they are handled, shuts down as on SIGTERM and exits
// 0 when everything behaved.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/contract"
	"github.com/kavari-go/kavari/kavaritest"
	"github.com/kavari-go/kavari/validate"
)

// OrderPlaced is both the HTTP request body and the Kafka message.
type OrderPlaced struct {
	kavari.Message `kavari:"topic=httpservice.orders,key=OrderID,name=order.placed"`
	OrderID        string `json:"order_id" validate:"required,max=64"`
	Customer       string `json:"customer" validate:"required,email"`
	AmountCents    int64  `json:"amount_cents" validate:"gt=0"`
}

// store remembers which orders were accepted and which were handled.
type store struct {
	mu      sync.Mutex
	handled map[string]bool // order id -> handled
}

func (s *store) accept(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.handled[id]; !ok {
		s.handled[id] = false
	}
}

func (s *store) markHandled(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handled[id] = true
}

func (s *store) state(id string) (known, handled bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	handled, known = s.handled[id]
	return known, handled
}

// service holds what the HTTP handlers need.
type service struct {
	k     *kavari.Client
	store *store
	log   *slog.Logger
	// contract is the service's AsyncAPI document, served at GET /asyncapi.
	contract *contract.Document
	metrics  http.Handler // GET /metrics
}

func (s *service) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /orders", s.postOrder)
	mux.HandleFunc("GET /orders/{id}", s.getOrder)
	mux.HandleFunc("GET /health", s.health)
	mux.Handle("GET /asyncapi", s.contract) // ?format=yaml for YAML
	mux.Handle("GET /metrics", s.metrics)
	return mux
}

// fieldError is one failing field in a 400 response.
type fieldError struct {
	Field   string `json:"field"`
	Rule    string `json:"rule"`
	Param   string `json:"param,omitempty"`
	Message string `json:"message"`
}

func (s *service) postOrder(w http.ResponseWriter, r *http.Request) {
	var o OrderPlaced
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&o); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "body is not an order: " + err.Error()})
		return
	}
	// The request's context bounds the publish; a client that goes away
	// cancels it.
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	receipt, err := s.k.Publish(ctx, &o)
	var verr *validate.Error
	switch {
	case errors.As(err, &verr):
		// Validation runs before anything is sent: answer field by field.
		fields := make([]fieldError, len(verr.Fields))
		for i, f := range verr.Fields {
			fields[i] = fieldError{Field: f.Path, Rule: f.Rule, Param: f.Param, Message: f.Error()}
		}
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "invalid order", "fields": fields})
	case err != nil:
		s.log.Error("publish failed", "order_id", o.OrderID, "err", err)
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": "could not publish, try again"})
	default:
		s.store.accept(o.OrderID) // keeps "handled" if the handler was quicker than this line
		w.Header().Set("Location", "/orders/"+o.OrderID)
		// The receipt says where Kafka stored the event, and its ce_id.
		writeJSON(w, http.StatusAccepted, map[string]any{"order_id": o.OrderID, "status": "accepted",
			"event": map[string]any{"id": receipt.ID, "topic": receipt.Topic, "partition": receipt.Partition, "offset": receipt.Offset}})
	}
}

func (s *service) getOrder(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	switch known, handled := s.store.state(id); {
	case handled:
		writeJSON(w, http.StatusOK, map[string]any{"order_id": id, "status": "handled"})
	case known:
		writeJSON(w, http.StatusAccepted, map[string]any{"order_id": id, "status": "accepted"})
	default:
		writeJSON(w, http.StatusNotFound, map[string]any{"error": "no such order"})
	}
}

// health reports kavari's Health; load balancers and Kubernetes probes read
// the status code.
func (s *service) health(w http.ResponseWriter, r *http.Request) {
	h := s.k.Health()
	code := http.StatusOK
	if !h.Ready() {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, h)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func main() {
	os.Exit(run())
}

func run() int {
	addr := flag.String("addr", ":8080", "listen address")
	selftest := flag.Bool("selftest", false, "serve on a free loopback port, send a few orders to itself, shut down, exit 0 on success")
	timeout := flag.Duration("timeout", time.Minute, "with -selftest: how long to wait for the orders to be handled")
	verbose := flag.Bool("v", false, "log kavari's info messages")
	traceTo := flag.String("trace", "none", "where spans go: none, stdout or otlp (OTEL_EXPORTER_OTLP_ENDPOINT)")
	group := flag.String("group", "httpservice", "consumer group: the replicas of one service share it and split the partitions")
	flag.Parse()
	if *selftest {
		*addr = "127.0.0.1:0"
	}

	level := slog.LevelWarn
	if *verbose || !*selftest {
		level = slog.LevelInfo // a service logs what it does
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	brokers, closeBroker, err := kafka(log)
	if err != nil {
		log.Error("no Kafka", "err", err)
		return 1
	}
	defer closeBroker()

	// Start-up, in the order of the Python example's lifespan: register
	// handlers, start consuming, then serve.
	st := &store{handled: map[string]bool{}}
	reg := kavari.NewRegistry()
	if err := kavari.RegisterFuncOn(reg, &OrderPlaced{}, func(ctx context.Context, m *OrderPlaced) error {
		log.Info("order handled", "order_id", m.OrderID, "amount_cents", m.AmountCents)
		st.markHandled(m.OrderID)
		return nil
	}); err != nil {
		log.Error("register", "err", err)
		return 1
	}
	doc, err := contract.Build(reg, contract.WithInfo("httpservice", "1.0.0", "examples/httpservice"))
	if err != nil {
		log.Error("contract", "err", err)
		return 1
	}
	tel, err := newTelemetry(context.Background(), *traceTo, "httpservice")
	if err != nil {
		log.Error("telemetry", "err", err)
		return 1
	}
	defer func() { _ = tel.shutdown(context.Background()) }()
	k, err := kavari.New(kavari.Config{
		Brokers:    brokers,
		Registry:   reg,
		Logger:     log,
		Hooks:      []kavari.Hook{tel.inst},
		Middleware: []kavari.Middleware{tel.inst.Middleware()},
		Consume: kavari.ConsumeConfig{
			GroupID: *group,
		},
		Topics: kavari.TopicConfig{
			Create: true, // Start creates the topics
		},
	})
	if err != nil {
		log.Error("kavari", "err", err)
		return 1
	}
	if _, err := tel.inst.Observe(k); err != nil {
		log.Error("metrics", "err", err)
		return 1
	}
	startCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := k.Start(startCtx); err != nil {
		log.Error("kavari start", "err", err)
		return 1
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Error("listen", "err", err)
		return 1
	}
	svc := &service{k: k, store: st, log: log, contract: doc, metrics: tel.metrics}
	srv := &http.Server{Handler: svc.routes(), ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("serving", "addr", ln.Addr().String())

	// Run until a signal (or, with -selftest, until the test is done).
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ok := true
	if *selftest {
		ok = selfTest(ctx, "http://"+ln.Addr().String(), *timeout)
	} else {
		select {
		case <-ctx.Done():
			log.Info("signal received, shutting down")
		case err := <-served:
			log.Error("server failed", "err", err)
			ok = false
		}
	}

	// Shutdown, the lifespan's second half: stop taking requests and let
	// those in progress publish, then stop kavari (drain, commit, flush).
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		log.Error("http shutdown", "err", err)
		ok = false
	}
	// No heartbeats are sent while Stop drains, so kavari cuts the drain at
	// SessionTimeout − HeartbeatInterval − 2 s (5 s with the defaults); the rest of
	// the deadline is for the final commit, leaving the group and flushing.
	stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := k.Stop(stopCtx); err != nil {
		log.Error("kavari stop", "err", err)
		ok = false
	}
	log.Info("stopped", "clean", ok)
	if *selftest {
		fmt.Println("shut down: http server closed, kavari stopped")
	}
	if !ok {
		return 1
	}
	return 0
}

// kafka returns KAVARI_BROKERS, or starts an embedded broker.
func kafka(log *slog.Logger) ([]string, func(), error) {
	if env := os.Getenv("KAVARI_BROKERS"); env != "" {
		return strings.Split(env, ","), func() {}, nil
	}
	b, err := kavaritest.Start()
	if err != nil {
		return nil, nil, err
	}
	log.Info("using an embedded broker; set KAVARI_BROKERS to use your Kafka", "addrs", b.Addrs())
	return b.Addrs(), b.Close, nil
}

// selfTest plays a client of the service at base: it waits for /health, posts
// valid orders and an invalid one, and polls until the valid ones are handled.
func selfTest(ctx context.Context, base string, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: 10 * time.Second}
	ok := true
	check := func(cond bool, format string, args ...any) {
		mark := "ok  "
		if !cond {
			mark, ok = "FAIL", false
		}
		fmt.Printf("%s %s\n", mark, fmt.Sprintf(format, args...))
	}
	call := func(method, path string, body any) (int, map[string]any) {
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, _ := http.NewRequestWithContext(ctx, method, base+path, rd)
		resp, err := client.Do(req)
		if err != nil {
			return 0, map[string]any{"error": err.Error()}
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	fmt.Println("selftest against", base)

	// Ready once the consumer joined its group.
	code, h := call("GET", "/health", nil)
	for code != http.StatusOK && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
		code, h = call("GET", "/health", nil)
	}
	check(code == http.StatusOK, "GET /health -> %d (connected=%v, generation %v)", code, h["connected"], h["generation"])

	var b [3]byte
	_, _ = rand.Read(b[:])
	run := hex.EncodeToString(b[:])
	var ids []string
	for i := 1; i <= 3; i++ {
		id := fmt.Sprintf("%s-%d", run, i)
		code, _ := call("POST", "/orders", map[string]any{"order_id": id, "customer": "ann@example.com", "amount_cents": 1000 * i})
		check(code == http.StatusAccepted, "POST /orders %s -> %d", id, code)
		ids = append(ids, id)
	}
	code, body := call("POST", "/orders", map[string]any{"order_id": "", "customer": "not-an-email", "amount_cents": 0})
	var fields []string
	if fs, _ := body["fields"].([]any); fs != nil {
		for _, f := range fs {
			if f, _ := f.(map[string]any); f != nil {
				fields = append(fields, fmt.Sprintf("%v:%v", f["field"], f["rule"]))
			}
		}
	}
	check(code == http.StatusBadRequest && len(fields) == 3, "POST /orders (invalid) -> %d %v", code, fields)
	code, _ = call("POST", "/orders", "not an order")
	check(code == http.StatusBadRequest, "POST /orders (not JSON of an order) -> %d", code)
	code, doc := call("GET", "/asyncapi", nil)
	check(code == http.StatusOK && doc["asyncapi"] == "3.0.0", "GET /asyncapi -> %d (AsyncAPI %v)", code, doc["asyncapi"])

	for _, id := range ids {
		code, body := call("GET", "/orders/"+id, nil)
		for code != http.StatusOK && ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond)
			code, body = call("GET", "/orders/"+id, nil)
		}
		check(code == http.StatusOK, "GET /orders/%s -> %d %v", id, code, body["status"])
	}
	// The handled orders show in the metrics.
	var metrics string
	if req, err := http.NewRequestWithContext(ctx, "GET", base+"/metrics", nil); err == nil {
		if resp, err := client.Do(req); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			metrics = string(b)
		}
	}
	check(strings.Contains(metrics, "messaging_process_duration_seconds_count") && strings.Contains(metrics, "messaging_client_sent_messages_total") &&
		strings.Contains(metrics, "kavari_consumer_lag"), "GET /metrics -> process duration, sent messages and lag")
	if ok {
		fmt.Println("selftest passed: 3 orders published and handled, invalid ones refused with 400")
	}
	return ok
}
