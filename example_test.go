package kavari_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"time"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/validate"
)

// exOrderPlaced is the message of the examples: topic example-orders, keyed
// by OrderID, with the logical name order.placed in its msg_type header.
type exOrderPlaced struct {
	kavari.Message `kavari:"topic=example-orders,key=OrderID,name=order.placed"`
	OrderID        string `json:"order_id" validate:"required"`
	Customer       string `json:"customer" validate:"required,email"`
	Amount         int64  `json:"amount" validate:"gt=0"`
}

// exOrderHandler is a handler type, as registered with RegisterOn or
// RegisterProvidedOn.
type exOrderHandler struct {
	service string
	out     chan<- string
}

func (h *exOrderHandler) Handle(ctx context.Context, m *exOrderPlaced) error {
	rec, _ := kavari.RecordFromContext(ctx)
	h.out <- fmt.Sprintf("%s handled %s (%s on %s)", h.service, m.OrderID, rec.Type, rec.Topic)
	return nil
}

// exBroker starts the embedded broker the examples run against:
// kavaritest's (kavaritest.Start), run by testenv in a child process, since
// kavaritest is a module of its own, which the kavari module does not
// require.
func exBroker() (*testenv.Broker, error) { return testenv.StartEmbedded() }

// exStart starts an embedded broker and a Client consuming reg, and returns
// the Client and a function that stops both. Examples have no *testing.T, so
// it panics on failure.
func exStart(reg *kavari.Registry, provider kavari.Provider) (*kavari.Client, func()) {
	broker, err := exBroker()
	if err != nil {
		panic(err)
	}
	k, err := kavari.New(kavari.Config{
		Brokers:  broker.Addrs(),
		Registry: reg,
		Logger:   slog.New(slog.DiscardHandler),
		Consume: kavari.ConsumeConfig{
			GroupID: "example",
		},
	})
	if err != nil {
		panic(err)
	}
	if provider != nil {
		k.SetProvider(provider)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := k.EnsureTopics(ctx); err != nil {
		panic(err)
	}
	if err := k.Start(ctx); err != nil {
		panic(err)
	}
	return k, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := k.Stop(ctx); err != nil {
			fmt.Println("stop:", err)
		}
		broker.Close()
	}
}

// exReceive prints n lines from out, in the order they arrive.
func exReceive(out <-chan string, n int) {
	timeout := time.After(30 * time.Second)
	for i := 0; i < n; i++ {
		select {
		case s := <-out:
			fmt.Println(s)
		case <-timeout:
			fmt.Println("timed out")
			return
		}
	}
}

// A round trip on the embedded broker: register a handler function, start
// consuming, publish. Messages with the same key are handled one at a time,
// in the order they were published.
func ExampleClient_Publish() {
	reg := kavari.NewRegistry()
	handled := make(chan string, 10)
	err := kavari.RegisterFuncOn(reg, &exOrderPlaced{}, func(ctx context.Context, m *exOrderPlaced) error {
		handled <- fmt.Sprintf("order %s: %d cents from %s", m.OrderID, m.Amount, m.Customer)
		return nil
	})
	if err != nil {
		panic(err)
	}

	broker, err := exBroker() // an embedded broker (kavaritest.Start); use your Kafka's addresses instead
	if err != nil {
		panic(err)
	}
	defer broker.Close()
	k, err := kavari.New(kavari.Config{
		Brokers:  broker.Addrs(),
		Registry: reg,
		Logger:   slog.New(slog.DiscardHandler),
		Consume: kavari.ConsumeConfig{
			GroupID: "example",
		},
	})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := k.EnsureTopics(ctx); err != nil { // example-orders and example-orders.dlq
		panic(err)
	}
	if err := k.Start(ctx); err != nil { // consume in the background
		panic(err)
	}
	defer k.Stop(ctx) // drain, commit, leave the group, flush

	for i := 1; i <= 3; i++ {
		// All three share the key "o-1": same partition, handled in order.
		_, err := k.Publish(ctx, &exOrderPlaced{OrderID: "o-1", Customer: "ann@example.com", Amount: int64(100 * i)})
		if err != nil {
			panic(err)
		}
	}
	exReceive(handled, 3)
	// Output:
	// order o-1: 100 cents from ann@example.com
	// order o-1: 200 cents from ann@example.com
	// order o-1: 300 cents from ann@example.com
}

// An invalid message is refused before anything is sent; errors.As with
// *validate.Error gives the failing fields.
func ExampleClient_Publish_invalid() {
	// New does not contact the brokers, and validation happens before any
	// network call.
	k, err := kavari.New(kavari.Config{Brokers: []string{"localhost:9092"}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	defer k.Stop(ctx)

	_, err = k.Publish(ctx, &exOrderPlaced{Customer: "ann-at-example", Amount: -5})
	fmt.Println(errors.Is(err, kavari.ErrInvalid))
	fmt.Println(err)
	var verr *validate.Error
	if errors.As(err, &verr) {
		for _, f := range verr.Fields {
			fmt.Printf("field=%s rule=%s param=%q value=%#v\n", f.Path, f.Rule, f.Param, f.Value)
		}
	}
	// Output:
	// true
	// kavari: invalid exOrderPlaced: order_id: required; customer: must satisfy email (got "ann-at-example"); amount: must satisfy gt=0 (got -5)
	// field=order_id rule=required param="" value=""
	// field=customer rule=email param="" value="ann-at-example"
	// field=amount rule=gt param="0" value=-5
}

// PublishAsync queues the message and returns; the callback runs exactly once
// with the outcome.
func ExampleClient_PublishAsync() {
	broker, err := exBroker()
	if err != nil {
		panic(err)
	}
	defer broker.Close()
	// A publisher needs no handler; Declare makes the topic known to
	// EnsureTopics.
	reg := kavari.NewRegistry()
	if err := reg.Declare(&exOrderPlaced{}); err != nil {
		panic(err)
	}
	k, err := kavari.New(kavari.Config{Brokers: broker.Addrs(), Registry: reg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := k.EnsureTopics(ctx); err != nil {
		panic(err)
	}

	var wg sync.WaitGroup
	results := make([]string, 3)
	for i := range results {
		wg.Add(1)
		m := &exOrderPlaced{OrderID: fmt.Sprintf("o-%d", i+1), Customer: "ann@example.com", Amount: 100}
		if i == 2 {
			m.Amount = 0 // invalid: its callback runs before PublishAsync returns
		}
		k.PublishAsync(context.Background(), m, func(r kavari.Receipt, err error) {
			defer wg.Done()
			results[i] = fmt.Sprintf("%s: acknowledged=%t invalid=%t", r.Message.(*exOrderPlaced).OrderID, err == nil, errors.Is(err, kavari.ErrInvalid))
		})
	}
	wg.Wait()
	for _, r := range results {
		fmt.Println(r)
	}

	// Stop flushes whatever is still queued.
	fmt.Println("stop:", k.Stop(ctx))
	// Output:
	// o-1: acknowledged=true invalid=false
	// o-2: acknowledged=true invalid=false
	// o-3: acknowledged=false invalid=true
	// stop: <nil>
}

// A handler type with a factory: kavari calls the factory for each message
// (unless a Provider is set), and the handler reads the record's metadata
// from its context.
func ExampleRegisterOn() {
	reg := kavari.NewRegistry()
	handled := make(chan string, 10)
	err := kavari.RegisterOn(reg, &exOrderPlaced{}, func() *exOrderHandler {
		return &exOrderHandler{service: "billing", out: handled}
	})
	if err != nil {
		panic(err)
	}
	k, stop := exStart(reg, nil)
	defer stop()

	if _, err := k.Publish(context.Background(), &exOrderPlaced{OrderID: "o-7", Customer: "bob@example.com", Amount: 700}); err != nil {
		panic(err)
	}
	exReceive(handled, 1)
	// Output:
	// billing handled o-7 (order.placed on example-orders)
}

// MapProvider serves fixed handler instances by type, for applications
// without a DI container. Handlers registered with RegisterProvidedOn name
// only their type (a typed nil); the provider supplies the instance.
func ExampleMapProvider() {
	handled := make(chan string, 10)
	provider := kavari.MapProvider(&exOrderHandler{service: "shipping", out: handled})

	// A provider is a func(reflect.Type) (any, error):
	h, err := provider(reflect.TypeFor[*exOrderHandler]())
	fmt.Printf("%T %v\n", h, err)
	_, err = provider(reflect.TypeFor[*exRefundHandler]())
	fmt.Println(err)

	reg := kavari.NewRegistry()
	if err := kavari.RegisterProvidedOn(reg, &exOrderPlaced{}, (*exOrderHandler)(nil)); err != nil {
		panic(err)
	}
	k, stop := exStart(reg, provider)
	defer stop()
	if _, err := k.Publish(context.Background(), &exOrderPlaced{OrderID: "o-9", Customer: "cy@example.com", Amount: 900}); err != nil {
		panic(err)
	}
	exReceive(handled, 1)
	// Output:
	// *kavari_test.exOrderHandler <nil>
	// kavari: MapProvider has no handler of type *kavari_test.exRefundHandler
	// shipping handled o-9 (order.placed on example-orders)
}

type exRefundHandler struct{}

func (exRefundHandler) Handle(context.Context, *exOrderPlaced) error { return nil }

// Delays shows the waits a policy would use between attempts.
func ExampleRetryPolicy_Delays() {
	// The Python kavari's policy: Fibonacci multiples of the base delay.
	fmt.Println(kavari.FibonacciRetry(100*time.Millisecond, 8).Delays(10))
	// A cap on each wait.
	fmt.Println(kavari.RetryPolicy{BaseDelay: time.Second, MaxDelay: 5 * time.Second}.Delays(7))
	// Exponential waits are shown before their jitter.
	fmt.Println(kavari.ExponentialRetry(50*time.Millisecond, 6).Delays(10))
	fmt.Println(kavari.ConstantRetry(time.Second, 4).Delays(10))
	fmt.Println(len(kavari.NoRetry().Delays(10)))
	// Output:
	// [100ms 200ms 300ms 500ms 800ms 1.3s 2.1s]
	// [1s 2s 3s 5s 5s 5s 5s]
	// [50ms 100ms 200ms 400ms 800ms]
	// [1s 1s 1s]
	// 0
}
