package kavari

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"unsafe"
)

// Message is the marker every kavari message embeds. Its struct tag says where
// the message goes:
//
//	type OrderPlaced struct {
//		kavari.Message `kavari:"topic=orders,key=OrderID,name=order.placed,version=2"`
//		OrderID string `json:"order_id" validate:"required"`
//	}
//
// Tag keys: topic (required); key, the name of the field holding the partition
// key (a dotted path such as Customer.ID reaches into nested structs; the field
// is a string, an integer, a fmt.Stringer or a []byte); name, the logical type
// name written in the msg_type header (default: the Go type name without its
// package); version, written in the kavari_version header; codec, json
// (the default) or text (the Python kavari's primitive payloads, see Text).
// A method PartitionKey() string on the message wins over key=.
//
// Message has no fields and encodes to nothing.
type Message struct{}

// Msg is what Publish, PublishBatch, PublishAsync, the Register functions
// and Declare accept: a pointer to a struct that embeds Message. Only such a
// pointer has Msg's method, so passing a struct value, or a type that does
// not embed Message, does not compile:
//
//	c.Publish(ctx, &OrderPlaced{OrderID: "o-1"}) // compiles
//	c.Publish(ctx, OrderPlaced{OrderID: "o-1"})  // does not: OrderPlaced is not a Msg
//
// What the compiler cannot see (a nil pointer, a bad tag) is reported at run
// time: ErrNilMessage, a *TagError.
type Msg interface{ kavariMessage() }

func (*Message) kavariMessage() {}

// partitionKeyer is implemented by messages that compute their own key.
type partitionKeyer interface{ PartitionKey() string }

type keyKind uint8

const (
	keyNone keyKind = iota
	keyMethod
	keyString
	keyInt
	keyUint
	keyBytes
	keyStringer
)

// typeInfo is what kavari knows about one message type. It is computed once per
// reflect.Type and never changes.
type typeInfo struct {
	typ     reflect.Type // the struct type
	goName  string
	topic   string
	name    string // logical name (msg_type, ce_type)
	version string
	// nameBytes and versionBytes are shared, read-only header values.
	nameBytes, versionBytes []byte
	tag                     string
	keyKind                 keyKind
	keyPath                 [][]int // field index per path element; pointers are followed between them
	keyName                 string
	codec                   *codecUse // the tag's codec, JSON by default
	codecName               string    // the tag's codec=, "" when not given
	codecTagged             bool
}

var (
	messageMarker = reflect.TypeFor[Message]()
	stringerType  = reflect.TypeFor[fmt.Stringer]()
	keyerType     = reflect.TypeFor[partitionKeyer]()
	typeCache     sync.Map // reflect.Type -> *typeCacheEntry
)

type typeCacheEntry struct {
	info *typeInfo
	err  error
}

// typeInfoOf returns the cached description of a message type t (a struct type),
// parsing its tag on first use.
func typeInfoOf(t reflect.Type) (*typeInfo, error) {
	if e, ok := typeCache.Load(t); ok {
		e := e.(*typeCacheEntry)
		return e.info, e.err
	}
	info, err := parseType(t)
	e, _ := typeCache.LoadOrStore(t, &typeCacheEntry{info, err})
	return e.(*typeCacheEntry).info, e.(*typeCacheEntry).err
}

// messageValue checks that msg is a non-nil pointer to a kavari message struct
// and returns its description and the struct value.
func messageValue(msg any) (*typeInfo, reflect.Value, error) {
	if msg == nil {
		return nil, reflect.Value{}, ErrNilMessage
	}
	v := reflect.ValueOf(msg)
	if v.Kind() != reflect.Pointer {
		return nil, reflect.Value{}, fmt.Errorf("%w: %T is not a pointer to a struct (pass &msg)", ErrNotMessage, msg)
	}
	if v.IsNil() {
		return nil, reflect.Value{}, fmt.Errorf("%w (%T)", ErrNilMessage, msg)
	}
	info, err := typeInfoOf(v.Type().Elem())
	if err != nil {
		return nil, reflect.Value{}, err
	}
	return info, v.Elem(), nil
}

func parseType(t reflect.Type) (*typeInfo, error) {
	if t.Kind() != reflect.Struct {
		return nil, fmt.Errorf("%w: %s is not a struct", ErrNotMessage, t)
	}
	var marker *reflect.StructField
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Anonymous && f.Type == messageMarker {
			marker = &f
			break
		}
	}
	if marker == nil {
		return nil, fmt.Errorf("%w: %s does not embed kavari.Message", ErrNotMessage, t)
	}
	tag, _ := marker.Tag.Lookup("kavari")
	info := &typeInfo{typ: t, goName: t.Name(), name: t.Name(), tag: tag, codec: jsonUse}
	bad := func(format string, args ...any) error {
		return &TagError{Type: t.String(), Tag: tag, Reason: fmt.Sprintf(format, args...)}
	}
	seen := map[string]bool{}
	for _, part := range strings.Split(tag, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || v == "" {
			return nil, bad("%q is not key=value", part)
		}
		if seen[k] {
			return nil, bad("%s given twice", k)
		}
		seen[k] = true
		switch k {
		case "topic":
			if err := checkTopicName(v); err != nil {
				return nil, bad("topic %q: %v", v, err)
			}
			info.topic = v
		case "key":
			info.keyName = v
		case "name":
			info.name = v
		case "version":
			info.version = v
		case "codec":
			c, ok := codecByName[v]
			if !ok {
				return nil, bad("unknown codec %q (want json or text)", v)
			}
			use, err := bindCodec(t, c)
			if err != nil {
				return nil, bad("codec %s: %v", v, err)
			}
			info.codec, info.codecName, info.codecTagged = use, v, true
		default:
			return nil, bad("unknown key %q (want topic, key, name, version, codec)", k)
		}
	}
	if info.topic == "" {
		return nil, bad("no topic")
	}
	if info.name == "" {
		return nil, bad("no name: an anonymous struct needs name=")
	}
	info.nameBytes, info.versionBytes = []byte(info.name), []byte(info.version)
	if t.Implements(keyerType) || reflect.PointerTo(t).Implements(keyerType) {
		info.keyKind = keyMethod
		return info, nil
	}
	if info.keyName != "" {
		kind, path, err := resolveKey(t, info.keyName)
		if err != nil {
			return nil, bad("key %s: %v", info.keyName, err)
		}
		info.keyKind, info.keyPath = kind, path
	}
	return info, nil
}

// resolveKey walks a dotted field path and says how to turn the field into a key.
func resolveKey(t reflect.Type, path string) (keyKind, [][]int, error) {
	var idx [][]int
	cur := t
	parts := strings.Split(path, ".")
	for i, name := range parts {
		for cur.Kind() == reflect.Pointer {
			cur = cur.Elem()
		}
		if cur.Kind() != reflect.Struct {
			return 0, nil, fmt.Errorf("%s is not a struct", strings.Join(parts[:i], "."))
		}
		f, ok := cur.FieldByName(name)
		if !ok {
			return 0, nil, fmt.Errorf("no field %s in %s", name, cur)
		}
		if !f.IsExported() {
			return 0, nil, fmt.Errorf("field %s is not exported", name)
		}
		// A promoted field's index passes through embedded structs, possibly
		// pointers: one step each, so key() can check for nil between them.
		for _, i := range f.Index {
			idx = append(idx, []int{i})
		}
		cur = f.Type
	}
	ft := cur
	switch {
	case ft.Implements(stringerType):
		return keyStringer, idx, nil
	case ft.Kind() == reflect.Pointer:
		if reflect.PointerTo(ft.Elem()).Implements(stringerType) {
			return keyStringer, idx, nil
		}
		return 0, nil, fmt.Errorf("unsupported key type %s (want string, integer, fmt.Stringer or []byte)", ft)
	case ft.Kind() == reflect.String:
		return keyString, idx, nil
	case ft.Kind() >= reflect.Int && ft.Kind() <= reflect.Int64:
		return keyInt, idx, nil
	case ft.Kind() >= reflect.Uint && ft.Kind() <= reflect.Uintptr:
		return keyUint, idx, nil
	case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Uint8:
		return keyBytes, idx, nil
	case reflect.PointerTo(ft).Implements(stringerType):
		return keyStringer, idx, nil
	}
	return 0, nil, fmt.Errorf("unsupported key type %s (want string, integer, fmt.Stringer or []byte)", ft)
}

// appendKey appends the partition key of the message held in v (a struct
// value) to dst; nothing when the type declares no key.
func (ti *typeInfo) appendKey(dst []byte, v reflect.Value) ([]byte, error) {
	n := len(dst)
	switch ti.keyKind {
	case keyNone:
		return dst, nil
	case keyMethod:
		var k partitionKeyer
		if v.CanAddr() {
			k, _ = v.Addr().Interface().(partitionKeyer)
		}
		if k == nil {
			k, _ = v.Interface().(partitionKeyer)
		}
		s := k.PartitionKey()
		if s == "" {
			return dst, fmt.Errorf("%w: %s.PartitionKey() returned \"\"", ErrEmptyKey, ti.goName)
		}
		return append(dst, s...), nil
	}
	f := v
	for _, idx := range ti.keyPath {
		for f.Kind() == reflect.Pointer {
			if f.IsNil() {
				return dst, fmt.Errorf("%w: %s.%s passes through a nil pointer", ErrEmptyKey, ti.goName, ti.keyName)
			}
			f = f.Elem()
		}
		f = f.FieldByIndex(idx)
	}
	switch ti.keyKind {
	case keyString:
		dst = append(dst, f.String()...)
	case keyInt:
		dst = strconv.AppendInt(dst, f.Int(), 10)
	case keyUint:
		dst = strconv.AppendUint(dst, f.Uint(), 10)
	case keyBytes:
		dst = append(dst, f.Bytes()...)
	case keyStringer:
		if f.Kind() == reflect.Pointer && f.IsNil() {
			return dst, fmt.Errorf("%w: %s.%s is nil", ErrEmptyKey, ti.goName, ti.keyName)
		}
		if !f.CanInterface() && f.CanAddr() {
			// Promoted through an unexported embedded struct: reflect refuses
			// to call methods on it, so view the same memory as exported.
			f = reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem()
		}
		s, ok := f.Interface().(fmt.Stringer)
		if !ok && f.CanAddr() {
			s, ok = f.Addr().Interface().(fmt.Stringer)
		}
		if !ok {
			return dst, fmt.Errorf("%w: %s.%s is not addressable", ErrEmptyKey, ti.goName, ti.keyName)
		}
		dst = append(dst, s.String()...)
	}
	if len(dst) == n {
		return dst, fmt.Errorf("%w: %s.%s is empty", ErrEmptyKey, ti.goName, ti.keyName)
	}
	return dst, nil
}

// checkTopicName applies Kafka's rules for topic names.
func checkTopicName(s string) error {
	if len(s) > 249 {
		return fmt.Errorf("longer than 249 characters")
	}
	if s == "." || s == ".." {
		return fmt.Errorf("not allowed")
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("character %q not allowed (want [a-zA-Z0-9._-])", r)
		}
	}
	return nil
}
