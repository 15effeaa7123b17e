package contract_test

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari/contract"
	"github.com/kavari-go/kavari/validate"
)

// ruleCase is one field type and validate tag with values the validator
// accepts (good) and rejects (bad): the field's schema must agree on each.
type ruleCase struct {
	typ       reflect.Type
	json, tag string
	good, bad []any // nil means the zero value
}

func tf[T any]() reflect.Type { return reflect.TypeFor[T]() }

func sp(s string) *string { return &s }

var ruleCases = []ruleCase{
	{tf[string](), "", "required", []any{"a"}, []any{""}},
	{tf[int](), "", "required", []any{-1, 5}, []any{0}},
	{tf[bool](), "", "required", []any{true}, []any{false}},
	{tf[time.Time](), "", "required", []any{time.Unix(1, 0).UTC()}, []any{nil}},
	{tf[*string](), "", "required", []any{sp(""), sp("x")}, []any{nil}},
	{tf[[]int](), "", "required", []any{[]int{}, []int{1}}, []any{nil}},
	{tf[map[string]int](), "", "required", []any{map[string]int{}}, []any{nil}},
	{tf[string](), "", "omitempty,email", []any{"", "a@example.com"}, []any{"nope"}},
	{tf[string](), "", "omitzero,min=3", []any{"", "abc"}, []any{"ab"}},
	{tf[*string](), "", "omitnil,min=3", []any{nil, sp("abc")}, []any{sp(""), sp("ab")}},
	{tf[*int](), "", "min=3", []any{ip(3)}, []any{nil, ip(2)}},
	{tf[*int](), "", "", []any{nil, ip(2)}, nil},
	{tf[string](), "", "isdefault", []any{""}, []any{"x"}},
	{tf[int](), "", "isdefault", []any{0}, []any{1}},
	{tf[string](), "", "len=2", []any{"ab", "éé"}, []any{"a", "abc"}},
	{tf[string](), "", "min=2,max=3", []any{"ab", "abc", "日本"}, []any{"a", "abcd"}},
	{tf[int8](), "", "min=-2,max=3", []any{-2, 3}, []any{-3, 4}},
	{tf[float64](), "", "gt=0,lt=1", []any{0.5}, []any{0.0, 1.0}},
	{tf[uint](), "", "gte=2,lte=4", []any{2, 4}, []any{1, 5}},
	{tf[int](), "", "eq=3", []any{3}, []any{2}},
	{tf[int](), "", "ne=3", []any{2}, []any{3}},
	{tf[int](), "", "len=3", []any{3}, []any{4}},
	{tf[string](), "", "eq=ab", []any{"ab"}, []any{"abc"}},
	{tf[string](), "", "ne=ab", []any{"abc"}, []any{"ab"}},
	{tf[string](), "", "gt=1,lt=3", []any{"ab"}, []any{"a", "abc"}},
	{tf[string](), "", "gte=1,lte=2", []any{"a", "ab"}, []any{"", "abc"}},
	{tf[bool](), "", "eq=false", []any{false}, []any{true}},
	{tf[bool](), "", "ne=false", []any{true}, []any{false}},
	{tf[[]int](), "", "min=1,max=2", []any{[]int{1}, []int{1, 2}}, []any{nil, []int{}, []int{1, 2, 3}}},
	{tf[[]int](), "", "len=2", []any{[]int{1, 2}}, []any{[]int{1}}},
	{tf[[]int](), "", "eq=1", []any{[]int{1}}, []any{[]int{}}},
	{tf[[]int](), "", "ne=1", []any{[]int{}, []int{1, 2}}, []any{[]int{1}}},
	{tf[[]int](), "", "gt=0,lt=2", []any{[]int{1}}, []any{[]int{}, []int{1, 2}}},
	{tf[[]int](), "", "gte=1,lte=1", []any{[]int{1}}, []any{[]int{1, 2}}},
	{tf[[2]int](), "", "", []any{[2]int{1, 2}}, nil},
	{tf[map[string]int](), "", "min=1,max=1", []any{map[string]int{"a": 1}}, []any{nil, map[string]int{}, map[string]int{"a": 1, "b": 2}}},
	{tf[string](), "", "oneof=red green 'sky blue'", []any{"red", "sky blue"}, []any{"blue", ""}},
	{tf[int](), "", "oneof=1 2", []any{1, 2}, []any{3}},
	{tf[[]string](), "", "unique", []any{[]string{"a", "b"}}, []any{[]string{"a", "a"}}},
	{tf[string](), "", "boolean", []any{"true", "F", "1"}, []any{"yes"}},
	{tf[string](), "", "contains=ab", []any{"xaby"}, []any{"ba"}},
	{tf[string](), "", "containsany=!?", []any{"hi!"}, []any{"hi"}},
	{tf[string](), "", "containsrune=é", []any{"café"}, []any{"cafe"}},
	{tf[string](), "", "excludes=ab", []any{"ba"}, []any{"xaby"}},
	{tf[string](), "", "excludesall=!?", []any{"hi"}, []any{"hi?"}},
	{tf[string](), "", "excludesrune=é", []any{"cafe"}, []any{"café"}},
	{tf[string](), "", "startswith=a.", []any{"a.b"}, []any{"ab", "b.a."}},
	{tf[string](), "", "endswith=.z", []any{"a.z"}, []any{"az"}},
	{tf[string](), "", "startsnotwith=a", []any{"ba"}, []any{"ab"}},
	{tf[string](), "", "endsnotwith=a", []any{"ab"}, []any{"ba"}},
	{tf[string](), "", "email", []any{"a.b@example.com", "x+y@mail.example.org"}, []any{"", "a@", "@b.com", "a b@c.com"}},
	{tf[string](), "", "url", []any{"https://example.com/a?b=c", "mailto:a@example.com"}, []any{"", "example.com", "/path"}},
	{tf[string](), "", "uri", []any{"https://example.com", "/a/b"}, []any{"", "a/b"}},
	{tf[string](), "", "http_url", []any{"http://example.com/x", "HTTPS://EXAMPLE.COM"}, []any{"ftp://example.com", "example.com"}},
	{tf[string](), "", "uuid", []any{"123e4567-e89b-12d3-a456-426614174000", "123E4567-E89B-12D3-A456-426614174000"}, []any{"123e4567e89b12d3a456426614174000", "x"}},
	{tf[string](), "", "uuid_rfc4122", []any{"123e4567-e89b-12d3-a456-426614174000"}, []any{"123e4567-e89b-12d3-a456"}},
	{tf[string](), "", "uuid3", []any{"a987fbc9-4bed-3078-af07-9141ba07c9f3"}, []any{"a987fbc9-4bed-4078-af07-9141ba07c9f3"}},
	{tf[string](), "", "uuid4", []any{"a987fbc9-4bed-4078-8f07-9141ba07c9f3"}, []any{"a987fbc9-4bed-4078-cf07-9141ba07c9f3", "A987FBC9-4BED-4078-8F07-9141BA07C9F3"}},
	{tf[string](), "", "uuid5", []any{"987fbc97-4bed-5078-af07-9141ba07c9f3"}, []any{"987fbc97-4bed-4078-af07-9141ba07c9f3"}},
	{tf[string](), "", "hostname", []any{"example.com", "a-b.c"}, []any{"1example.com", "-a.com", "a_b.com"}},
	{tf[string](), "", "hostname_rfc1123", []any{"1example.com", "a-b.c"}, []any{"-a.com", "a_b.com"}},
	{tf[string](), "", "fqdn", []any{"www.example.com", "example.com."}, []any{"localhost", "exa mple.com"}},
	{tf[string](), "", "ip", []any{"10.0.0.1", "::1", "2001:db8::1"}, []any{"10.0.0", "x"}},
	{tf[string](), "", "ip_addr", []any{"10.0.0.1", "::1"}, []any{"10.0.0.256"}},
	{tf[string](), "", "ipv4", []any{"192.168.0.1"}, []any{"::1", "1.2.3"}},
	{tf[string](), "", "ip4_addr", []any{"192.168.0.1"}, []any{"::1"}},
	{tf[string](), "", "ipv6", []any{"fe80::1", "2001:db8::"}, []any{"192.168.0.1"}},
	{tf[string](), "", "ip6_addr", []any{"fe80::1"}, []any{"192.168.0.1"}},
	{tf[string](), "", "datetime=2006-01-02T15:04:05Z07:00", []any{"2024-02-29T10:00:00Z", "2024-02-29T10:00:00+02:00"}, []any{"2024-02-29", "2024-02-29 10:00:00Z"}},
	{tf[string](), "", "datetime=2006-01-02", []any{"2024-02-29"}, []any{"2024-2-29", "29.02.2024"}},
	{tf[string](), "", "datetime=15:04:05", []any{"23:59:59", "1:00:00"}, []any{"24:00:00", "1:0:00"}},
	{tf[string](), "", "alpha", []any{"abC"}, []any{"ab1", ""}},
	{tf[string](), "", "alphanum", []any{"ab1"}, []any{"ab-1", ""}},
	{tf[string](), "", "numeric", []any{"-1.5", "+3", "42"}, []any{"1e3", "1.", ""}},
	{tf[string](), "", "number", []any{"0042"}, []any{"-1", "1.5"}},
	{tf[string](), "", "hexadecimal", []any{"0xFF", "abc"}, []any{"0xG", ""}},
	{tf[string](), "", "hexcolor", []any{"#fff", "#A0B1C2"}, []any{"fff", "#ggg"}},
	{tf[string](), "", "ascii", []any{"abc~", ""}, []any{"é"}},
	{tf[string](), "", "printascii", []any{"abc ~"}, []any{"a\tb", "é"}},
	{tf[string](), "", "e164", []any{"+4915112345678", "14155552671"}, []any{"+0123456789", "+12"}},
	{tf[string](), "", "base64", []any{"aGk=", "aGVsbG8h"}, []any{"aGk", "!!!!"}},
	{tf[string](), "", "base64url", []any{"aGk_", "aGk="}, []any{"aGk+"}},
	{tf[string](), "", "mac", []any{"00:1a:2B:3c:4D:5e", "00-1a-2b-3c-4d-5e", "001a.2b3c.4d5e", "00:1a:2b:3c:4d:5e:6f:70"}, []any{"00:1a:2b:3c:4d", "00:1a-2b:3c:4d:5e"}},
	{tf[float64](), "", "latitude", []any{-90.0, 45.5}, []any{90.5}},
	{tf[float64](), "", "longitude", []any{180.0}, []any{-180.5}},
	{tf[[]string](), "", "dive,email", []any{nil, []string{"a@example.com"}}, []any{[]string{"x"}}},
	{tf[[]string](), "", "min=1,dive,min=2", []any{[]string{"ab"}}, []any{[]string{}, []string{"a"}}},
	{tf[map[string]int](), "", "dive,keys,alpha,endkeys,gt=0", []any{map[string]int{"ab": 1}}, []any{map[string]int{"a1": 1}, map[string]int{"ab": 0}}},
	{tf[[][]int](), "", "dive,max=1,dive,gt=0", []any{[][]int{{1}, {}}}, []any{[][]int{{1, 2}}, [][]int{{0}}}},
	{tf[string](), "", "uuid|email", []any{"a@example.com", "123e4567-e89b-12d3-a456-426614174000"}, []any{"x"}},
	{tf[string](), "", "omitempty,oneof=a b|len=3", []any{"", "a", "xyz"}, []any{"xy"}},
	{tf[int64](), "", "", []any{int64(-1 << 62)}, nil},
	{tf[[]byte](), "", "", []any{nil, []byte{0, 255}}, nil},
	{tf[int](), ",string", "", []any{12}, nil},
	{tf[bool](), ",string", "", []any{true}, nil},
	{tf[string](), ",string", "", []any{"x"}, nil},
	{tf[*float64](), ",string", "", []any{nil, fp(1.5)}, nil},
	{tf[string](), ",omitempty", "", []any{""}, nil},
}

func ip(n int) *int         { return &n }
func fp(f float64) *float64 { return &f }

// TestRuleMapping checks every mapped rule: the validator's verdict on each
// sample (as the table says) and the schema's verdict on its JSON agree.
func TestRuleMapping(t *testing.T) {
	covered := map[string]bool{}
	for _, c := range ruleCases {
		for _, r := range strings.FieldsFunc(c.tag, func(r rune) bool { return r == ',' || r == '|' }) {
			name, _, _ := strings.Cut(r, "=")
			covered[name] = true
		}
		t.Run(fmt.Sprintf("%s json:%q validate:%q", c.typ, c.json, c.tag), func(t *testing.T) {
			st := reflect.StructOf([]reflect.StructField{{
				Name: "F", Type: c.typ,
				Tag: reflect.StructTag(fmt.Sprintf(`json:"f%s" validate:%q`, c.json, c.tag)),
			}})
			s := contract.TypeSchema(st)
			js := mustJSON(t, s)
			sch := compile(t, js, "mem://rule")
			for i, vals := range [][]any{c.good, c.bad} {
				good := i == 0
				for _, val := range vals {
					v := reflect.New(st)
					if val != nil {
						v.Elem().Field(0).Set(reflect.ValueOf(val).Convert(c.typ))
					}
					verr := validate.Struct(v.Interface())
					require.Equal(t, good, verr == nil, "table: validator on %#v: %v", val, verr)
					b, err := json.Marshal(v.Interface())
					require.NoError(t, err)
					serr := sch.Validate(instance(t, b))
					assert.Equal(t, good, serr == nil, "schema on %s (validator: %v): %v\nschema: %s", b, verr, serr, js)
				}
			}
		})
	}
	for _, r := range contract.MappedRules() {
		assert.True(t, covered[r], "mapped rule %s has no case", r)
	}
}

// TestUnmappedRules checks rules with no JSON Schema equivalent are listed
// in x-kavari-unmapped and the tag kept in x-kavari-validate.
func TestUnmappedRules(t *testing.T) {
	type inner struct {
		A string `json:"a"`
	}
	type msg struct {
		A  string         `json:"a" validate:"required,eqfield=B"`
		B  string         `json:"b" validate:"required_if=A x,lowercase"`
		C  time.Time      `json:"c" validate:"gt"`
		D  inner          `json:"d" validate:"required"`
		E  []byte         `json:"e" validate:"max=4"`
		F  int            `json:"f,string" validate:"gt=1"`
		G  string         `json:"g" validate:"cidr|email"`
		H  [2]int         `json:"h" validate:"required"`
		I  string         `json:"i" validate:"dive"`
		K  []string       `json:"k" validate:"dive,cron"`
		Mk map[string]int `json:"mk" validate:"dive,keys,cidr,endkeys"`
	}
	s := contract.TypeSchema(reflect.TypeFor[msg]())
	want := map[string][]string{
		"a": {"eqfield=B"}, "b": {"required_if=A x", "lowercase"}, "c": {"gt"}, "d": {"required"},
		"e": {"max=4"}, "g": {"cidr|email"}, "h": {"required"}, "i": {"dive"}, "mk": {"keys:cidr"},
	}
	for name, rules := range want {
		p := s.Properties[name]
		require.NotNil(t, p, name)
		assert.Equal(t, rules, p.Extra[contract.ExtUnmapped], name)
		assert.NotEmpty(t, p.Extra[contract.ExtValidate], name)
	}
	assert.Equal(t, []string{"cron"}, s.Properties["k"].Items.Extra[contract.ExtUnmapped])
	assert.NotEmpty(t, s.Properties["f"].Extra[contract.ExtUnmapped], "rules on a string-encoded field")
	assert.True(t, slices.Contains(s.Required, "a"))
}

// TestTypeMapping pins the schema of each Go type.
func TestTypeMapping(t *testing.T) {
	type Embedded struct {
		X int `json:"x"`
	}
	type Shadow struct {
		Embedded
		X string `json:"x"` // the shallower field wins
		Y int    `json:"-"`
		//lint:ignore SA5008 encoding/json names this field "-": the case under test
		Z int `json:"-,"`
	}
	for _, c := range []struct {
		typ  reflect.Type
		want string
	}{
		{tf[bool](), `{"type":"boolean"}`},
		{tf[int8](), `{"type":"integer","minimum":-128,"maximum":127}`},
		{tf[int16](), `{"type":"integer","minimum":-32768,"maximum":32767}`},
		{tf[int32](), `{"type":"integer","minimum":-2147483648,"maximum":2147483647}`},
		{tf[int64](), `{"type":"integer","format":"int64"}`},
		{tf[uint8](), `{"type":"integer","minimum":0,"maximum":255}`},
		{tf[uint32](), `{"type":"integer","minimum":0,"maximum":4294967295}`},
		{tf[uint64](), `{"type":"integer","minimum":0,"format":"uint64"}`},
		{tf[float32](), `{"type":"number"}`},
		{tf[string](), `{"type":"string"}`},
		{tf[time.Time](), `{"type":"string","format":"date-time"}`},
		{tf[[]byte](), `{"type":["string","null"],"contentEncoding":"base64"}`},
		{tf[[]string](), `{"type":["array","null"],"items":{"type":"string"}}`},
		{tf[[3]bool](), `{"type":"array","items":{"type":"boolean"},"minItems":3,"maxItems":3}`},
		{tf[map[string]float64](), `{"type":["object","null"],"additionalProperties":{"type":"number"}}`},
		{tf[map[uint8]bool](), `{"type":["object","null"],"additionalProperties":{"type":"boolean"},"propertyNames":{"pattern":"^[0-9]+$"}}`},
		{tf[*string](), `{"type":["string","null"]}`},
		{tf[any](), `true`}, // the empty schema
		{tf[json.RawMessage](), `{"x-kavari-go-type":"json.RawMessage","x-kavari-unmapped":["MarshalJSON: encoding not derivable"]}`},
		{tf[Shadow](), `{"type":"object","properties":{"x":{"type":"string"},"-":{"type":"integer","format":"int64"}}}`},
	} {
		t.Run(c.typ.String(), func(t *testing.T) {
			s := contract.TypeSchema(c.typ)
			s.Schema = ""
			assert.JSONEq(t, c.want, string(mustJSON(t, s)))
		})
	}
}
