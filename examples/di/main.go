// Command di wires kavari handlers through a dependency-injection container,
// go.uber.org/dig, the way the Python kavari uses a consumer_provider:
//
//   - handlers are registered by type only, with kavari.RegisterProvided and a
//     typed nil: kavari never constructs them;
//   - the container knows how to build them and their dependencies (here a
//     repository and a logger);
//   - k.SetProvider hands kavari a function that resolves a handler type from
//     the container.
//
// Run it with
//
//	go run ./examples/di            # embedded broker
//	KAVARI_BROKERS=localhost:9092 go run ./examples/di
//
// It exits 0 when every message was handled by the container-built handlers.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/dig"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/kavaritest"
)

// Messages.

type OrderPlaced struct {
	kavari.Message `kavari:"topic=di.orders,key=OrderID,name=order.placed"`
	OrderID        string `json:"order_id" validate:"required"`
	AmountCents    int64  `json:"amount_cents" validate:"gt=0"`
}

type PaymentReceived struct {
	kavari.Message `kavari:"topic=di.payments,key=OrderID,name=payment.received"`
	OrderID        string `json:"order_id" validate:"required"`
	Method         string `json:"method" validate:"oneof=card transfer"`
}

// Dependencies the handlers need, as an application would have them.

// OrderRepository stores orders. The handlers depend on this interface; the
// container decides which implementation they get.
type OrderRepository interface {
	SaveOrder(ctx context.Context, id string, amountCents int64) error
	MarkPaid(ctx context.Context, id, method string) error
}

// memoryRepository is a fake OrderRepository, safe for concurrent use.
type memoryRepository struct {
	mu     sync.Mutex
	orders map[string]*order
}

type order struct {
	amountCents int64
	paidBy      string
}

func newMemoryRepository() *memoryRepository {
	return &memoryRepository{orders: map[string]*order{}}
}

func (r *memoryRepository) row(id string) *order {
	o := r.orders[id]
	if o == nil {
		o = &order{}
		r.orders[id] = o
	}
	return o
}

func (r *memoryRepository) SaveOrder(_ context.Context, id string, amountCents int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.row(id).amountCents = amountCents
	return nil
}

// MarkPaid records a payment. Orders and payments travel on different topics,
// so a payment may be handled before its order: the row is created by
// whichever comes first.
func (r *memoryRepository) MarkPaid(_ context.Context, id, method string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.row(id).paidBy = method
	return nil
}

// Handlers, built only by the container.

// OrderPlacedHandler is shared by all messages (the container builds it
// once), so it is safe for concurrent use: its state is the repository.
type OrderPlacedHandler struct {
	repo  OrderRepository
	log   *slog.Logger
	calls atomic.Int64
}

// NewOrderPlacedHandler is the constructor dig calls; its parameters are the
// handler's dependencies.
func NewOrderPlacedHandler(repo OrderRepository, log *slog.Logger) *OrderPlacedHandler {
	built.Add(1)
	return &OrderPlacedHandler{repo: repo, log: log}
}

func (h *OrderPlacedHandler) Handle(ctx context.Context, m *OrderPlaced) error {
	h.calls.Add(1)
	h.log.Debug("order placed", "order_id", m.OrderID)
	return h.repo.SaveOrder(ctx, m.OrderID, m.AmountCents)
}

type PaymentReceivedHandler struct {
	repo  OrderRepository
	calls atomic.Int64
}

func NewPaymentReceivedHandler(repo OrderRepository) *PaymentReceivedHandler {
	built.Add(1)
	return &PaymentReceivedHandler{repo: repo}
}

func (h *PaymentReceivedHandler) Handle(ctx context.Context, m *PaymentReceived) error {
	h.calls.Add(1)
	return h.repo.MarkPaid(ctx, m.OrderID, m.Method)
}

// built counts handler constructions, to show the container built each once.
var built atomic.Int64

// digProvider returns a kavari.Provider that resolves handler types from c.
//
// dig has no "give me a value of this reflect.Type" call: it fills the
// parameters of a function passed to Invoke. So for type t we build, with
// reflect.FuncOf and reflect.MakeFunc, a func(t) that stores its argument,
// and Invoke it. Nothing here names a handler type: every type registered
// with RegisterProvided is resolved the same way.
//
// A dig.Container is not safe for concurrent use, and kavari calls the
// provider from many goroutines (once per message and handler). dig's values
// are singletons anyway, so each type is resolved once, under a lock, and
// then served from a cache without touching the container again. (A
// container that builds per-request instances would skip the cache and keep
// the lock, or use its own scopes.)
func digProvider(c *dig.Container) kavari.Provider {
	var (
		mu    sync.Mutex
		cache sync.Map // reflect.Type -> handler
	)
	return func(t reflect.Type) (any, error) {
		if h, ok := cache.Load(t); ok {
			return h, nil
		}
		mu.Lock()
		defer mu.Unlock()
		if h, ok := cache.Load(t); ok {
			return h, nil
		}
		var h any
		fn := reflect.MakeFunc(reflect.FuncOf([]reflect.Type{t}, nil, false), func(args []reflect.Value) []reflect.Value {
			h = args[0].Interface()
			return nil
		})
		if err := c.Invoke(fn.Interface()); err != nil {
			return nil, err
		}
		cache.Store(t, h)
		return h, nil
	}
}

func main() {
	os.Exit(run())
}

func run() int {
	n := flag.Int("n", 5, "orders to publish (each followed by its payment)")
	timeout := flag.Duration("timeout", time.Minute, "how long to wait for the messages to be handled")
	verbose := flag.Bool("v", false, "log kavari's and the handlers' messages")
	flag.Parse()

	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	brokers, closeBroker, err := kafka()
	if err != nil {
		return fail(err)
	}
	defer closeBroker()

	// 1. Handlers are registered by type only: a typed nil names the type.
	// Without a provider kavari could not build them, and says so.
	reg := kavari.NewRegistry()
	if err := kavari.RegisterProvidedOn(reg, &OrderPlaced{}, (*OrderPlacedHandler)(nil)); err != nil {
		return fail(err)
	}
	if err := kavari.RegisterProvidedOn(reg, &PaymentReceived{}, (*PaymentReceivedHandler)(nil)); err != nil {
		return fail(err)
	}

	// 2. The container: the repository (as the OrderRepository interface),
	// the logger, and the handlers' constructors.
	repo := newMemoryRepository()
	c := dig.New()
	for _, provide := range []struct {
		ctor any
		opts []dig.ProvideOption
	}{
		{func() *memoryRepository { return repo }, []dig.ProvideOption{dig.As(new(OrderRepository))}},
		{func() *slog.Logger { return log }, nil},
		{NewOrderPlacedHandler, nil},
		{NewPaymentReceivedHandler, nil},
	} {
		if err := c.Provide(provide.ctor, provide.opts...); err != nil {
			return fail(err)
		}
	}

	k, err := kavari.New(kavari.Config{
		Brokers:  brokers,
		Registry: reg,
		Logger:   log,
		Consume: kavari.ConsumeConfig{
			GroupID: "kavari-di-" + runID(),
		},
	})
	if err != nil {
		return fail(err)
	}

	// 3. The provider: kavari asks it for *OrderPlacedHandler and
	// *PaymentReceivedHandler, the types given to RegisterProvided.
	provider := digProvider(c)
	k.SetProvider(provider)

	// Resolve each handler type once now, so a missing constructor fails at
	// start-up rather than as a handler error (retried, then dead-lettered)
	// at the first message.
	for _, t := range []reflect.Type{reflect.TypeFor[*OrderPlacedHandler](), reflect.TypeFor[*PaymentReceivedHandler]()} {
		if _, err := provider(t); err != nil {
			return fail(fmt.Errorf("container cannot build %s: %w", t, err))
		}
	}
	fmt.Println("kavari + dig")
	fmt.Println("  registered: kavari.RegisterProvided(&OrderPlaced{}, (*OrderPlacedHandler)(nil)), same for PaymentReceived")
	fmt.Println("  container:  OrderRepository <- *memoryRepository; NewOrderPlacedHandler(OrderRepository, *slog.Logger); NewPaymentReceivedHandler(OrderRepository)")
	fmt.Println("  provider:   k.SetProvider(digProvider(container))")

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := k.EnsureTopics(ctx); err != nil {
		return fail(err)
	}
	if err := k.Start(ctx); err != nil {
		return fail(err)
	}

	// 4. Publish: each order, then its payment.
	prefix := runID() + "-order-"
	var msgs []kavari.Msg
	for i := 1; i <= *n; i++ {
		id := fmt.Sprintf("%s%d", prefix, i)
		method := [...]string{"card", "transfer"}[i%2]
		msgs = append(msgs, &OrderPlaced{OrderID: id, AmountCents: int64(1000 * i)}, &PaymentReceived{OrderID: id, Method: method})
	}
	if _, err := k.PublishBatch(ctx, msgs...); err != nil {
		return fail(err)
	}
	fmt.Printf("\npublished %d OrderPlaced and %d PaymentReceived\n", *n, *n)

	// 5. Wait until the repository holds every order of this run, placed and paid.
	complete := func() (rows []string, done bool) {
		repo.mu.Lock()
		defer repo.mu.Unlock()
		done = true
		for i := 1; i <= *n; i++ {
			id := fmt.Sprintf("%s%d", prefix, i)
			o := repo.orders[id]
			if o == nil || o.amountCents == 0 || o.paidBy == "" {
				done = false
				continue
			}
			rows = append(rows, fmt.Sprintf("  order %-3d %7.2f  paid by %s", i, float64(o.amountCents)/100, o.paidBy))
		}
		return rows, done
	}
	rows, done := complete()
	for !done && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
		rows, done = complete()
	}

	oh, _ := provider(reflect.TypeFor[*OrderPlacedHandler]())
	ph, _ := provider(reflect.TypeFor[*PaymentReceivedHandler]())
	fmt.Printf("handled   %d OrderPlaced by *main.OrderPlacedHandler, %d PaymentReceived by *main.PaymentReceivedHandler\n",
		oh.(*OrderPlacedHandler).calls.Load(), ph.(*PaymentReceivedHandler).calls.Load())
	fmt.Printf("          both built by dig, %d constructor calls in all (one per handler type)\n", built.Load())
	fmt.Printf("the repository they were given holds %d orders of this run:\n", len(rows))
	for _, r := range rows {
		fmt.Println(r)
	}

	// The drain is cut at SessionTimeout − HeartbeatInterval − 2 s (5 s by default),
	// as no heartbeats are sent while draining; 10 s leaves time to commit,
	// leave the group and flush.
	stopCtx, stopCancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer stopCancel()
	if err := k.Stop(stopCtx); err != nil {
		return fail(err)
	}
	if !done {
		fmt.Printf("FAIL: %d of %d orders complete after %v\n", len(rows), *n, *timeout)
		return 1
	}
	fmt.Println("OK: every message was handled by a handler the container built")
	return 0
}

// kafka returns KAVARI_BROKERS, or starts an embedded broker.
func kafka() ([]string, func(), error) {
	if env := os.Getenv("KAVARI_BROKERS"); env != "" {
		return strings.Split(env, ","), func() {}, nil
	}
	b, err := kavaritest.Start()
	if err != nil {
		return nil, nil, err
	}
	return b.Addrs(), b.Close, nil
}

func runID() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func fail(err error) int {
	fmt.Fprintln(os.Stderr, "di:", err)
	return 1
}
