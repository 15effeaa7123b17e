package kavari

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
)

// Codec turns a message into a record value and back. A message type uses
// JSON unless its tag says codec=text (or codec=json) or its registry was
// given another codec with Registry.SetCodec, which is also how a custom codec
// (Protobuf, Avro with a schema registry) is plugged in.
//
// Marshal receives a non-nil pointer to the message struct and Unmarshal a
// pointer to a new zero message to fill; kavari validates the message before
// Marshal and after Unmarshal. Unmarshal is also given empty values: a codec
// for which an empty value means something (a Protobuf message with every
// field at its default) accepts it, the others return an error. A Codec must
// be safe for concurrent use.
//
// The consumer decodes a record with its type's codec whatever content-type
// header the record carries: the Python kavari writes none, the type (found
// by msg_type) is the contract, and a header is a claim of the producer, not
// proof. A record whose header names another codec is a decode error only if
// its value does not decode.
type Codec interface {
	// ContentType is written in the content-type header, e.g. "application/json".
	ContentType() string
	// Marshal returns the record value of msg, a pointer to a message struct.
	Marshal(msg any) ([]byte, error)
	// Unmarshal decodes data into msg, a pointer to a new message struct.
	Unmarshal(data []byte, msg any) error
}

// CodecChecker is an optional interface of a Codec: CheckType is called
// once per message type (the struct type, not a pointer to it) when the
// type is registered or first published with the codec, and an error makes
// that a *TagError, so a type the codec cannot carry fails at start-up.
type CodecChecker interface {
	CheckType(t reflect.Type) error
}

// JSON is the default codec: encoding/json honouring json tags, content type
// application/json. Unlike encoding/json it writes a nil slice as [] (a nil
// []byte as "") and a nil map as {}, at every depth, without changing the
// caller's value: a consumer in another language (a Python dataclass with a
// list field) expects a list, not null. A field with omitempty or omitzero
// is still omitted when nil; a nil pointer and a nil interface are still
// null; a type implementing json.Marshaler or encoding.TextMarshaler is
// written by its own method.
var JSON Codec = jsonCodec{}

// Text is the codec of the Python kavari's primitive payloads: a message
// class whose payload is annotated str, int, float, bool or bytes is written
// as the payload's plain text, f"{payload}". The Go type has exactly one
// exported field besides kavari.Message (fields tagged json:"-" and
// unexported ones do not count) of kind string, bool, int*, uint*, float32,
// float64 or []byte; anything else is a *TagError at registration.
//
// Encoding, byte for byte what the Python kavari writes: a string as UTF-8
// (a string that is not valid UTF-8 is refused: the Python consumer would
// fail on it); integers in decimal; bools as True and False; floats as
// Python's repr (1.5, 1.0, 1e+16, 1e-05, inf, nan; a float32 with its own
// shortest digits); []byte as the raw bytes. The content type is
// text/plain; charset=utf-8, or application/octet-stream for []byte.
//
// Decoding accepts what Python's int() and float() accept (surrounding
// whitespace, _ between digits, inf/nan), True/False (also true, false, 1,
// 0 as strconv.ParseBool), and a []byte as the raw value. Two defects of the
// Python kavari 0.2.2.1 are not mirrored but worth knowing: its consumer
// turns every non-empty bool value into True (bool(b"False")), and its
// publisher writes a bytes payload as its repr (b'...'), which a Go []byte
// receives as those characters, as the Python consumer itself does.
var Text Codec = textCodec{}

// codecByName is what a tag's codec= may name.
var codecByName = map[string]Codec{"json": JSON, "text": Text}

// codecUse is a codec bound to one message type.
type codecUse struct {
	c           Codec
	contentType []byte // the content-type header value, shared read-only
	what        string // for decode errors: "the JSON", "the text", ...
	marshal     func(msg any) ([]byte, error)
	unmarshal   func(data []byte, msg any) error
}

var jsonUse = &codecUse{c: JSON, contentType: []byte("application/json"), what: "the JSON", marshal: marshalJSON, unmarshal: unmarshalJSON}

// bindCodec checks that c can carry message type t and binds it.
func bindCodec(t reflect.Type, c Codec) (*codecUse, error) {
	switch c := c.(type) {
	case jsonCodec:
		return jsonUse, nil
	case textCodec:
		f, err := textFieldOf(t)
		if err != nil {
			return nil, err
		}
		ct := "text/plain; charset=utf-8"
		if f.kind == reflect.Slice {
			ct = "application/octet-stream"
		}
		return &codecUse{c: c, contentType: []byte(ct), what: "the text", marshal: textMarshal, unmarshal: textUnmarshal}, nil
	}
	if ch, ok := c.(CodecChecker); ok {
		if err := ch.CheckType(t); err != nil {
			return nil, err
		}
	}
	ct := c.ContentType()
	return &codecUse{c: c, contentType: []byte(ct), what: "the " + ct + " encoding", marshal: c.Marshal, unmarshal: c.Unmarshal}, nil
}

// codecName names c in errors: json, text, or its Go type.
func codecName(c Codec) string {
	switch c.(type) {
	case jsonCodec:
		return "json"
	case textCodec:
		return "text"
	}
	return fmt.Sprintf("%T", c)
}

// sameCodec reports whether a and b are the same codec value.
func sameCodec(a, b Codec) (same bool) {
	ta, tb := reflect.TypeOf(a), reflect.TypeOf(b)
	if ta != tb || !ta.Comparable() {
		return false
	}
	defer func() {
		if recover() != nil {
			same = false // an interface field holding an uncomparable value
		}
	}()
	return a == b
}

// SetCodec makes message type msg (a pointer to a kavari message struct)
// use codec c on DefaultRegistry. See Registry.SetCodec.
func SetCodec(msg Msg, c Codec) error { return DefaultRegistry.SetCodec(msg, c) }

// SetCodec makes message type msg (a pointer to a kavari message struct) use
// codec c for publishing and consuming through r (a Client whose
// Config.Registry is r); it also declares the type, as Declare does. Call it
// at start-up: after a consumer on r started it fails with ErrFrozen.
//
// The tag's codec= and SetCodec must agree: naming a different codec than
// the tag, or setting a second, different codec, fails with ErrDuplicate.
// A codec that cannot carry the type (Text on a struct with two fields, a
// CodecChecker's refusal) is a *TagError.
func (r *Registry) SetCodec(msg Msg, c Codec) error {
	if c == nil {
		return fmt.Errorf("kavari: SetCodec %T: nil codec", msg)
	}
	info, _, err := messageValue(msg)
	if err != nil {
		return err
	}
	use, err := bindCodec(info.typ, c)
	if err != nil {
		return &TagError{Type: info.typ.String(), Tag: info.tag, Reason: fmt.Sprintf("codec %s: %v", codecName(c), err)}
	}
	if info.codecTagged && !sameCodec(info.codec.c, c) {
		return fmt.Errorf("%w: %s: SetCodec(%s) but its tag says codec=%s", ErrDuplicate, info.typ, codecName(c), info.codecName)
	}
	if err := r.add(msg, nil); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.frozen.Load() != nil {
		return ErrFrozen
	}
	rt := r.byType[info.typ]
	if rt.codecSet {
		if sameCodec(rt.codec.c, c) {
			return nil
		}
		return fmt.Errorf("%w: %s: codec set twice (%s, then %s)", ErrDuplicate, info.typ, codecName(rt.codec.c), codecName(c))
	}
	rt.codec, rt.codecSet = use, true
	m := map[reflect.Type]*codecUse{}
	if old := r.codecs.Load(); old != nil {
		for k, v := range *old {
			m[k] = v
		}
	}
	m[info.typ] = use
	r.codecs.Store(&m)
	return nil
}

// withRegistry makes e publish with the codecs set on r.
func (e *encoder) withRegistry(r *Registry) *encoder {
	e.reg = r
	return e
}

// codecOf returns the codec e publishes info's type with: the one set on its
// registry, else the tag's (JSON by default). It takes no lock.
func (e *encoder) codecOf(info *typeInfo) *codecUse {
	if e.reg != nil {
		if m := e.reg.codecs.Load(); m != nil {
			if u := (*m)[info.typ]; u != nil {
				return u
			}
		}
	}
	return info.codec
}

type jsonCodec struct{}

func (jsonCodec) ContentType() string { return "application/json" }

func (jsonCodec) Marshal(msg any) ([]byte, error) {
	b, err := marshalJSON(msg)
	if err != nil {
		return nil, fmt.Errorf("kavari: %w", err)
	}
	return b, nil
}

func (jsonCodec) Unmarshal(data []byte, msg any) error {
	if err := unmarshalJSON(data, msg); err != nil {
		return fmt.Errorf("kavari: %w", err)
	}
	return nil
}

func unmarshalJSON(data []byte, msg any) error {
	if len(data) == 0 {
		return errors.New("empty value")
	}
	return json.Unmarshal(data, msg)
}

// marshalJSON is json.Marshal with nil slices and maps written as [] and {}.
func marshalJSON(msg any) ([]byte, error) {
	if msg == nil {
		return json.Marshal(msg)
	}
	v := reflect.ValueOf(msg)
	if p := fillPlanOf(v.Type()); p != nil {
		if nv, changed := fill(v, p, false, 0); changed {
			return json.Marshal(nv.Interface())
		}
	}
	return json.Marshal(msg)
}
