package contract

import (
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// fieldSchema is the schema of a struct field of type t with `validate`
// tag tag; omitEmpty is the field's json omitempty option. required reports
// that the validator demands the field, so it is always in the JSON.
func (g *generator) fieldSchema(t reflect.Type, tag string, omitEmpty bool) (s *Schema, required bool) {
	s = g.typeSchema(t)
	rules := splitRules(tag)
	if tag == "-" {
		rules = nil
	}
	own, elem, keys, dive := splitDive(rules)

	base := t
	for base.Kind() == reflect.Pointer {
		base = base.Elem()
	}
	// The validator skips every rule of a zero value after omitempty (or
	// omitzero), of a nil one after omitnil.
	zeroSkips := len(own) > 0 && (own[0] == "omitempty" || own[0] == "omitzero")
	nilSkips := zeroSkips || len(own) > 0 && own[0] == "omitnil"
	var cons []*Schema
	var unmapped []string
	for _, r := range own {
		switch r {
		case "omitempty", "omitnil", "omitzero", "":
			continue
		case "required":
			required = true
			if t.Kind() == reflect.Pointer {
				continue // a non-nil pointer is enough: see nilOK
			}
		}
		c, ok := altRule(base, r)
		if !ok {
			unmapped = append(unmapped, r)
			continue
		}
		if c != nil {
			cons = append(cons, c)
		}
	}

	// null (a nil pointer, slice or map) is in the JSON only without
	// omitempty, and valid only when the rules accept nil.
	wasNullable := isNullable(s)
	if wasNullable {
		s = notNull(s)
	}
	if dive {
		g.applyDive(s, base, elem, keys, &unmapped)
	}
	if len(cons) > 0 {
		c := &Schema{}
		for _, x := range cons {
			c = merge(c, x)
		}
		if z, ok := zeroValue(base); ok && zeroSkips && t.Kind() != reflect.Pointer {
			if s.Type != "" || len(s.Types) > 0 {
				c.Type, c.Types = "", nil
			}
			s = merge(s, &Schema{AnyOf: []*Schema{{Const: &z}, c}})
		} else {
			s = merge(s, c)
		}
	}
	nilOK := !required && (nilSkips || t.Kind() != reflect.Pointer || len(own) == 0) &&
		(nilSkips || (zeroOrNil(s.MinItems) && zeroOrNil(s.MinProperties)))
	if wasNullable && !omitEmpty && nilOK {
		s = nullable(s)
	}
	if tag != "" {
		if s.Extra == nil {
			s.Extra = map[string]any{}
		}
		s.Extra[ExtValidate] = tag
		if len(unmapped) > 0 {
			s.Extra[ExtUnmapped] = unmapped
		}
	}
	return s, required
}

func zeroOrNil(p *int) bool { return p == nil || *p == 0 }

// applyDive puts the element rules after "dive" on s's items (slices,
// arrays) or additionalProperties (maps), and the key rules between
// "keys" and "endkeys" on its propertyNames.
func (g *generator) applyDive(s *Schema, t reflect.Type, elem, keys []string, unmapped *[]string) {
	switch t.Kind() {
	case reflect.Slice, reflect.Array:
		es, _ := g.fieldSchema(t.Elem(), strings.Join(elem, ","), false)
		delete(es.Extra, ExtValidate)
		if len(es.Extra) == 0 {
			es.Extra = nil
		}
		s.Items = es
	case reflect.Map:
		es, _ := g.fieldSchema(t.Elem(), strings.Join(elem, ","), false)
		delete(es.Extra, ExtValidate)
		if len(es.Extra) == 0 {
			es.Extra = nil
		}
		s.AdditionalProperties = es
		if len(keys) > 0 {
			kc := &Schema{}
			for _, r := range keys {
				c, ok := altRule(t.Key(), r)
				if !ok {
					*unmapped = append(*unmapped, "keys:"+r)
					continue
				}
				if c != nil {
					c.Type = ""
					kc = merge(kc, c)
				}
			}
			s.PropertyNames = merge(orEmpty(s.PropertyNames), kc)
		}
	default:
		*unmapped = append(*unmapped, "dive")
	}
}

func orEmpty(s *Schema) *Schema {
	if s == nil {
		return &Schema{}
	}
	return s
}

// splitRules splits a validate tag at its commas (the validator writes a
// literal comma in a parameter as 0x2C).
func splitRules(tag string) []string {
	if tag == "" {
		return nil
	}
	parts := strings.Split(tag, ",")
	for i, p := range parts {
		parts[i] = strings.ReplaceAll(p, "0x2C", ",")
	}
	return parts
}

// splitDive splits rules into those of the field itself, those after
// "dive" (for the elements) and the key rules (keys ... endkeys).
func splitDive(rules []string) (own, elem, keys []string, dive bool) {
	for i, r := range rules {
		if r != "dive" {
			continue
		}
		own, rest := rules[:i], rules[i+1:]
		if len(rest) > 0 && rest[0] == "keys" {
			for j, k := range rest {
				if k == "endkeys" {
					return own, rest[j+1:], rest[1:j], true
				}
			}
		}
		return own, rest, nil, true
	}
	return rules, nil, nil, false
}

// altRule maps one rule, or alternatives joined by '|' to anyOf.
func altRule(t reflect.Type, rule string) (*Schema, bool) {
	alts := strings.Split(rule, "|")
	if len(alts) == 1 {
		return mapRule(t, rule)
	}
	s := &Schema{}
	for _, a := range alts {
		c, ok := mapRule(t, a)
		if !ok {
			return nil, false
		}
		if c == nil {
			return nil, true // an alternative that always holds
		}
		s.AnyOf = append(s.AnyOf, c)
	}
	return s, true
}

type kind int

const (
	kOther kind = iota
	kString
	kNumber
	kBool
	kList
	kMap
	kTime
)

func kindOf(t reflect.Type) kind {
	switch {
	case t == timeType:
		return kTime
	case t.Implements(jsonMarshalerType) || reflect.PointerTo(t).Implements(jsonMarshalerType) ||
		t.Implements(textMarshalerType) || reflect.PointerTo(t).Implements(textMarshalerType):
		return kOther
	}
	switch t.Kind() {
	case reflect.String:
		return kString
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64:
		return kNumber
	case reflect.Bool:
		return kBool
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return kOther // []byte is base64 in JSON: its byte length has no keyword
		}
		return kList
	case reflect.Array:
		return kList
	case reflect.Map:
		return kMap
	}
	return kOther
}

// zeroValue is the JSON of t's zero value, for scalars.
func zeroValue(t reflect.Type) (any, bool) {
	switch kindOf(t) {
	case kString:
		return "", true
	case kNumber:
		return 0, true
	case kBool:
		return false, true
	case kTime:
		return "0001-01-01T00:00:00Z", true
	}
	return nil, false
}

// Patterns for string rules (ECMA-262 and RE2 compatible).
var stringPatterns = map[string]string{
	"alpha":        `^[a-zA-Z]+$`,
	"alphanum":     `^[a-zA-Z0-9]+$`,
	"numeric":      `^[-+]?[0-9]+(?:\.[0-9]+)?$`,
	"number":       `^[0-9]+$`,
	"hexadecimal":  `^(?:0[xX])?[0-9a-fA-F]+$`,
	"hexcolor":     `^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})$`,
	"ascii":        `^[\x00-\x7F]*$`,
	"printascii":   `^[\x20-\x7E]*$`,
	"e164":         `^\+?[1-9][0-9]{7,14}$`,
	"uuid":         `^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`,
	"uuid_rfc4122": `^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`,
	"uuid3":        `^[0-9a-f]{8}-[0-9a-f]{4}-3[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$`,
	"uuid4":        `^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`,
	"uuid5":        `^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`,
	"hostname":     `^[a-zA-Z](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$`,
	"fqdn":         `^(?:[a-zA-Z0-9][a-zA-Z0-9-]{0,62})(?:\.[a-zA-Z0-9][a-zA-Z0-9-]{0,62})*?\.[a-zA-Z][a-zA-Z0-9-]{0,62}\.?$`,
	"base64":       `^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{4})$`,
	"base64url":    `^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2}==|[A-Za-z0-9_-]{3}=|[A-Za-z0-9_-]{4})$`,
	"mac":          macPattern(),
}

// stringFormats maps rules to a JSON Schema format (and a pattern where
// the validator is stricter than the format).
var stringFormats = map[string]string{
	"email":            "email",
	"url":              "uri",
	"uri":              "uri-reference",
	"http_url":         "uri",
	"uuid":             "uuid",
	"uuid_rfc4122":     "uuid",
	"uuid3":            "uuid",
	"uuid4":            "uuid",
	"uuid5":            "uuid",
	"hostname":         "hostname",
	"hostname_rfc1123": "hostname",
	"fqdn":             "hostname",
	"ipv4":             "ipv4",
	"ip4_addr":         "ipv4",
	"ipv6":             "ipv6",
	"ip6_addr":         "ipv6",
}

// MappedRules lists the validator rules this package turns into JSON
// Schema keywords (on the kinds of field noted in the package
// documentation); any other rule is listed in x-kavari-unmapped.
func MappedRules() []string {
	out := []string{"required", "omitempty", "omitnil", "omitzero", "isdefault", "dive", "keys", "endkeys",
		"len", "min", "max", "eq", "ne", "gt", "gte", "lt", "lte", "oneof", "unique", "boolean",
		"contains", "containsany", "containsrune", "excludes", "excludesall", "excludesrune",
		"startswith", "endswith", "startsnotwith", "endsnotwith", "datetime", "ip", "ip_addr",
		"latitude", "longitude", "http_url"}
	for k := range stringPatterns {
		out = append(out, k)
	}
	for k := range stringFormats {
		out = append(out, k)
	}
	return uniqueSorted(out)
}

// mapRule maps one validator rule on a field of (dereferenced) type t. It
// returns ok false when the rule has no JSON Schema equivalent there, and
// a nil schema when the rule adds nothing (a constraint the type implies).
func mapRule(t reflect.Type, rule string) (*Schema, bool) {
	name, param, _ := strings.Cut(rule, "=")
	k := kindOf(t)
	num := func() (float64, bool) {
		f, err := strconv.ParseFloat(param, 64)
		return f, err == nil
	}
	count := func() (int, bool) {
		n, err := strconv.Atoi(param)
		return n, err == nil && n >= 0
	}
	switch name {
	case "required":
		switch k {
		case kString:
			return &Schema{MinLength: ptr(1)}, true
		case kNumber:
			return &Schema{Not: &Schema{Const: ptr[any](0)}}, true
		case kBool:
			return &Schema{Const: ptr[any](true)}, true
		case kTime:
			return &Schema{Not: &Schema{Const: ptr[any]("0001-01-01T00:00:00Z")}}, true
		case kList, kMap:
			if t.Kind() == reflect.Array {
				return nil, false
			}
			return nil, true // not null: see fieldSchema
		}
		return nil, t.Kind() == reflect.Pointer || t.Kind() == reflect.Interface
	case "isdefault":
		if z, ok := zeroValue(t); ok {
			return &Schema{Const: &z}, true
		}
		return nil, false
	case "len", "min", "max", "eq", "ne", "gt", "gte", "lt", "lte":
		return boundRule(k, name, param, num, count)
	case "oneof":
		vals := oneofValues(param)
		enum := make([]any, 0, len(vals))
		for _, v := range vals {
			switch k {
			case kString:
				enum = append(enum, v)
			case kNumber:
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					return nil, false
				}
				enum = append(enum, f)
			default:
				return nil, false
			}
		}
		return &Schema{Enum: enum}, true
	case "unique":
		if k == kList && param == "" {
			return &Schema{UniqueItems: true}, true
		}
		return nil, false
	case "latitude", "longitude":
		lim := 90.0
		if name == "longitude" {
			lim = 180
		}
		if k == kNumber {
			return &Schema{Minimum: ptr(-lim), Maximum: ptr(lim)}, true
		}
		return nil, false
	}
	if k != kString {
		return nil, false
	}
	switch name {
	case "boolean":
		return &Schema{Enum: []any{"1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False"}}, true
	case "contains":
		return &Schema{Pattern: regexp.QuoteMeta(param)}, true
	case "containsrune":
		return &Schema{Pattern: regexp.QuoteMeta(param)}, param != ""
	case "containsany":
		return &Schema{Pattern: charClass(param)}, param != ""
	case "excludes", "excludesrune":
		return &Schema{Not: &Schema{Pattern: regexp.QuoteMeta(param)}}, param != ""
	case "excludesall":
		return &Schema{Not: &Schema{Pattern: charClass(param)}}, param != ""
	case "startswith":
		return &Schema{Pattern: "^" + regexp.QuoteMeta(param)}, true
	case "endswith":
		return &Schema{Pattern: regexp.QuoteMeta(param) + "$"}, true
	case "startsnotwith":
		return &Schema{Not: &Schema{Pattern: "^" + regexp.QuoteMeta(param)}}, true
	case "endsnotwith":
		return &Schema{Not: &Schema{Pattern: regexp.QuoteMeta(param) + "$"}}, true
	case "ip", "ip_addr":
		return &Schema{AnyOf: []*Schema{{Format: "ipv4"}, {Format: "ipv6"}}}, true
	case "datetime":
		switch param {
		case "2006-01-02T15:04:05Z07:00":
			return &Schema{Format: "date-time"}, true
		case "2006-01-02":
			return &Schema{Format: "date", Pattern: `^[0-9]{4}-[0-9]{2}-[0-9]{2}$`}, true
		case "15:04:05":
			return &Schema{Pattern: `^(?:[01]?[0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]$`}, true
		}
		return nil, false
	}
	f, hasFormat := stringFormats[name]
	p, hasPattern := stringPatterns[name]
	switch name {
	case "email": // the format alone lets "@example.com" pass
		p, hasPattern = `^[^@]+@[^@]+$`, true
	case "http_url":
		p, hasPattern = `^[hH][tT][tT][pP][sS]?://`, true
	case "uri": // an absolute URI or an absolute path, as url.ParseRequestURI takes
		p, hasPattern = `^(?:[a-zA-Z][a-zA-Z0-9+.-]*:|/)`, true
	}
	if !hasFormat && !hasPattern {
		return nil, false
	}
	return &Schema{Format: f, Pattern: p}, true
}

// boundRule maps the size rules: value bounds on numbers, length bounds
// (in runes) on strings, item counts on lists and maps.
func boundRule(k kind, name, param string, num func() (float64, bool), count func() (int, bool)) (*Schema, bool) {
	switch k {
	case kNumber:
		v, ok := num()
		if !ok {
			return nil, false
		}
		switch name {
		case "len", "eq":
			return &Schema{Const: ptr[any](v)}, true
		case "ne":
			return &Schema{Not: &Schema{Const: ptr[any](v)}}, true
		case "min", "gte":
			return &Schema{Minimum: &v}, true
		case "max", "lte":
			return &Schema{Maximum: &v}, true
		case "gt":
			return &Schema{ExclusiveMinimum: &v}, true
		case "lt":
			return &Schema{ExclusiveMaximum: &v}, true
		}
	case kString, kList, kMap:
		if k == kString && (name == "eq" || name == "ne") {
			if name == "eq" {
				return &Schema{Const: ptr[any](param)}, true
			}
			return &Schema{Not: &Schema{Const: ptr[any](param)}}, true
		}
		n, ok := count()
		if !ok {
			return nil, false
		}
		lo, hi := -1, -1
		switch name {
		case "len", "eq":
			lo, hi = n, n
		case "min", "gte":
			lo = n
		case "max", "lte":
			hi = n
		case "gt":
			lo = n + 1
		case "lt":
			if n == 0 {
				return &Schema{Not: &Schema{}}, true
			}
			hi = n - 1
		case "ne":
			s, _ := boundRule(k, "len", param, num, count)
			return &Schema{Not: s}, true
		}
		s := &Schema{}
		var pl, ph *int
		if lo >= 0 {
			pl = ptr(lo)
		}
		if hi >= 0 {
			ph = ptr(hi)
		}
		switch k {
		case kString:
			s.MinLength, s.MaxLength = pl, ph
		case kList:
			s.MinItems, s.MaxItems = pl, ph
		case kMap:
			s.MinProperties, s.MaxProperties = pl, ph
		}
		return s, true
	case kBool:
		if name == "eq" || name == "ne" {
			b, err := strconv.ParseBool(param)
			if err != nil {
				return nil, false
			}
			if name == "ne" {
				b = !b
			}
			return &Schema{Const: ptr[any](b)}, true
		}
	}
	return nil, false
}

// oneofValues splits a oneof parameter as the validator does: on spaces,
// with 'single quotes' around values that contain spaces.
func oneofValues(param string) []string {
	var out []string
	for param != "" {
		param = strings.TrimLeft(param, " ")
		if param == "" {
			break
		}
		if param[0] == '\'' {
			if end := strings.IndexByte(param[1:], '\''); end >= 0 {
				out = append(out, param[1:1+end])
				param = param[2+end:]
				continue
			}
		}
		v, rest, _ := strings.Cut(param, " ")
		out = append(out, v)
		param = rest
	}
	return out
}

func charClass(chars string) string {
	var b strings.Builder
	b.WriteByte('[')
	for _, r := range chars {
		if strings.ContainsRune(`\]^-[`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteByte(']')
	return b.String()
}

// merge adds b's keywords to a. A keyword both set (with different values)
// goes into a's allOf, so neither constraint is lost.
func merge(a, b *Schema) *Schema {
	if b == nil {
		return a
	}
	av, bv := reflect.ValueOf(a).Elem(), reflect.ValueOf(b).Elem()
	st := av.Type()
	for i := 0; i < st.NumField(); i++ {
		name := st.Field(i).Name
		fb := bv.Field(i)
		if fb.IsZero() || name == "PropertyOrder" {
			continue
		}
		fa := av.Field(i)
		switch {
		case name == "Extra":
			if a.Extra == nil {
				a.Extra = map[string]any{}
			}
			for k, v := range b.Extra {
				a.Extra[k] = v
			}
		case name == "AllOf":
			a.AllOf = append(a.AllOf, b.AllOf...)
		case fa.IsZero():
			fa.Set(fb)
		case reflect.DeepEqual(fa.Interface(), fb.Interface()):
		case tighten(name, fa, fb):
		default:
			one := &Schema{}
			reflect.ValueOf(one).Elem().Field(i).Set(fb)
			a.AllOf = append(a.AllOf, one)
		}
	}
	if a.Type != "" && len(a.Types) > 0 {
		a.Type = ""
	}
	return a
}

func uniqueSorted(in []string) []string {
	m := map[string]bool{}
	var out []string
	for _, s := range in {
		if !m[s] {
			m[s] = true
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

// tighten combines two bounds of the same keyword into the stricter one
// (the larger minimum, the smaller maximum). It reports false for any
// other keyword.
func tighten(name string, a, b reflect.Value) bool {
	lower := strings.HasPrefix(name, "Min") || name == "ExclusiveMinimum"
	upper := strings.HasPrefix(name, "Max") || name == "ExclusiveMaximum"
	if !lower && !upper {
		return false
	}
	var av, bv float64
	switch p := a.Interface().(type) {
	case *float64:
		av, bv = *p, *b.Interface().(*float64)
	case *int:
		av, bv = float64(*p), float64(*b.Interface().(*int))
	default:
		return false
	}
	if (lower && bv > av) || (upper && bv < av) {
		a.Set(b)
	}
	return true
}

// macPattern matches what net.ParseMAC accepts: 6, 8 or 20 bytes as hex
// pairs separated by ':' or '-', or as groups of four separated by '.'.
func macPattern() string {
	var alts []string
	for _, n := range []int{6, 8, 20} {
		for _, sep := range []string{":", "-"} {
			alts = append(alts, fmt.Sprintf("[0-9A-Fa-f]{2}(?:%s[0-9A-Fa-f]{2}){%d}", sep, n-1))
		}
		alts = append(alts, fmt.Sprintf("[0-9A-Fa-f]{4}(?:\\.[0-9A-Fa-f]{4}){%d}", n/2-1))
	}
	return "^(?:" + strings.Join(alts, "|") + ")$"
}
