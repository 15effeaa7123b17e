package kavari

import (
	"errors"
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

// checkHandlers resolves every handler type of table once through the
// Provider, so a container that cannot build one fails Start rather than
// every message. Handlers with a factory are not built when no Provider is
// set.
func (k *Client) checkHandlers(table *routeTable) error {
	seen := map[*binding]bool{}
	var names []string
	var errs []error
	for _, topic := range table.topics {
		for _, rt := range table.byTopic[topic] {
			for _, b := range rt.bindings {
				if seen[b] || b.handlerType == nil || (k.provider.Load() == nil && b.build != nil) {
					continue
				}
				seen[b] = true
				if err := k.tryResolve(b); err != nil {
					names = append(names, b.handlerType.String())
					errs = append(errs, err)
				}
			}
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return &HandlerResolveError{HandlerTypes: names, Err: errors.Join(errs...)}
}

func (k *Client) tryResolve(b *binding) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("kavari: provider panicked for %s: %v", b.handlerType, r)
		}
	}()
	_, err = k.resolve(b)
	return err
}

// resolve returns the handler instance for binding b: from the Provider when
// one is set and b names a handler type, else from b's factory.
func (k *Client) resolve(b *binding) (any, error) {
	if p := k.provider.Load(); p != nil && b.handlerType != nil {
		h, err := (*p)(b.handlerType)
		if err != nil {
			return nil, fmt.Errorf("kavari: provider failed for %s: %w", b.handlerType, err)
		}
		if h == nil {
			return nil, fmt.Errorf("kavari: provider returned nil for %s", b.handlerType)
		}
		return h, nil
	}
	if b.build == nil {
		return nil, fmt.Errorf("kavari: %s is registered for a provider, but no provider is set (SetProvider)", b.name)
	}
	return b.build()
}
