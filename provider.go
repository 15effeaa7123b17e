package kavari

import (
	"fmt"
	"reflect"
)

// Provider resolves a handler instance from its type, as the Python kavari's
// consumer_provider does. Plug in any DI container:
//
//	k.SetProvider(func(t reflect.Type) (any, error) { return container.Resolve(t) })
//
// handlerType is the type the handler was registered with: H in Register or
// RegisterProvided (for example *OrderPlacedHandler). Start calls it once per
// handler type and fails, naming the types (*HandlerResolveError), when it
// cannot build one. Then it is called once per message and handler, from
// several goroutines at once; it must be safe for concurrent use. An error
// then is a handler failure: the message is retried and then dead-lettered,
// the consumer goes on.
type Provider func(handlerType reflect.Type) (any, error)

// MapProvider returns a Provider that serves fixed instances by type, for
// applications without a container:
//
//	k.SetProvider(kavari.MapProvider(&OrderPlacedHandler{db: db}))
func MapProvider(handlers ...any) Provider {
	m := make(map[reflect.Type]any, len(handlers))
	for _, h := range handlers {
		m[reflect.TypeOf(h)] = h
	}
	return func(t reflect.Type) (any, error) {
		if h, ok := m[t]; ok {
			return h, nil
		}
		return nil, fmt.Errorf("kavari: MapProvider has no handler of type %s", t)
	}
}
