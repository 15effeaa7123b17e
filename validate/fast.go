package validate

import (
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Most message types carry a few simple rules on fields of basic kinds: an
// id that is required, an amount greater than zero, a name of at most 64
// characters. The validator checks those through its generic machinery: it
// walks every field of the value and calls each rule through a FieldLevel.
// A check planned once per type answers the same question with a few
// comparisons. The plan only says "valid": when a field fails it, Struct
// runs the validator, which builds the error, so the errors are the
// validator's in every case.
//
// A plan covers a type whose every rule, on a field of kind string, bool,
// integer (time.Duration excluded: its parameters are durations), float or
// complex, is one of: omitempty (first), required, on strings (their
// length in runes) and numbers gt, gte, min, lt, lte, max, len with a
// number parameter, and on strings and integers oneof with plain words,
// with the meanings of the validator's baked-in rules (isGt, isGte,
// hasMinOf, isLt, isLte, hasMaxOf, hasLengthOf, hasValue, isOneOf).
// Any other rule, kind or tag syntax, or a rule deeper in the type, leaves
// the type to the validator.

// fastPlan lists the checks of a struct type's fields.
type fastPlan struct {
	fields []fieldPlan
}

// fieldPlan is the checks of one field.
type fieldPlan struct {
	index     int
	kind      reflect.Kind
	omitEmpty bool // a zero value passes without the other checks
	required  bool // a zero value fails
	bounds    []bound
	oneOf     [][]string // per oneof rule, the values the field's text must be one of
}

// bound is a comparison of the field's number (a string's length in runes)
// with a parameter: op is one of > ≥ < ≤ =. The parameter is parsed as the
// validator parses it for the field's kind (i for strings and signed
// integers, u for unsigned ones, f for floats).
type bound struct {
	op rune
	i  int64
	u  uint64
	f  float64
}

// makePlan builds struct type t's plan, nil when a rule of t is not one it
// covers.
func makePlan(t reflect.Type) *fastPlan {
	p := &fastPlan{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, ok := f.Tag.Lookup("validate")
		if !ok {
			if tagged(f.Type, map[reflect.Type]bool{}) {
				return nil // a rule deeper in: the validator walks there
			}
			continue
		}
		if !f.IsExported() || f.Anonymous {
			return nil
		}
		fp, ok := planField(i, f.Type, tag)
		if !ok {
			return nil
		}
		p.fields = append(p.fields, fp)
	}
	return p
}

// opOf maps the rules a plan covers to their comparison.
var opOf = map[string]rune{"gt": '>', "gte": '≥', "min": '≥', "lt": '<', "lte": '≤', "max": '≤', "len": '='}

// planField plans field i of type ft with validate tag tag; false when the
// plan does not cover it.
func planField(i int, ft reflect.Type, tag string) (fieldPlan, bool) {
	fp := fieldPlan{index: i, kind: ft.Kind()}
	if !basicKind(fp.kind) || ft == reflect.TypeFor[time.Duration]() || strings.ContainsAny(tag, "|\\") {
		return fp, false
	}
	for n, rule := range strings.Split(tag, ",") {
		name, param, hasParam := strings.Cut(rule, "=")
		switch {
		case name == "omitempty" && n == 0 && !hasParam:
			fp.omitEmpty = true
			continue
		case name == "required" && !hasParam:
			fp.required = true
			continue
		}
		if name == "oneof" && hasParam {
			if !oneOfKind(fp.kind) || !plainWords(param) {
				return fp, false
			}
			fp.oneOf = append(fp.oneOf, strings.Fields(param))
			continue
		}
		op, known := opOf[name]
		if !known || !hasParam || fp.kind == reflect.Bool || fp.kind == reflect.Complex64 || fp.kind == reflect.Complex128 {
			return fp, false
		}
		b := bound{op: op}
		var err error
		switch fp.kind {
		case reflect.String, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			b.i, err = strconv.ParseInt(param, 0, 64)
		case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
			b.u, err = strconv.ParseUint(param, 0, 64)
		case reflect.Float32:
			b.f, err = strconv.ParseFloat(param, 32)
		case reflect.Float64:
			b.f, err = strconv.ParseFloat(param, 64)
		}
		if err != nil {
			return fp, false // the validator panics on it: Struct reports that
		}
		fp.bounds = append(fp.bounds, b)
	}
	return fp, true
}

// oneOfKind reports whether the validator's oneof applies to kind k (it
// panics on the others).
func oneOfKind(k reflect.Kind) bool {
	switch k {
	case reflect.String, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return true
	}
	return false
}

// plainWords reports whether a oneof parameter is printable ASCII words
// separated by spaces, without quotes: then the validator's split (a
// regular expression that also reads quoted values) gives strings.Fields.
func plainWords(param string) bool {
	for i := 0; i < len(param); i++ {
		if c := param[i]; c == '\'' || (c != ' ' && (c < 0x21 || c > 0x7e)) {
			return false
		}
	}
	return true
}

// basicKind reports whether the plan covers fields of kind k.
func basicKind(k reflect.Kind) bool {
	switch k {
	case reflect.String, reflect.Bool,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128:
		return true
	}
	return false
}

// passes reports whether struct value v satisfies the plan: then the
// validator would find it valid.
func (p *fastPlan) passes(v reflect.Value) bool {
	for i := range p.fields {
		if !p.fields[i].passes(v.Field(p.fields[i].index)) {
			return false
		}
	}
	return true
}

// passes reports whether field value v satisfies the field's checks. For
// the kinds a plan covers, the validator's required (hasValue) and
// omitempty test whether the value is the zero value.
func (fp *fieldPlan) passes(v reflect.Value) bool {
	if (fp.omitEmpty || fp.required) && v.IsZero() {
		return fp.omitEmpty // omitempty comes first: it skips required too
	}
	for _, b := range fp.bounds {
		var ok bool
		switch fp.kind {
		case reflect.String:
			ok = cmp(b.op, int64(utf8.RuneCountInString(v.String())), b.i)
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			ok = cmp(b.op, v.Int(), b.i)
		case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
			ok = cmp(b.op, v.Uint(), b.u)
		default: // floats
			ok = cmp(b.op, v.Float(), b.f)
		}
		if !ok {
			return false
		}
	}
	if len(fp.oneOf) > 0 {
		var buf [24]byte
		var text []byte // the field as the validator's oneof reads it
		switch fp.kind {
		case reflect.String:
			text = append(buf[:0], v.String()...)
		case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			text = strconv.AppendUint(buf[:0], v.Uint(), 10)
		default:
			text = strconv.AppendInt(buf[:0], v.Int(), 10)
		}
		for _, vals := range fp.oneOf {
			if !slices.ContainsFunc(vals, func(x string) bool { return string(text) == x }) {
				return false
			}
		}
	}
	return true
}

// cmp compares a with b by op.
func cmp[T int64 | uint64 | float64](op rune, a, b T) bool {
	switch op {
	case '>':
		return a > b
	case '≥':
		return a >= b
	case '<':
		return a < b
	case '≤':
		return a <= b
	}
	return a == b
}
