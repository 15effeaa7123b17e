// Command exactlyonce is an exactly-once consume → process → publish
// pipeline on FranzGo: the OrderPlaced handler publishes one
// InvoiceRequested per order with its context, so the invoice and the
// order's offset commit in one Kafka transaction. One handler panics right
// after publishing, once: its window aborts, the invoice it wrote is never
// visible, and the order is handled again. A read_committed consumer
// (Isolation ReadCommitted) counts the invoices: one per order.
//
//	go run ./examples/exactlyonce            # embedded broker, nothing to install
//	go run ./examples/exactlyonce -n 5000
//	KAVARI_BROKERS=localhost:9092 go run ./examples/exactlyonce
//
// It exits 0 when every order has exactly one invoice, 1 otherwise.
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
)

// OrderPlaced goes to topic eos.orders, keyed by OrderID.
type OrderPlaced struct {
	kavari.Message `kavari:"topic=eos.orders,key=OrderID"`
	OrderID        string `json:"order_id" validate:"required"`
	AmountCents    int64  `json:"amount_cents" validate:"gt=0"`
}

// InvoiceRequested goes to topic eos.invoices, keyed by OrderID.
type InvoiceRequested struct {
	kavari.Message `kavari:"topic=eos.invoices,key=OrderID"`
	OrderID        string `json:"order_id" validate:"required"`
	AmountCents    int64  `json:"amount_cents"`
}

// transactions is a hook that counts the transactions that committed and
// aborted.
type transactions struct{ committed, aborted atomic.Int64 }

var _ kavari.HookTransaction = (*transactions)(nil)

func (t *transactions) OnTransaction(ev kavari.TransactionEvent) {
	if ev.Committed {
		t.committed.Add(1)
	} else {
		t.aborted.Add(1)
	}
}

func main() {
	os.Exit(run())
}

func run() int {
	n := flag.Int("n", 1000, "orders to publish")
	timeout := flag.Duration("timeout", 2*time.Minute, "how long to wait for every invoice")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))

	brokers, where, closeBroker, err := kafka()
	if err != nil {
		return fail(err)
	}
	defer closeBroker()
	fmt.Println("kavari exactly-once")
	fmt.Println("  broker:   ", where)
	run := runID()
	name := func(topic string) string { return topic + "." + run }
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	// The billing service: exactly-once.
	billing := kavari.NewRegistry()
	crash := fmt.Sprintf("%s-%06d", run, *n/2) // its handler panics after publishing, once
	var crashed atomic.Bool
	var k *kavari.Client
	err = kavari.RegisterFuncOn(billing, &OrderPlaced{}, func(ctx context.Context, o *OrderPlaced) error {
		if _, err := k.Publish(ctx, &InvoiceRequested{OrderID: o.OrderID, AmountCents: o.AmountCents}); err != nil {
			return err
		}
		if o.OrderID == crash && crashed.CompareAndSwap(false, true) {
			panic("after publishing the invoice")
		}
		return nil
	})
	if err != nil {
		return fail(err)
	}
	if err := billing.Declare(&InvoiceRequested{}); err != nil {
		return fail(err)
	}
	txns := &transactions{}
	k, err = kavari.New(kavari.Config{
		Brokers:   brokers,
		Transport: kavari.FranzGo,
		Logger:    log,
		Registry:  billing,
		Hooks:     []kavari.Hook{txns},
		Consume: kavari.ConsumeConfig{
			GroupID:     "kavari-eos-billing-" + run,
			ExactlyOnce: kavari.ExactlyOnceConfig{TransactionalIDPrefix: "billing-" + run},
		},
		Topics: kavari.TopicConfig{Create: true, Name: name},
	})
	if err != nil {
		return fail(err)
	}
	if err := k.Start(ctx); err != nil {
		return fail(err)
	}

	// The invoicing service reads committed invoices only.
	invoicing := kavari.NewRegistry()
	var mu sync.Mutex
	invoices := map[string]int{}
	err = kavari.RegisterFuncOn(invoicing, &InvoiceRequested{}, func(_ context.Context, inv *InvoiceRequested) error {
		mu.Lock()
		invoices[inv.OrderID]++
		mu.Unlock()
		return nil
	})
	if err != nil {
		return fail(err)
	}
	reader, err := kavari.New(kavari.Config{
		Brokers:   brokers,
		Transport: kavari.FranzGo,
		Logger:    log,
		Registry:  invoicing,
		Consume:   kavari.ConsumeConfig{GroupID: "kavari-eos-invoicing-" + run, Isolation: kavari.ReadCommitted},
		Topics:    kavari.TopicConfig{Create: true, Name: name},
	})
	if err != nil {
		return fail(err)
	}
	if err := reader.Start(ctx); err != nil {
		return fail(err)
	}

	msgs := make([]kavari.Msg, *n)
	for i := range msgs {
		msgs[i] = &OrderPlaced{OrderID: fmt.Sprintf("%s-%06d", run, i), AmountCents: int64(100 + i)}
	}
	if _, err := k.PublishBatch(ctx, msgs...); err != nil {
		return fail(err)
	}
	fmt.Printf("published %d orders; the handler of one panics after publishing its invoice, once\n", *n)

	for ctx.Err() == nil {
		mu.Lock()
		got := len(invoices)
		mu.Unlock()
		if got == *n {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // a duplicate would come by now
	stopCtx, stopCancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer stopCancel()
	errs := errors.Join(k.Stop(stopCtx), reader.Stop(stopCtx))
	if errs != nil {
		return fail(errs)
	}

	mu.Lock()
	defer mu.Unlock()
	once, twice := 0, 0
	for _, c := range invoices {
		if c == 1 {
			once++
		} else {
			twice++
		}
	}
	fmt.Printf("transactions: %d committed, %d aborted (the panic's)\n", txns.committed.Load(), txns.aborted.Load())
	fmt.Printf("invoices read committed: %d orders with one, %d with more, %d without\n", once, twice, *n-len(invoices))
	if once != *n || txns.aborted.Load() == 0 {
		fmt.Println("FAIL: want one invoice per order, and the panic's window aborted")
		return 1
	}
	fmt.Println("OK: one invoice per order")
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
	fmt.Fprintln(os.Stderr, "exactlyonce:", err)
	return 1
}
