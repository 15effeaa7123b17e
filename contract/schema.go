package contract

import (
	"encoding"
	"encoding/json"
	"math"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/google/jsonschema-go/jsonschema"
)

// Schema is a JSON Schema (draft 2020-12), the model of
// github.com/google/jsonschema-go.
type Schema = jsonschema.Schema

// Draft is the JSON Schema dialect of every schema this package writes.
const Draft = "https://json-schema.org/draft/2020-12/schema"

// Extension keywords this package writes into schemas. A JSON Schema
// validator ignores them; they keep what the schema cannot say visible.
const (
	// ExtValidate holds a field's whole `validate` tag, as written.
	ExtValidate = "x-kavari-validate"
	// ExtUnmapped lists the validator rules of a field that have no JSON
	// Schema equivalent (cross-field rules, custom rules, ...): the
	// schema does not check them, kavari's validator does.
	ExtUnmapped = "x-kavari-unmapped"
	// ExtGoType names the Go type a schema was derived from.
	ExtGoType = "x-kavari-go-type"
)

var (
	timeType          = reflect.TypeFor[time.Time]()
	jsonMarshalerType = reflect.TypeFor[json.Marshaler]()
	textMarshalerType = reflect.TypeFor[encoding.TextMarshaler]()
)

// TypeSchema returns the JSON Schema (draft 2020-12) of the JSON encoding of
// Go type t, as encoding/json writes it, with the go-playground/validator
// rules of its fields' `validate` tags mapped to schema keywords. Rules
// without an equivalent are listed in each field's x-kavari-unmapped; see
// the package documentation for the whole mapping.
func TypeSchema(t reflect.Type) *Schema {
	g := &generator{defs: map[string]*Schema{}, onStack: map[reflect.Type]bool{}, recursive: map[reflect.Type]bool{}}
	s := g.typeSchema(t)
	s.Schema = Draft
	if len(g.defs) > 0 {
		s.Defs = g.defs
	}
	return s
}

// generator builds one top-level schema. Recursive struct types are
// written once under $defs and referenced from their recursive uses.
type generator struct {
	defs      map[string]*Schema
	onStack   map[reflect.Type]bool
	recursive map[reflect.Type]bool
}

// typeSchema is the schema of t's encoding, without field-level rules of
// an enclosing struct (but with the rules of t's own fields).
func (g *generator) typeSchema(t reflect.Type) *Schema {
	if t.Kind() == reflect.Pointer {
		return nullable(g.typeSchema(t.Elem()))
	}
	switch {
	case t == timeType:
		return &Schema{Type: "string", Format: "date-time"}
	case t.Implements(jsonMarshalerType) || reflect.PointerTo(t).Implements(jsonMarshalerType):
		return &Schema{Extra: map[string]any{ExtGoType: t.String(), ExtUnmapped: []string{"MarshalJSON: encoding not derivable"}}}
	case t.Implements(textMarshalerType) || reflect.PointerTo(t).Implements(textMarshalerType):
		return &Schema{Type: "string", Extra: map[string]any{ExtGoType: t.String()}}
	}
	switch t.Kind() {
	case reflect.Bool:
		return &Schema{Type: "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		// 64-bit bounds are not exact in a JSON Schema number as most
		// tools read it: name the range with format instead.
		if bits := t.Bits(); bits < 64 {
			return &Schema{Type: "integer", Minimum: ptr(-math.Pow(2, float64(bits-1))), Maximum: ptr(math.Pow(2, float64(bits-1)) - 1)}
		}
		return &Schema{Type: "integer", Format: "int64"}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		if bits := t.Bits(); bits < 64 {
			return &Schema{Type: "integer", Minimum: ptr(0.0), Maximum: ptr(math.Pow(2, float64(bits)) - 1)}
		}
		return &Schema{Type: "integer", Minimum: ptr(0.0), Format: "uint64"}
	case reflect.Float32, reflect.Float64:
		return &Schema{Type: "number"}
	case reflect.String:
		return &Schema{Type: "string"}
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 && !reflect.PointerTo(t.Elem()).Implements(textMarshalerType) {
			return nullable(&Schema{Type: "string", ContentEncoding: "base64"})
		}
		return nullable(&Schema{Type: "array", Items: g.typeSchema(t.Elem())})
	case reflect.Array:
		n := t.Len()
		return &Schema{Type: "array", Items: g.typeSchema(t.Elem()), MinItems: &n, MaxItems: &n}
	case reflect.Map:
		s := &Schema{Type: "object", AdditionalProperties: g.typeSchema(t.Elem())}
		switch k := t.Key(); {
		case k.Kind() == reflect.String:
		case k.Implements(textMarshalerType):
			s.Extra = map[string]any{"x-kavari-key-type": k.String()}
		case k.Kind() >= reflect.Int && k.Kind() <= reflect.Int64:
			s.PropertyNames = &Schema{Pattern: `^-?[0-9]+$`}
		case k.Kind() >= reflect.Uint && k.Kind() <= reflect.Uintptr:
			s.PropertyNames = &Schema{Pattern: `^[0-9]+$`}
		}
		return nullable(s)
	case reflect.Struct:
		return g.structSchema(t)
	case reflect.Interface:
		return &Schema{}
	}
	// Channels, funcs and complex numbers cannot be encoded.
	return &Schema{Not: &Schema{}, Extra: map[string]any{ExtGoType: t.String()}}
}

func (g *generator) structSchema(t reflect.Type) *Schema {
	if g.onStack[t] {
		g.recursive[t] = true
		return &Schema{Ref: "#/$defs/" + defName(t)}
	}
	g.onStack[t] = true
	s := &Schema{Type: "object", Properties: map[string]*Schema{}}
	for _, f := range jsonFields(t) {
		fs, required := g.fieldSchema(f.typ, f.validate, f.omitEmpty)
		if f.quoted {
			fs = quoted(fs, f.typ)
		}
		s.Properties[f.name] = fs
		s.PropertyOrder = append(s.PropertyOrder, f.name)
		if required {
			s.Required = append(s.Required, f.name)
		}
	}
	if len(s.Properties) == 0 {
		s.Properties = nil
	}
	delete(g.onStack, t)
	if g.recursive[t] {
		g.defs[defName(t)] = s.CloneSchemas()
	}
	return s
}

func defName(t reflect.Type) string {
	if t.Name() != "" {
		return t.Name()
	}
	return strings.NewReplacer(" ", "", "{", "_", "}", "_", ";", "_", "\"", "", "`", "").Replace(t.String())
}

// nullable allows null besides what s allows.
func nullable(s *Schema) *Schema {
	if s.Type != "" && s.Ref == "" && s.Enum == nil && s.Const == nil && len(s.AnyOf) == 0 {
		s.Types = []string{s.Type, "null"}
		s.Type = ""
		return s
	}
	return &Schema{AnyOf: []*Schema{s, {Type: "null"}}}
}

// notNull removes the null that nullable added.
func notNull(s *Schema) *Schema {
	if len(s.Types) == 2 && s.Types[1] == "null" {
		s.Type, s.Types = s.Types[0], nil
		return s
	}
	if len(s.AnyOf) == 2 && s.AnyOf[1].Type == "null" && s.Type == "" && s.Ref == "" {
		inner := s.AnyOf[0]
		s.AnyOf = nil
		return merge(inner, s)
	}
	return s
}

func isNullable(s *Schema) bool {
	return (len(s.Types) == 2 && s.Types[1] == "null") || (len(s.AnyOf) == 2 && s.AnyOf[1].Type == "null")
}

// quoted describes a field with the `json:",string"` option: encoding/json
// writes integers, floats, booleans and strings inside a JSON string.
func quoted(s *Schema, t reflect.Type) *Schema {
	n := t
	for n.Kind() == reflect.Pointer {
		n = n.Elem()
	}
	q := &Schema{Type: "string", Extra: map[string]any{"x-kavari-json-string": true}}
	switch n.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		q.Pattern = `^-?[0-9]+$`
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		q.Pattern = `^[0-9]+$`
	case reflect.Float32, reflect.Float64:
		q.Pattern = `^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$`
	case reflect.Bool:
		q.Enum = []any{"true", "false"}
	case reflect.String:
		q.ContentMediaType = "application/json"
	default:
		return s // the option applies to scalars only
	}
	if v, ok := s.Extra[ExtValidate]; ok {
		q.Extra[ExtValidate] = v
		q.Extra[ExtUnmapped] = []string{"rules on a json:\",string\" field are checked on the Go value"}
	}
	if t.Kind() == reflect.Pointer && isNullable(s) {
		return nullable(q)
	}
	return q
}

// field is one field of a struct's JSON encoding.
type field struct {
	name      string
	typ       reflect.Type
	validate  string
	omitEmpty bool
	quoted    bool
	tagged    bool
	depth     int
	index     []int
}

// jsonFields lists the fields encoding/json writes for struct type t, in
// its order and with its rules for embedded structs: promoted fields are
// flattened; of several fields with one name the shallowest wins, then
// the one with a json tag; a tie drops them all.
func jsonFields(t reflect.Type) []field {
	var all []field
	var walk func(t reflect.Type, index []int, depth int, seen map[reflect.Type]bool)
	walk = func(t reflect.Type, index []int, depth int, seen map[reflect.Type]bool) {
		if seen[t] {
			return
		}
		seen[t] = true
		defer delete(seen, t)
		for i := 0; i < t.NumField(); i++ {
			sf := t.Field(i)
			idx := append(append([]int(nil), index...), i)
			ft := sf.Type
			if sf.Anonymous {
				et := ft
				if et.Kind() == reflect.Pointer {
					et = et.Elem()
				}
				if !sf.IsExported() && et.Kind() != reflect.Struct {
					continue
				}
			} else if !sf.IsExported() {
				continue
			}
			tag := sf.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, opts, _ := strings.Cut(tag, ",")
			if name != "" && !validName(name) {
				name = ""
			}
			et := ft
			if et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if name == "" && sf.Anonymous && et.Kind() == reflect.Struct && et != timeType &&
				!et.Implements(jsonMarshalerType) && !reflect.PointerTo(et).Implements(jsonMarshalerType) {
				walk(et, idx, depth+1, seen)
				continue
			}
			f := field{
				name: name, typ: ft, validate: sf.Tag.Get("validate"), tagged: name != "",
				depth: depth, index: idx,
			}
			if f.name == "" {
				f.name = sf.Name
			}
			for _, o := range strings.Split(opts, ",") {
				switch o {
				case "omitempty":
					f.omitEmpty = true
				case "string":
					f.quoted = true
				}
			}
			all = append(all, f)
		}
	}
	walk(t, nil, 0, map[reflect.Type]bool{})

	byName := map[string][]field{}
	for _, f := range all {
		byName[f.name] = append(byName[f.name], f)
	}
	var out []field
	for _, f := range all {
		fs := byName[f.name]
		if dominant(fs) == nil || !sameIndex(dominant(fs).index, f.index) {
			continue
		}
		out = append(out, f)
	}
	sort.SliceStable(out, func(i, j int) bool { return lessIndex(out[i].index, out[j].index) })
	return out
}

func dominant(fs []field) *field {
	min := fs[0].depth
	for _, f := range fs {
		if f.depth < min {
			min = f.depth
		}
	}
	var at []field
	for _, f := range fs {
		if f.depth == min {
			at = append(at, f)
		}
	}
	if len(at) == 1 {
		return &at[0]
	}
	var tagged []field
	for _, f := range at {
		if f.tagged {
			tagged = append(tagged, f)
		}
	}
	if len(tagged) == 1 {
		return &tagged[0]
	}
	return nil
}

func sameIndex(a, b []int) bool { return reflect.DeepEqual(a, b) }

func lessIndex(a, b []int) bool {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return len(a) < len(b)
}

// validName is encoding/json's test for a usable tag name.
func validName(s string) bool {
	for _, c := range s {
		switch {
		case strings.ContainsRune("!#$%&()*+-./:;<=>?@[]^_{|}~ ", c):
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c > 127:
		default:
			return false
		}
	}
	return true
}

func ptr[T any](v T) *T { return &v }
