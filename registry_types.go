package kavari

import (
	"reflect"
	"sort"
)

// MessageType is a read-only description of one message type held by a
// Registry, for tools that describe a service's contract (JSON Schema,
// AsyncAPI) without reaching into kavari's internals.
type MessageType struct {
	// GoType is the message struct type (not a pointer to it).
	GoType reflect.Type
	// Topic is the topic from the type's kavari tag.
	Topic string
	// Name is the logical type name written in the msg_type and ce_type
	// headers: the tag's name=, or the Go type name without package.
	Name string
	// Version is the tag's version=, written in the kavari_version header;
	// empty when the tag sets none.
	Version string
	// KeyField is the tag's key= (a field name or dotted path); empty when
	// the type has no key field or computes its key with PartitionKey.
	KeyField string
	// KeyMethod reports that the type has a PartitionKey() string method,
	// which wins over KeyField.
	KeyMethod bool
	// Handlers names the type's handlers, in registration order: the
	// handler type for Register and RegisterProvided, the function's name
	// for RegisterFunc (as in the kavari_handler header), and so for their
	// RegisterBatch forms. It is empty for a type that is only declared
	// (Declare), that is, published but not handled by this service.
	Handlers []string
	// Codec is the codec the type is written and read with: the tag's
	// codec=, the one set with SetCodec, or JSON.
	Codec Codec
}

// Types describes every message type registered on r, sorted by topic, then
// logical name. The result is a copy: changing it does not change r. It is
// safe to call at any time, also concurrently with registrations.
func (r *Registry) Types() []MessageType {
	r.mu.Lock()
	out := make([]MessageType, 0, len(r.byType))
	for _, rt := range r.byType {
		ti := rt.info
		mt := MessageType{
			GoType:    ti.typ,
			Topic:     ti.topic,
			Name:      ti.name,
			Version:   ti.version,
			KeyMethod: ti.keyKind == keyMethod,
			Codec:     rt.codec.c,
		}
		if !mt.KeyMethod {
			mt.KeyField = ti.keyName
		}
		for _, b := range rt.bindings {
			mt.Handlers = append(mt.Handlers, b.name)
		}
		out = append(out, mt)
	}
	r.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Topic != out[j].Topic {
			return out[i].Topic < out[j].Topic
		}
		return out[i].Name < out[j].Name
	})
	return out
}
