// Command quickstart is kavari in one file: two typed, validated messages, a
// handler for each, publishing with Publish, PublishBatch and PublishAsync,
// and a graceful stop.
//
//	go run ./examples/quickstart            # embedded broker, nothing to install
//	go run ./examples/quickstart -n 100000 -v
//	KAVARI_BROKERS=localhost:9092 go run ./examples/quickstart
//
// Without KAVARI_BROKERS it starts an embedded Kafka-protocol broker
// (kavaritest, on franz-go's kfake) inside the process. It exits 0 when every
// published message was handled, 1 otherwise.
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
	"sync/atomic"
	"time"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/kavaritest"
	"github.com/kavari-go/kavari/validate"
)

// OrderPlaced goes to topic quickstart.orders, keyed by OrderID: every message
// of one order lands on the same partition and is handled in order. The
// validate tags are checked before publishing and again after consuming.
type OrderPlaced struct {
	kavari.Message `kavari:"topic=quickstart.orders,key=OrderID,name=order.placed"`
	OrderID        string `json:"order_id" validate:"required"`
	Customer       string `json:"customer" validate:"required,email"`
	AmountCents    int64  `json:"amount_cents" validate:"gt=0"`
	Currency       string `json:"currency" validate:"oneof=EUR USD GBP"`
}

// PaymentReceived goes to topic quickstart.payments; its logical type name
// (the msg_type header) defaults to "PaymentReceived".
type PaymentReceived struct {
	kavari.Message `kavari:"topic=quickstart.payments,key=OrderID"`
	OrderID        string `json:"order_id" validate:"required"`
	AmountCents    int64  `json:"amount_cents" validate:"gt=0"`
	Method         string `json:"method" validate:"oneof=card transfer"`
}

// OrderPlacedHandler is a handler struct: kavari builds one with its factory
// for every message (or asks a DI container; see examples/di).
type OrderPlacedHandler struct{ seen *tally }

// Handle is called once per OrderPlaced, with a decoded and validated message.
// Returning an error makes kavari retry it, then dead-letter it to
// quickstart.orders.dlq.
func (h *OrderPlacedHandler) Handle(ctx context.Context, m *OrderPlaced) error {
	h.seen.add(m.OrderID)
	return nil
}

func main() {
	os.Exit(run())
}

func run() int {
	n := flag.Int("n", 1000, "messages of each type to publish")
	timeout := flag.Duration("timeout", 2*time.Minute, "how long to wait for every message to be handled")
	verbose := flag.Bool("v", false, "log kavari's info messages")
	flag.Parse()

	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	// 1. A Kafka: yours when KAVARI_BROKERS is set, else an embedded one.
	brokers, where, closeBroker, err := kafka()
	if err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		return 1
	}
	defer closeBroker()
	fmt.Println("kavari quickstart")
	fmt.Println("  broker:   ", where)

	// 2. Handlers, on kavari.DefaultRegistry. (kavari.RegisterOn and
	// RegisterFuncOn do the same on a registry of your own.)
	// Order ids carry a run id: on a shared cluster this run counts only its
	// own messages, not those of earlier runs still in the topics.
	runTag := runID()
	orders, payments := newTally(runTag), newTally(runTag)
	if err := kavari.Register(&OrderPlaced{}, func() *OrderPlacedHandler {
		return &OrderPlacedHandler{seen: orders}
	}); err != nil {
		return fail(err)
	}
	if err := kavari.RegisterFunc(&PaymentReceived{}, func(ctx context.Context, m *PaymentReceived) error {
		payments.add(m.OrderID)
		return nil
	}); err != nil {
		return fail(err)
	}

	// 3. A Client: one publisher and one consumer group member.
	k, err := kavari.New(kavari.Config{
		Brokers: brokers,
		Logger:  log,
		Consume: kavari.ConsumeConfig{
			GroupID: "kavari-quickstart-" + runTag,
		},
	})
	if err != nil {
		return fail(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := k.EnsureTopics(ctx); err != nil {
		return fail(err)
	}
	fmt.Println("  topics:   ", strings.Join(kavari.DefaultRegistry.Topics(), ", "), "(and their .dlq dead-letter topics)")
	if err := k.Start(ctx); err != nil {
		return fail(err)
	}
	fmt.Println("  consumer:  group kavari-quickstart-"+runTag, "consuming in the background")

	// 4. An invalid message never leaves the process.
	fmt.Println()
	bad := &OrderPlaced{Customer: "bob-at-example", AmountCents: -5, Currency: "XYZ"}
	_, err = k.Publish(ctx, bad)
	var verr *validate.Error
	if !errors.As(err, &verr) {
		return fail(fmt.Errorf("an invalid message was not rejected: %v", err))
	}
	fmt.Printf("Publish(invalid OrderPlaced) was rejected, nothing sent (errors.Is(err, kavari.ErrInvalid) = %t):\n", errors.Is(err, kavari.ErrInvalid))
	fmt.Printf("  %-14s %-19s %s\n", "FIELD", "RULE", "VALUE")
	for _, f := range verr.Fields {
		rule := f.Rule
		if f.Param != "" {
			rule += "=" + f.Param
		}
		fmt.Printf("  %-14s %-19s %#v\n", f.Path, rule, f.Value)
	}

	// 5. Publish n of each type, three ways.
	fmt.Println()
	began := time.Now()
	syncN, err := publishOrders(ctx, k, runTag, *n)
	if err != nil {
		return fail(err)
	}
	fmt.Printf("published %d OrderPlaced:     %d with Publish (one at a time, acknowledged), %d with PublishBatch\n", *n, syncN, *n-syncN)
	acked, asyncErrs := publishPayments(ctx, k, runTag, *n)
	fmt.Printf("published %d PaymentReceived: with PublishAsync, %d callbacks said ok, %d said failed\n", *n, acked, asyncErrs)
	published := time.Since(began)

	// 6. Wait until the consumer handled everything.
	want := 2 * *n
	handled := func() int { return orders.count() + payments.count() }
	for handled() < want && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	took := time.Since(began)
	parts := 0
	for _, ps := range k.Health().Assigned {
		parts += len(ps)
	}
	fmt.Printf("handled   %d OrderPlaced and %d PaymentReceived, from %d partitions\n", orders.count(), payments.count(), parts)
	if d := orders.duplicates() + payments.duplicates(); d > 0 {
		fmt.Printf("          %d redelivered duplicates ignored (delivery is at-least-once)\n", d)
	}
	fmt.Printf("took      %v to publish, %v until all were handled (%.0f msg/s)\n",
		published.Round(time.Millisecond), took.Round(time.Millisecond), float64(handled())/took.Seconds())

	// 7. Stop: stop fetching, finish in-flight handlers, commit, leave the
	// group, flush the publisher. Bounded by a deadline; the drain itself is
	// cut at SessionTimeout − HeartbeatInterval − 2 s (5 s by default), because no
	// heartbeats are sent while draining.
	stopCtx, stopCancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer stopCancel()
	stopErr := k.Stop(stopCtx)
	if stopErr != nil {
		fmt.Println("stop:     ", stopErr)
	} else {
		fmt.Println("stopped   cleanly: in-flight work finished, offsets committed, group left, publisher flushed")
	}

	fmt.Println()
	if got := handled(); got != want || asyncErrs != 0 || stopErr != nil {
		fmt.Printf("FAIL: handled %d of %d published messages\n", got, want)
		return 1
	}
	fmt.Printf("OK: handled == published == %d\n", want)
	fmt.Println("next: examples/di (handlers built by a DI container), examples/httpservice (publish from HTTP, /health)")
	return 0
}

// kafka returns the brokers to use, a description, and a function that
// releases them.
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

// publishOrders publishes n orders: the first few with Publish, the rest with
// PublishBatch in chunks. It returns how many went through Publish.
func publishOrders(ctx context.Context, k *kavari.Client, run string, n int) (int, error) {
	order := func(i int) *OrderPlaced {
		return &OrderPlaced{
			OrderID:     fmt.Sprintf("%s-%06d", run, i),
			Customer:    fmt.Sprintf("customer%d@example.com", i%50),
			AmountCents: int64(100 + i),
			Currency:    "EUR",
		}
	}
	syncN := min(n, 10)
	for i := 0; i < syncN; i++ {
		// Returns once all in-sync replicas acknowledged the message.
		if _, err := k.Publish(ctx, order(i)); err != nil {
			return 0, err
		}
	}
	const chunk = 250
	batch := make([]kavari.Msg, 0, chunk)
	for i := syncN; i < n; i++ {
		batch = append(batch, order(i))
		if len(batch) == chunk || i == n-1 {
			// All or nothing for validation; each message retried on its own.
			if _, err := k.PublishBatch(ctx, batch...); err != nil {
				return 0, err
			}
			batch = batch[:0]
		}
	}
	return syncN, nil
}

// publishPayments queues n payments with PublishAsync and waits for their
// callbacks. It returns how many were acknowledged and how many failed.
func publishPayments(ctx context.Context, k *kavari.Client, run string, n int) (acked, failed int64) {
	var wg sync.WaitGroup
	var ok, bad atomic.Int64
	wg.Add(n)
	for i := 0; i < n; i++ {
		methods := [...]string{"card", "transfer"}
		p := &PaymentReceived{OrderID: fmt.Sprintf("%s-%06d", run, i), AmountCents: int64(100 + i), Method: methods[i%2]}
		// Returns at once (blocks only while the queue is full); the callback
		// runs exactly once, on one of kavari's goroutines.
		k.PublishAsync(ctx, p, func(r kavari.Receipt, err error) {
			defer wg.Done()
			if err != nil {
				bad.Add(1)
				fmt.Fprintln(os.Stderr, "async publish failed:", err)
				return
			}
			ok.Add(1)
		})
	}
	wg.Wait()
	return ok.Load(), bad.Load()
}

// tally counts distinct order ids of this run. Delivery is at-least-once, so a
// message may come twice (after a rebalance, say); handlers that must not
// double-count deduplicate, here by order id.
type tally struct {
	run  string
	mu   sync.Mutex
	seen map[string]bool
	dups int
}

func newTally(run string) *tally { return &tally{run: run, seen: map[string]bool{}} }

func (t *tally) add(id string) {
	if !strings.HasPrefix(id, t.run+"-") {
		return // an earlier run's message, on a shared cluster
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.seen[id] {
		t.dups++
		return
	}
	t.seen[id] = true
}

func (t *tally) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.seen)
}

func (t *tally) duplicates() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.dups
}

func runID() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func fail(err error) int {
	fmt.Fprintln(os.Stderr, "quickstart:", err)
	return 1
}
