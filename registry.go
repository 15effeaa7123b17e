package kavari

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/kavari-go/kavari/validate"
)

// Handler handles one message type. Implementations must be safe for
// concurrent use unless they are built per message (by a factory or provider).
// Returning an error (or panicking) makes kavari retry the message with the
// consumer retry policy and then dead-letter it.
type Handler[T any] interface {
	Handle(ctx context.Context, msg *T) error
}

// handlerFunc adapts a function to Handler (RegisterFunc's handlers).
type handlerFunc[T any] func(ctx context.Context, msg *T) error

// Handle calls f.
func (f handlerFunc[T]) Handle(ctx context.Context, msg *T) error { return f(ctx, msg) }

// Registry maps message types to topics and handlers. Register everything at
// start-up; once a consumer using the registry starts, the registry is frozen
// and further registrations fail with ErrFrozen. A Registry is safe for
// concurrent use; reads after freezing take no lock.
//
// The zero Registry is not usable; call NewRegistry.
type Registry struct {
	mu     sync.Mutex
	byType map[reflect.Type]*route
	frozen atomic.Pointer[routeTable]
	users  int // freeze calls not undone by thaw (consumers started or starting); under mu
	// codecs are the codecs set with SetCodec, copied on write, for
	// publishing without a lock; nil when none was set.
	codecs atomic.Pointer[map[reflect.Type]*codecUse]
}

// DefaultRegistry is the registry used by the package-level Register functions
// and by a Config without a Registry.
var DefaultRegistry = NewRegistry()

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{byType: map[reflect.Type]*route{}}
}

// route is one message type and its handlers.
type route struct {
	info     *typeInfo
	bindings []*binding
	codec    *codecUse // the tag's codec, or the one set with SetCodec
	codecSet bool      // set with SetCodec
	// inPlace keeps the type's records out of the retry topics
	// (RetryInPlace): retried in place, then dead-lettered.
	inPlace bool
}

// binding is one handler of a route, in the non-generic shape the dispatcher uses.
type binding struct {
	// batch says the handler takes batches (RegisterBatch*): callBatch
	// runs it, call is nil.
	batch       bool
	name        string       // for logs and dead letters
	handlerType reflect.Type // key given to a Provider; nil for plain funcs
	fn          uintptr      // identity of a RegisterFunc function value; 0 otherwise
	// build returns a handler instance from the factory (nil when only a
	// provider can build it).
	build func() (any, error)
	// call runs handler h (as returned by build or a provider) on msg (a *T).
	call func(ctx context.Context, h any, msg any) error
	// batchOf returns msgs (each a *T) as a []*T, the batch a batch
	// handler takes; callBatch runs batch handler h on such a batch.
	batchOf   func(msgs []any) any
	callBatch func(ctx context.Context, h any, batch any) error
}

// routeTable is the read-only view of a frozen registry.
type routeTable struct {
	byTopic map[string]map[string]*route // topic -> logical name -> route
	topics  []string
	// real maps tag topics to real ones (Config.Topics.Name) in a client's
	// table, whose byTopic and topics hold real topics; nil in a registry's.
	real map[string]string
}

// Register registers a handler factory for message type T on DefaultRegistry.
// The factory is called for each message unless a Provider is set, which is
// then asked for a handler of type H. See RegisterOn.
func Register[T any, PT MsgPtr[T], H Handler[T]](msg PT, factory func() H) error {
	return RegisterOn(DefaultRegistry, msg, factory)
}

// RegisterOn registers a handler factory for message type T on r.
// Registering the same handler type twice for T fails with ErrDuplicate;
// several different handlers per type are allowed and all run for each message.
func RegisterOn[T any, PT MsgPtr[T], H Handler[T]](r *Registry, msg PT, factory func() H) error {
	if factory == nil {
		return fmt.Errorf("kavari: Register %T: nil factory", msg)
	}
	ht := reflect.TypeFor[H]()
	return r.add(msg, &binding{
		name:        ht.String(),
		handlerType: ht,
		build:       func() (any, error) { return factory(), nil },
		call:        callHandler[T],
	})
}

// RegisterFunc registers a handler function for message type T on DefaultRegistry.
func RegisterFunc[T any, PT MsgPtr[T]](msg PT, fn func(ctx context.Context, msg *T) error) error {
	return RegisterFuncOn(DefaultRegistry, msg, fn)
}

// RegisterFuncOn registers a handler function for message type T on r.
// Functions are never resolved through a Provider. Registering the same
// function value twice for T fails with ErrDuplicate; two closures made by
// one function literal are different values and both run. A function
// handler's name (the kavari_handler header, logs) is its Go name, e.g.
// "main.onOrder" or "main.main.func1" for a function literal, with a "#2",
// "#3"… suffix when another handler of T has the same name.
func RegisterFuncOn[T any, PT MsgPtr[T]](r *Registry, msg PT, fn func(ctx context.Context, msg *T) error) error {
	if fn == nil {
		return fmt.Errorf("kavari: RegisterFunc %T: nil function", msg)
	}
	h := handlerFunc[T](fn)
	name := fmt.Sprintf("func(%T)", msg)
	if f := runtime.FuncForPC(reflect.ValueOf(fn).Pointer()); f != nil {
		name = f.Name()
	}
	return r.add(msg, &binding{
		name:  name,
		fn:    funcIdentity(fn),
		build: func() (any, error) { return h, nil },
		call:  callHandler[T],
	})
}

// funcIdentity returns what tells two function values apart: the address
// of the closure a func value points to (the code pointer alone would make
// two closures of one literal, with different captured state, equal). A top-
// level function used twice gives the same address.
func funcIdentity[F any](fn F) uintptr {
	return uintptr(*(*unsafe.Pointer)(unsafe.Pointer(&fn)))
}

// RegisterProvided registers handler type H for message type T on
// DefaultRegistry, leaving its construction to the Provider (see
// Client.SetProvider). Pass a typed nil to name the type:
//
//	kavari.RegisterProvided(&OrderPlaced{}, (*OrderPlacedHandler)(nil))
func RegisterProvided[T any, PT MsgPtr[T], H Handler[T]](msg PT, handlerType H) error {
	return RegisterProvidedOn(DefaultRegistry, msg, handlerType)
}

// RegisterProvidedOn is RegisterProvided on registry r.
func RegisterProvidedOn[T any, PT MsgPtr[T], H Handler[T]](r *Registry, msg PT, _ H) error {
	ht := reflect.TypeFor[H]()
	return r.add(msg, &binding{name: ht.String(), handlerType: ht, call: callHandler[T]})
}

// Declare registers message type msg with no handler on DefaultRegistry, so
// its topic is known to EnsureTopics and its tag is checked at start-up.
func Declare(msg Msg) error { return DefaultRegistry.Declare(msg) }

// Declare registers message type msg (a pointer to a kavari message struct)
// with no handler. Publishing does not require it; it makes the tag fail at
// start-up rather than at first publish and adds the topic to EnsureTopics.
func (r *Registry) Declare(msg Msg) error { return r.add(msg, nil) }

// MsgPtr is the constraint of the Register functions' message argument:
// *T where T embeds Message, so that they take &OrderPlaced{} and infer T
// from it.
type MsgPtr[T any] interface {
	*T
	Msg
}

func callHandler[T any](ctx context.Context, h any, msg any) error {
	hh, ok := h.(Handler[T])
	if !ok {
		return fmt.Errorf("kavari: handler %T does not implement kavari.Handler[%s]", h, reflect.TypeFor[T]())
	}
	return hh.Handle(ctx, msg.(*T))
}

func (r *Registry) add(msg any, b *binding) error {
	info, _, err := messageValue(msg)
	if err != nil {
		return err
	}
	// A malformed validate tag is found now, not at the first publish.
	zero := reflect.New(info.typ).Interface()
	if err := validate.Struct(zero); err != nil && !errors.Is(err, ErrInvalid) {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.frozen.Load() != nil {
		return ErrFrozen
	}
	rt := r.byType[info.typ]
	if rt == nil {
		for _, other := range r.byType {
			if other.info.topic == info.topic && other.info.name == info.name {
				return fmt.Errorf("%w: %s and %s both use name %q on topic %q", ErrDuplicate, other.info.typ, info.typ, info.name, info.topic)
			}
		}
		rt = &route{info: info, codec: info.codec}
		r.byType[info.typ] = rt
	}
	if b == nil {
		return nil
	}
	if b.handlerType != nil {
		for _, o := range rt.bindings {
			if o.handlerType == b.handlerType && o.batch == b.batch {
				return fmt.Errorf("%w: handler %s for %s registered twice", ErrDuplicate, b.handlerType, info.typ)
			}
		}
	}
	if b.fn != 0 {
		for _, o := range rt.bindings {
			if o.fn == b.fn {
				return fmt.Errorf("%w: function %s for %s registered twice", ErrDuplicate, b.name, info.typ)
			}
		}
		// Names tell handlers apart in dead letters and logs.
		base, n := b.name, 1
		for taken := true; taken; {
			taken = false
			for _, o := range rt.bindings {
				if o.name == b.name {
					n++
					b.name, taken = fmt.Sprintf("%s#%d", base, n), true
					break
				}
			}
		}
	}
	rt.bindings = append(rt.bindings, b)
	return nil
}

// RetryInPlace keeps message type msg (a pointer to a kavari message
// struct) out of the retry topics on DefaultRegistry. See
// Registry.RetryInPlace.
func RetryInPlace(msg Msg) error { return DefaultRegistry.RetryInPlace(msg) }

// RetryInPlace keeps the records of message type msg (a pointer to a kavari
// message struct) out of the retry topics of a Client whose
// Config.Registry is r: with Consume.RetryTopics set, a record of the type
// whose handlers fail is still retried in place with Consume.Retry (its
// key's later records wait for it, in order) and then dead-lettered, as
// without retry topics; the client's other types use the tiers. For a
// type whose per-key order matters on a client whose other types prefer
// non-blocking retries. Without Consume.RetryTopics it changes nothing; a
// record of the type already in a tier (moved before RetryInPlace was
// called, by an earlier deployment) finishes its tiers. It also declares
// the type, as Declare does. Call it at start-up: after a consumer on r
// started it fails with ErrFrozen.
func (r *Registry) RetryInPlace(msg Msg) error {
	info, _, err := messageValue(msg)
	if err != nil {
		return err
	}
	if err := r.add(msg, nil); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.frozen.Load() != nil {
		return ErrFrozen
	}
	r.byType[info.typ].inPlace = true
	return nil
}

// freeze makes the registry read-only and returns its route table. Each call
// counts as one user; thaw undoes one call, and the registry is writable
// again when no user is left (a failed Start).
func (r *Registry) freeze() *routeTable {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.users++
	if t := r.frozen.Load(); t != nil {
		return t
	}
	t := r.buildTable()
	r.frozen.Store(t)
	return t
}

// thaw undoes one freeze: a Start that failed gives the registry back.
func (r *Registry) thaw() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.users--; r.users == 0 {
		r.frozen.Store(nil)
	}
}

// table returns the current routes: the frozen table, or a fresh snapshot.
func (r *Registry) table() *routeTable {
	if t := r.frozen.Load(); t != nil {
		return t
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buildTable()
}

func (r *Registry) buildTable() *routeTable {
	t := &routeTable{byTopic: map[string]map[string]*route{}}
	for _, rt := range r.byType {
		m := t.byTopic[rt.info.topic]
		if m == nil {
			m = map[string]*route{}
			t.byTopic[rt.info.topic] = m
			t.topics = append(t.topics, rt.info.topic)
		}
		m[rt.info.name] = rt
	}
	sort.Strings(t.topics)
	return t
}

// Topics returns the sorted topics of every registered message type.
func (r *Registry) Topics() []string { return append([]string(nil), r.table().topics...) }

// subscribed returns the topics that have at least one handler.
func (t *routeTable) subscribed() []string {
	var out []string
	for _, topic := range t.topics {
		for _, rt := range t.byTopic[topic] {
			if len(rt.bindings) > 0 {
				out = append(out, topic)
				break
			}
		}
	}
	return out
}

// lookup finds the route for a record's topic and logical type name.
func (t *routeTable) lookup(topic, name string) *route {
	return t.byTopic[topic][name]
}

// BatchHandler handles records of one message type in batches: msgs are
// records of one partition, in offset order per key (see RegisterBatch).
// Implementations must be safe for concurrent use unless they are built per
// batch (by a factory or provider).
//
// Returning nil marks every record of the batch handled. Returning
// BatchFailed(i, err) says record i failed: the records before it are
// handled, record i is retried alone and then dead-lettered, and the ones
// after it come again in a later batch. Any other error (or a panic) fails
// the whole batch: kavari retries it with the consumer retry policy, then
// splits it until the failing records are isolated (see the README's
// "Batch handlers"). BatchRecordFromContext(ctx, i) describes record i.
type BatchHandler[T any] interface {
	HandleBatch(ctx context.Context, msgs []*T) error
}

// batchHandlerFunc adapts a function to BatchHandler (RegisterBatchFunc's handlers).
type batchHandlerFunc[T any] func(ctx context.Context, msgs []*T) error

// HandleBatch calls f.
func (f batchHandlerFunc[T]) HandleBatch(ctx context.Context, msgs []*T) error { return f(ctx, msgs) }

// RegisterBatch registers a batch handler factory for message type T on
// DefaultRegistry. See RegisterBatchOn.
func RegisterBatch[T any, PT MsgPtr[T], H BatchHandler[T]](msg PT, factory func() H) error {
	return RegisterBatchOn(DefaultRegistry, msg, factory)
}

// RegisterBatchOn registers a batch handler factory for message type T on
// r: the consumer hands T's records to H.HandleBatch in batches of one
// partition, bounded by Consume.MaxBatchRecords, MaxBatchBytes and
// MaxBatchWait. The factory is called for each batch unless a Provider is
// set, which is then asked for a handler of type H. A type may have single
// handlers (Register) and batch handlers; each sees every record of the
// type. Registering the same batch handler type twice for T fails with
// ErrDuplicate.
func RegisterBatchOn[T any, PT MsgPtr[T], H BatchHandler[T]](r *Registry, msg PT, factory func() H) error {
	if factory == nil {
		return fmt.Errorf("kavari: RegisterBatch %T: nil factory", msg)
	}
	ht := reflect.TypeFor[H]()
	return r.add(msg, &binding{
		name:        ht.String(),
		handlerType: ht,
		batch:       true,
		build:       func() (any, error) { return factory(), nil },
		callBatch:   callBatchHandler[T],
		batchOf:     batchOf[T],
	})
}

// RegisterBatchFunc registers a batch handler function for message type T
// on DefaultRegistry.
func RegisterBatchFunc[T any, PT MsgPtr[T]](msg PT, fn func(ctx context.Context, msgs []*T) error) error {
	return RegisterBatchFuncOn(DefaultRegistry, msg, fn)
}

// RegisterBatchFuncOn registers a batch handler function for message type T
// on r, as RegisterBatchOn does a factory; it is named and told apart as
// RegisterFuncOn's functions are.
func RegisterBatchFuncOn[T any, PT MsgPtr[T]](r *Registry, msg PT, fn func(ctx context.Context, msgs []*T) error) error {
	if fn == nil {
		return fmt.Errorf("kavari: RegisterBatchFunc %T: nil function", msg)
	}
	h := batchHandlerFunc[T](fn)
	name := fmt.Sprintf("func(%T)", msg)
	if f := runtime.FuncForPC(reflect.ValueOf(fn).Pointer()); f != nil {
		name = f.Name()
	}
	return r.add(msg, &binding{
		name:      name,
		fn:        funcIdentity(fn),
		batch:     true,
		build:     func() (any, error) { return h, nil },
		callBatch: callBatchHandler[T],
		batchOf:   batchOf[T],
	})
}

// RegisterBatchProvided registers batch handler type H for message type T
// on DefaultRegistry, leaving its construction to the Provider. Pass a
// typed nil to name the type:
//
//	kavari.RegisterBatchProvided(&OrderPlaced{}, (*OrderWriter)(nil))
func RegisterBatchProvided[T any, PT MsgPtr[T], H BatchHandler[T]](msg PT, handlerType H) error {
	return RegisterBatchProvidedOn(DefaultRegistry, msg, handlerType)
}

// RegisterBatchProvidedOn is RegisterBatchProvided on registry r.
func RegisterBatchProvidedOn[T any, PT MsgPtr[T], H BatchHandler[T]](r *Registry, msg PT, _ H) error {
	ht := reflect.TypeFor[H]()
	return r.add(msg, &binding{name: ht.String(), handlerType: ht, batch: true, callBatch: callBatchHandler[T], batchOf: batchOf[T]})
}

func callBatchHandler[T any](ctx context.Context, h any, batch any) error {
	hh, ok := h.(BatchHandler[T])
	if !ok {
		return fmt.Errorf("kavari: handler %T does not implement kavari.BatchHandler[%s]", h, reflect.TypeFor[T]())
	}
	ms, ok := batch.([]*T)
	if !ok {
		return fmt.Errorf("kavari: a batch handler of %s got %T (did a middleware change the batch?)", reflect.TypeFor[T](), batch)
	}
	return hh.HandleBatch(ctx, ms)
}

func batchOf[T any](msgs []any) any {
	ms := make([]*T, len(msgs))
	for i, m := range msgs {
		ms[i] = m.(*T)
	}
	return ms
}

// hasBatch reports whether rt has a batch handler.
func (rt *route) hasBatch() bool {
	for _, b := range rt.bindings {
		if b.batch {
			return true
		}
	}
	return false
}

// batchTopics returns the topics of t with a batch handler.
func (t *routeTable) batchTopics() map[string]bool {
	var m map[string]bool
	for topic, routes := range t.byTopic {
		for _, rt := range routes {
			if rt.hasBatch() {
				if m == nil {
					m = map[string]bool{}
				}
				m[topic] = true
			}
		}
	}
	return m
}
