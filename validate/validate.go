// Package validate checks kavari messages against their `validate:"..."`
// struct tags before they are published and after they are decoded.
//
// It wraps one shared, lazily created go-playground validator instance and
// turns its reports into typed errors: an *Error listing a FieldError per
// failing field, each addressed by its JSON path ("customer.address.zip",
// "items[2].sku"), so callers can branch with errors.Is(err, ErrInvalid) and
// inspect fields with errors.As. The validator's own error types never leave
// this package.
//
// Rules are those of github.com/go-playground/validator/v10; applications
// add their own with Validator().RegisterValidation at start-up.
package validate

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/go-playground/validator/v10"
)

// ErrInvalid is matched by errors.Is for every validation failure: each
// *Error returned by Struct, including the one for a nil message pointer.
var ErrInvalid = errors.New("kavari: invalid message")

// maxValueLen bounds, in runes, how much of an offending value
// FieldError.Error prints, so logs stay short and carry little data.
const maxValueLen = 64

var timeType = reflect.TypeFor[time.Time]()

// shared is the one validator instance, created on first use. A
// *validator.Validate caches parsed tags per struct type and is safe for
// concurrent validation.
var shared = sync.OnceValue(func() *validator.Validate {
	v := validator.New(validator.WithRequiredStructEnabled())
	v.RegisterTagNameFunc(func(f reflect.StructField) string {
		name, _ := jsonName(f)
		return name // "" makes the validator use the Go field name
	})
	return v
})

// Validator returns the shared validator instance that Struct uses, so an
// application can register custom rules (RegisterValidation, RegisterAlias,
// RegisterStructValidation, ...) at start-up.
//
// Register everything before the first message is validated — before
// publishing or starting consumers: the validator's registration methods
// are not safe for concurrent use with validation, and a struct type's
// tags are parsed (and cached) the first time a value of that type is
// validated.
func Validator() *validator.Validate {
	exposed.Store(true)
	return shared()
}

// Struct validates v, a struct or a pointer to one, against its
// `validate:"..."` tags, nested structs, slices and maps included. It is safe
// for concurrent use.
//
// It returns nil when v is valid and an *Error, which matches ErrInvalid,
// listing every failing field otherwise. A nil pointer to a struct is
// invalid too: the *Error has no Fields.
//
// Anything that is not a struct or a pointer to one (a nil interface, a
// map, time.Time, a pointer to a pointer) is a programming error rather
// than an invalid message: Struct returns a plain error, "kavari: validate:
// T is not a struct", that does not match ErrInvalid. So does a malformed
// tag, such as an unknown rule name, which the validator reports by
// panicking: Struct recovers and returns "kavari: validate T: <panic>".
// Validating a zero value of each message type at registration surfaces such
// tags early.
//
// A type with no `validate` tag reachable from it (through fields,
// pointers, slices, arrays and maps; an interface field counts as tagged) is
// valid without running the validator, unless Validator() was called: rules
// registered on the shared instance may apply to any type. So is a value
// of a type whose only rules are simple ones on fields of basic kinds
// (omitempty, required, gt, gte, min, lt, lte, max, len and oneof on
// strings, booleans and numbers) when it satisfies them, checked by a plan
// made once per type; when it does not, the validator runs and reports it.
func Struct(v any) (err error) {
	rv := reflect.ValueOf(v)
	if !rv.IsValid() {
		return notStruct(v)
	}
	ti := infoOf(rv.Type())
	t := ti.elem
	switch {
	case ti.notStruct:
		return notStruct(v)
	case ti.ptr && rv.IsNil():
		return &Error{Type: typeName(t)}
	}
	if !exposed.Load() {
		// Without rules registered on the shared instance, a type
		// without tags is valid, and so is a value its plan passes.
		if ti.noRules || ti.plan != nil && ti.plan.passes(reflect.Indirect(rv)) {
			return nil
		}
	}

	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("kavari: validate %s: %v", typeName(t), r)
		}
	}()
	verr := shared().Struct(v)
	if verr == nil {
		return nil
	}
	ves, ok := verr.(validator.ValidationErrors)
	if !ok { // not expected: the kinds the validator rejects were checked above
		return fmt.Errorf("kavari: validate %s: %v", typeName(t), verr)
	}
	return newError(t, ves)
}

func notStruct(v any) error {
	return fmt.Errorf("kavari: validate: %T is not a struct", v)
}

// Error reports an invalid message. It matches ErrInvalid; errors.As gives
// access to the failing fields.
type Error struct {
	// Type is the Go type name of the message, without package, e.g.
	// "OrderPlaced".
	Type string
	// Fields lists every failing field, in the validator's order (fields
	// in declaration order, depth first). It is empty only when the
	// message was a nil pointer.
	Fields []FieldError
}

// Error returns, e.g., "kavari: invalid OrderPlaced: order_id: required;
// amount: must satisfy gt=0 (got -1)".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("kavari: invalid ")
	b.WriteString(e.Type)
	b.WriteString(": ")
	if len(e.Fields) == 0 {
		b.WriteString("nil pointer")
		return b.String()
	}
	for i, f := range e.Fields {
		if i > 0 {
			b.WriteString("; ")
		}
		f.write(&b)
	}
	return b.String()
}

// Is reports whether target is ErrInvalid.
func (e *Error) Is(target error) bool { return target == ErrInvalid }

// FieldError is one field that failed one rule.
type FieldError struct {
	// Path is the field's dotted JSON path from the top struct, e.g.
	// "customer.address.zip"; slice, array and map elements are written
	// as "items[2].sku" and "labels[env]". Names come from `json` tags,
	// falling back to the Go field name (also for `json:"-"`); embedded
	// structs without a json name are flattened, as encoding/json does.
	Path string
	// Field is the Go name of the failing field, e.g. "SKU", without any
	// index.
	Field string
	// Rule is the failing tag, e.g. "required" or "gt"; for an alias, the
	// alias.
	Rule string
	// Param is the rule's parameter, e.g. "0" for gt=0; empty when it has
	// none.
	Param string
	// Value is the offending value, as the validator saw it.
	Value any
}

// Error returns, e.g., "order_id: required" or "amount: must satisfy gt=0
// (got -1)". Strings are quoted and cut to 64 characters; collections
// are shown by type and length only.
func (f FieldError) Error() string {
	var b strings.Builder
	f.write(&b)
	return b.String()
}

func (f FieldError) write(b *strings.Builder) {
	path := f.Path
	if path == "" {
		path = f.Field
	}
	b.WriteString(path)
	if f.Rule == "required" {
		b.WriteString(": required")
		return
	}
	b.WriteString(": must satisfy ")
	b.WriteString(f.Rule)
	if f.Param != "" {
		b.WriteByte('=')
		b.WriteString(f.Param)
	}
	b.WriteString(" (got ")
	b.WriteString(formatValue(f.Value))
	b.WriteByte(')')
}

func newError(t reflect.Type, ves validator.ValidationErrors) *Error {
	e := &Error{Type: typeName(t), Fields: make([]FieldError, len(ves))}
	prefix := ""
	if t.Name() != "" { // the validator starts namespaces with the top type's name
		prefix = t.Name() + "."
	}
	for i, fe := range ves {
		path, ok := jsonPath(t, strings.TrimPrefix(fe.StructNamespace(), prefix))
		if !ok {
			path = strings.TrimPrefix(fe.Namespace(), prefix)
		}
		field, _, _ := strings.Cut(fe.StructField(), "[")
		e.Fields[i] = FieldError{
			Path:  path,
			Field: field,
			Rule:  fe.Tag(),
			Param: fe.Param(),
			Value: fe.Value(),
		}
	}
	return e
}

// typeName is t's name without package, or its literal for unnamed types.
func typeName(t reflect.Type) string {
	if n := t.Name(); n != "" {
		return n
	}
	return t.String()
}

// jsonName returns the name encoding/json gives field f: its `json` tag
// name, or "" when the tag has none or is "-". flatten reports an embedded
// struct without a tag name, whose fields encoding/json promotes.
func jsonName(f reflect.StructField) (name string, flatten bool) {
	tag := f.Tag.Get("json")
	if tag == "-" {
		return "", false
	}
	name, _, _ = strings.Cut(tag, ",")
	if name != "" {
		return name, false
	}
	t := f.Type
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return "", f.Anonymous && t.Kind() == reflect.Struct
}

// jsonPath rewrites ns, a validator namespace of Go field names below type
// t ("Items[2].SKU"), into a JSON path ("items[2].sku"). ok is false when
// ns does not follow t's fields, as when a struct-level rule reports a name
// of its own.
func jsonPath(t reflect.Type, ns string) (path string, ok bool) {
	var b strings.Builder
	for ns != "" {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return "", false
		}
		name, rest := ns, ""
		if i := strings.IndexAny(ns, ".["); i >= 0 {
			name, rest = ns[:i], ns[i:]
		}
		f, found := t.FieldByName(name)
		if !found || len(f.Index) != 1 {
			return "", false
		}
		ft := f.Type
		index := ""
		for strings.HasPrefix(rest, "[") {
			end := closingBracket(rest)
			if end < 0 {
				return "", false
			}
			index, rest = index+rest[:end+1], rest[end+1:]
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			switch ft.Kind() {
			case reflect.Slice, reflect.Array, reflect.Map:
				ft = ft.Elem()
			default:
				return "", false
			}
		}
		jname, flatten := jsonName(f)
		if !flatten || index != "" || rest == "" {
			if jname == "" {
				jname = f.Name
			}
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(jname)
			b.WriteString(index)
		}
		if rest != "" {
			if rest[0] != '.' {
				return "", false
			}
			rest = rest[1:]
		}
		ns, t = rest, ft
	}
	return b.String(), true
}

// closingBracket returns the index in s (which starts with '[') of the ']'
// that ends the first index or key: the first one followed by '.', '[' or
// the end of s. It returns -1 if there is none.
func closingBracket(s string) int {
	for i := 1; i < len(s); i++ {
		if s[i] == ']' && (i+1 == len(s) || s[i+1] == '.' || s[i+1] == '[') {
			return i
		}
	}
	return -1
}

// formatValue renders an offending value for an error message: pointers
// followed, strings quoted and cut to maxValueLen runes, collections reduced
// to their type and length, anything else printed with fmt and cut.
func formatValue(v any) string {
	rv := reflect.ValueOf(v)
	for rv.Kind() == reflect.Pointer || rv.Kind() == reflect.Interface {
		if rv.IsNil() {
			return "nil"
		}
		rv = rv.Elem()
	}
	if !rv.IsValid() {
		return "nil"
	}
	switch rv.Kind() {
	case reflect.String:
		return strconv.Quote(truncate(rv.String()))
	case reflect.Slice, reflect.Array, reflect.Map:
		return rv.Type().String() + ", len " + strconv.Itoa(rv.Len())
	}
	if !rv.CanInterface() {
		return rv.Type().String()
	}
	return truncate(fmt.Sprint(rv.Interface()))
}

func truncate(s string) string {
	if utf8.RuneCountInString(s) <= maxValueLen {
		return s
	}
	n, i := 0, 0
	for i = range s {
		if n == maxValueLen {
			break
		}
		n++
	}
	return s[:i] + "…"
}
