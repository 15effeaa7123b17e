package kavari_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
)

// The Go side of Python kavari messages whose payload is a primitive
// (class StrMessage(KafkaMessage): payload: str, ...). The value on the wire
// is Python's f"{payload}".
type ktTextStr struct {
	kavari.Message `kavari:"topic=kt-text,name=StrMessage,codec=text"`
	Payload        string `validate:"max=40"`
}

type ktTextInt struct {
	kavari.Message `kavari:"topic=kt-text,name=IntMessage,codec=text"`
	N              int64
}

type ktTextInt8 struct {
	kavari.Message `kavari:"topic=kt-text,name=Int8Message,codec=text"`
	N              int8
}

type ktTextUint struct {
	kavari.Message `kavari:"topic=kt-text,name=UintMessage,codec=text"`
	N              uint32
}

type ktTextFloat struct {
	kavari.Message `kavari:"topic=kt-text,name=FloatMessage,codec=text"`
	F              float64
}

type ktTextFloat32 struct {
	kavari.Message `kavari:"topic=kt-text,name=Float32Message,codec=text"`
	F              float32
}

type ktTextBool struct {
	kavari.Message `kavari:"topic=kt-text,name=BoolMessage,codec=text"`
	B              bool
}

type ktTextBytes struct {
	kavari.Message `kavari:"topic=kt-text,name=BytesMessage,codec=text"`
	Raw            []byte
	helper         int // unexported: not part of the payload
	Ignored        int `json:"-"`
}

func ktTextRegistry(t *testing.T) *kavari.Registry {
	t.Helper()
	reg := kavari.NewRegistry()
	for _, m := range []any{&ktTextStr{}, &ktTextInt{}, &ktTextInt8{}, &ktTextUint{}, &ktTextFloat{}, &ktTextFloat32{}, &ktTextBool{}, &ktTextBytes{}} {
		require.NoError(t, kavari.DeclareAny(reg, m))
	}
	return reg
}

// TestTextCodecEncodesAsPython: a text-codec message's value is byte for
// byte what the Python kavari's KafkaMessage.to_json writes for the same
// primitive payload (f"{payload}", UTF-8). The expected strings were
// produced by CPython 3.11.
func TestTextCodecEncodesAsPython(t *testing.T) {
	for _, tc := range []struct {
		msg  any
		want string
	}{
		{&ktTextStr{Payload: "hello zé"}, "hello zé"},
		{&ktTextStr{Payload: ""}, ""},
		{&ktTextInt{N: 42}, "42"},
		{&ktTextInt{N: -7}, "-7"},
		{&ktTextInt{N: math.MinInt64}, "-9223372036854775808"},
		{&ktTextInt8{N: -128}, "-128"},
		{&ktTextUint{N: math.MaxUint32}, "4294967295"},
		{&ktTextBool{B: true}, "True"},
		{&ktTextBool{B: false}, "False"},
		{&ktTextBytes{Raw: []byte("a\x00b'")}, "a\x00b'"},
		{&ktTextBytes{}, ""},
		{&ktTextBytes{Raw: []byte("x"), helper: 1, Ignored: 2}, "x"},
		{&ktTextFloat32{F: 0.1}, "0.1"},
		{&ktTextFloat32{F: 1e20}, "1e+20"},
		{&ktTextFloat32{F: 3}, "3.0"},
	} {
		rec, err := kavari.EncodeRecord(context.Background(), "s", 0, nil, tc.msg)
		require.NoError(t, err, "%#v", tc.msg)
		assert.Equal(t, tc.want, string(rec.Value), "%#v", tc.msg)
		assert.NotNil(t, rec.Value, "an empty payload is an empty value, never a null (tombstone) one")
	}
	// repr(float) in CPython: shortest round-trip digits, exponent below 1e-4
	// and from 1e16 on, ".0" on integral values, inf/-inf/nan.
	for _, tc := range []struct {
		f    float64
		want string
	}{
		{1.5, "1.5"}, {1.0, "1.0"}, {0.1, "0.1"}, {math.Copysign(0, -1), "-0.0"}, {0, "0.0"},
		{1e16, "1e+16"}, {1e15, "1000000000000000.0"}, {0.0001, "0.0001"}, {1e-05, "1e-05"},
		{123.456, "123.456"}, {1.2345678901234568e+17, "1.2345678901234568e+17"}, {5e-324, "5e-324"},
		{math.Inf(1), "inf"}, {math.Inf(-1), "-inf"}, {math.NaN(), "nan"}, {1e100, "1e+100"},
		{-2.5e-7, "-2.5e-07"}, {math.MaxFloat64, "1.7976931348623157e+308"}, {100, "100.0"},
		{9999999999999998.0, "9999999999999998.0"}, {12345678901234567.0, "1.2345678901234568e+16"}, {0.3, "0.3"},
	} {
		rec, err := kavari.EncodeRecord(context.Background(), "s", 0, nil, &ktTextFloat{F: tc.f})
		require.NoError(t, err)
		assert.Equal(t, tc.want, string(rec.Value), "%v", tc.f)
	}
}

// TestTextCodecHeaders: the content-type header follows the codec; msg_type
// is the name the Python class has.
func TestTextCodecHeaders(t *testing.T) {
	rec, err := kavari.EncodeRecord(context.Background(), "s", 0, nil, &ktTextStr{Payload: "x"})
	require.NoError(t, err)
	hs := ktHeaderMap(rec)
	assert.Equal(t, "text/plain; charset=utf-8", ktOne(t, hs, kavari.HeaderContentType))
	assert.Equal(t, "StrMessage", ktOne(t, hs, kavari.HeaderMsgType))
	rec, err = kavari.EncodeRecord(context.Background(), "s", 0, nil, &ktTextBytes{Raw: []byte{1}})
	require.NoError(t, err)
	assert.Equal(t, "application/octet-stream", ktOne(t, ktHeaderMap(rec), kavari.HeaderContentType))
	rec, err = kavari.EncodeRecord(context.Background(), "s", 0, nil, &ktEnvPlain{ID: "p", N: 1})
	require.NoError(t, err)
	assert.Equal(t, "application/json", ktOne(t, ktHeaderMap(rec), kavari.HeaderContentType))
}

func ktTextRecord(name, value string) *kafka.Message {
	return &kafka.Message{Topic: "kt-text", Value: []byte(value), Headers: []kafka.Header{{Key: kavari.HeaderMsgType, Value: []byte(name)}}}
}

// TestTextCodecDecodesPythonText: what the Python kavari writes for each
// primitive decodes into the Go type, with the leniency of Python's own
// int()/float() (surrounding whitespace, digit underscores, inf/nan).
func TestTextCodecDecodesPythonText(t *testing.T) {
	reg := ktTextRegistry(t)
	for _, tc := range []struct {
		name, value string
		want        any
	}{
		{"StrMessage", "hello zé", &ktTextStr{Payload: "hello zé"}},
		{"StrMessage", "", &ktTextStr{}},
		{"StrMessage", " 42 ", &ktTextStr{Payload: " 42 "}},
		{"IntMessage", "42", &ktTextInt{N: 42}},
		{"IntMessage", "-9223372036854775808", &ktTextInt{N: math.MinInt64}},
		{"IntMessage", " 42\n", &ktTextInt{N: 42}},
		{"IntMessage", "1_000", &ktTextInt{N: 1000}},
		{"IntMessage", "+5", &ktTextInt{N: 5}},
		{"IntMessage", "007", &ktTextInt{N: 7}},
		{"Int8Message", "-128", &ktTextInt8{N: -128}},
		{"UintMessage", "4294967295", &ktTextUint{N: math.MaxUint32}},
		{"FloatMessage", "1.5", &ktTextFloat{F: 1.5}},
		{"FloatMessage", "1e+16", &ktTextFloat{F: 1e16}},
		{"FloatMessage", "1_0.5", &ktTextFloat{F: 10.5}},
		{"FloatMessage", "-inf", &ktTextFloat{F: math.Inf(-1)}},
		{"FloatMessage", "1e400", &ktTextFloat{F: math.Inf(1)}},
		{"FloatMessage", "42", &ktTextFloat{F: 42}},
		{"Float32Message", "0.1", &ktTextFloat32{F: 0.1}},
		{"BoolMessage", "True", &ktTextBool{B: true}},
		{"BoolMessage", "False", &ktTextBool{B: false}},
		{"BytesMessage", "b'ab'", &ktTextBytes{Raw: []byte("b'ab'")}},
		{"BytesMessage", "", &ktTextBytes{Raw: []byte{}}},
	} {
		got, err := kavari.DecodeRecord(reg, ktTextRecord(tc.name, tc.value))
		if assert.NoError(t, err, "%s %q", tc.name, tc.value) {
			assert.Equal(t, tc.want, got, "%s %q", tc.name, tc.value)
		}
	}
	nan, err := kavari.DecodeRecord(reg, ktTextRecord("FloatMessage", "nan"))
	require.NoError(t, err)
	assert.True(t, math.IsNaN(nan.(*ktTextFloat).F))

	for _, tc := range []struct{ name, value string }{
		{"IntMessage", "4.2"}, {"IntMessage", "abc"}, {"IntMessage", ""}, {"IntMessage", "1__0"}, {"IntMessage", "_1"},
		{"IntMessage", "0x10"}, {"IntMessage", "9223372036854775808"}, {"IntMessage", `{"n":1}`},
		{"Int8Message", "128"}, {"UintMessage", "-1"},
		{"FloatMessage", "True"}, {"FloatMessage", ""}, {"FloatMessage", "0x1p-2"}, {"FloatMessage", "1__0.5"},
		{"Float32Message", "1e39"},
		{"BoolMessage", "yes"}, {"BoolMessage", ""}, {"BoolMessage", "b'True'"},
		{"StrMessage", "\xff\xfe"},
	} {
		_, err := kavari.DecodeRecord(reg, ktTextRecord(tc.name, tc.value))
		var de *kavari.DecodeError
		if assert.ErrorAs(t, err, &de, "%s %q", tc.name, tc.value) {
			assert.Equal(t, kavari.KindDecode, de.Kind, "%s %q: %v", tc.name, tc.value, err)
		}
	}
	// Validation still runs.
	_, err = kavari.DecodeRecord(reg, ktTextRecord("StrMessage", strings.Repeat("x", 41)))
	var de *kavari.DecodeError
	require.ErrorAs(t, err, &de)
	assert.Equal(t, kavari.KindValidation, de.Kind)
	assert.ErrorIs(t, err, kavari.ErrInvalid)
}

// TestTextCodecRoundTrip: every primitive survives encode and decode.
func TestTextCodecRoundTrip(t *testing.T) {
	reg := ktTextRegistry(t)
	for _, m := range []any{
		&ktTextStr{Payload: "zé ☃ \x00"}, &ktTextInt{N: math.MaxInt64}, &ktTextInt8{N: 127}, &ktTextUint{N: 7},
		&ktTextFloat{F: 0.1 + 0.2}, &ktTextFloat{F: -1e-300}, &ktTextFloat{F: 1e300}, &ktTextFloat32{F: math.MaxFloat32},
		&ktTextFloat32{F: 1.1}, &ktTextBool{B: true}, &ktTextBool{}, &ktTextBytes{Raw: []byte{0, 0xff, 'b', '\''}},
	} {
		rec, err := kavari.EncodeRecord(context.Background(), "s", 0, nil, m)
		require.NoError(t, err)
		got, err := kavari.DecodeRecord(reg, &rec)
		require.NoError(t, err, "%q", rec.Value)
		assert.Equal(t, m, got)
	}
}

// TestTextCodecRefusesInvalidUTF8: the Python consumer decodes a str payload
// as strict UTF-8 (and its consumer thread dies when that fails), so a
// string that is not UTF-8 is not published.
func TestTextCodecRefusesInvalidUTF8(t *testing.T) {
	_, err := kavari.EncodeRecord(context.Background(), "s", 0, nil, &ktTextStr{Payload: "a\xffb"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "UTF-8")
	assert.True(t, strings.HasPrefix(err.Error(), "kavari: "), err.Error())
}

type ktTextTwoFields struct {
	kavari.Message `kavari:"topic=kt-text,codec=text"`
	A, B           string
}

type ktTextNoField struct {
	kavari.Message `kavari:"topic=kt-text,codec=text"`
}

type ktTextStruct struct {
	kavari.Message `kavari:"topic=kt-text,codec=text"`
	Inner          struct{ A string }
}

type ktTextPtr struct {
	kavari.Message `kavari:"topic=kt-text,codec=text"`
	P              *string
}

type ktTextSlice struct {
	kavari.Message `kavari:"topic=kt-text,codec=text"`
	S              []string
}

type ktTextUnknown struct {
	kavari.Message `kavari:"topic=kt-text,codec=xml"`
	S              string
}

type ktTextJSONTag struct {
	kavari.Message `kavari:"topic=kt-text,codec=json"`
	S              []string
}

// TestTextCodecTagErrors: a type the text codec cannot carry, or an unknown
// codec name, is a TagError at registration.
func TestTextCodecTagErrors(t *testing.T) {
	for _, tc := range []struct {
		msg    any
		reason string
	}{
		{&ktTextTwoFields{}, "exactly one"},
		{&ktTextNoField{}, "exactly one"},
		{&ktTextStruct{}, "unsupported"},
		{&ktTextPtr{}, "unsupported"},
		{&ktTextSlice{}, "unsupported"},
		{&ktTextUnknown{}, `unknown codec "xml"`},
	} {
		err := kavari.DeclareAny(kavari.NewRegistry(), tc.msg)
		var te *kavari.TagError
		if assert.ErrorAs(t, err, &te, "%T", tc.msg) {
			assert.Contains(t, te.Reason, tc.reason, "%T", tc.msg)
		}
		_, err = kavari.EncodeRecord(context.Background(), "s", 0, nil, tc.msg)
		assert.ErrorAs(t, err, &te, "%T: publishing an unregistered type finds it too", tc.msg)
	}
	require.NoError(t, kavari.NewRegistry().Declare(&ktTextJSONTag{}), "codec=json is the default, named")
}

type ktNilLeaf struct {
	Tags []string          `json:"tags"`
	Attr map[string]string `json:"attr"`
}

type ktNilNode struct {
	Name     string      `json:"name"`
	Children []ktNilNode `json:"children"`
}

type ktHidden struct {
	Hidden []int `json:"hidden"`
}

type ktNilMsg struct {
	kavari.Message `kavari:"topic=kt-nil"`
	ktHidden
	Tags      []string              `json:"tags"`
	Attr      map[string]int        `json:"attr"`
	Raw       []byte                `json:"raw"`
	Leaf      ktNilLeaf             `json:"leaf"`
	PtrLeaf   *ktNilLeaf            `json:"ptr_leaf"`
	NilPtr    *ktNilLeaf            `json:"nil_ptr"`
	Leaves    []ktNilLeaf           `json:"leaves"`
	ByName    map[string]ktNilLeaf  `json:"by_name"`
	PtrByName map[string]*ktNilLeaf `json:"ptr_by_name"`
	Arr       [2]ktNilLeaf          `json:"arr"`
	Any       any                   `json:"any"`
	AnyLeaf   any                   `json:"any_leaf"`
	NilAny    any                   `json:"nil_any"`
	PtrSlice  *[]int                `json:"ptr_slice"`
	Tree      ktNilNode             `json:"tree"`
	Omit      []string              `json:"omit,omitempty"`
	OmitZero  []string              `json:"omit_zero,omitzero"`
	Stamp     time.Time             `json:"stamp"`
	RawJSON   json.RawMessage       `json:"raw_json"`
	Skipped   []string              `json:"-"`
	unexp     []string
}

// TestJSONNilSlicesAndMaps: nil slices and maps are written as [] and {} at
// every depth (a Python dataclass consumer rejects null for a list field),
// nil pointers stay null, omitempty/omitzero still omit, json.Marshaler
// types are left to themselves, and the caller's value is not changed.
func TestJSONNilSlicesAndMaps(t *testing.T) {
	m := &ktNilMsg{
		PtrLeaf:   &ktNilLeaf{},
		Leaves:    []ktNilLeaf{{}, {Tags: []string{"x"}}},
		ByName:    map[string]ktNilLeaf{"a": {}},
		PtrByName: map[string]*ktNilLeaf{"p": {}, "nil": nil},
		Any:       []string(nil),
		AnyLeaf:   ktNilLeaf{},
		PtrSlice:  new([]int),
		Tree:      ktNilNode{Name: "root", Children: []ktNilNode{{Name: "leaf"}}},
		Stamp:     time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
		unexp:     nil, // not seen by encoding/json: not filled either
	}
	before := *m
	rec, err := kavari.EncodeRecord(context.Background(), "s", 0, nil, m)
	require.NoError(t, err)
	leaf := `{"tags":[],"attr":{}}`
	want := `{"hidden":[],"tags":[],"attr":{},"raw":"","leaf":` + leaf + `,"ptr_leaf":` + leaf + `,"nil_ptr":null,` +
		`"leaves":[` + leaf + `,{"tags":["x"],"attr":{}}],"by_name":{"a":` + leaf + `},"ptr_by_name":{"nil":null,"p":` + leaf + `},` +
		`"arr":[` + leaf + `,` + leaf + `],"any":[],"any_leaf":` + leaf + `,"nil_any":null,"ptr_slice":[],` +
		`"tree":{"name":"root","children":[{"name":"leaf","children":[]}]},"stamp":"2025-01-02T03:04:05Z","raw_json":null}`
	assert.JSONEq(t, want, string(rec.Value))
	assert.Equal(t, want, string(rec.Value), "same field order as encoding/json")
	// The caller's value is untouched, down to the nil slices inside it.
	assert.True(t, reflect.DeepEqual(before, *m))
	assert.Nil(t, m.Leaves[0].Tags)
	assert.Nil(t, m.ByName["a"].Tags)
	assert.Nil(t, m.PtrLeaf.Tags)
	assert.Nil(t, m.Tree.Children[0].Children)
	assert.Nil(t, *m.PtrSlice)
	assert.Nil(t, m.Any)
}

type ktHiddenPtr struct {
	Deep []int `json:"deep"`
}

type ktUpperList []string

func (l ktUpperList) MarshalJSON() ([]byte, error) { return []byte(`"custom"`), nil }

type ktNilMore struct {
	kavari.Message `kavari:"topic=kt-nil"`
	*ktHiddenPtr
	Dyn    map[string]any `json:"dyn"`
	Custom ktUpperList    `json:"custom"`
	Lists  [][]string     `json:"lists"`
}

// TestJSONNilSlicesMore: through an embedded pointer to an unexported
// struct, inside map[string]any and slices of slices; a json.Marshaler is
// asked, not filled.
func TestJSONNilSlicesMore(t *testing.T) {
	m := &ktNilMore{
		ktHiddenPtr: &ktHiddenPtr{},
		Dyn:         map[string]any{"list": []int(nil), "obj": map[string]any{"inner": []string(nil)}, "n": 1},
		Lists:       [][]string{nil, {"a"}},
	}
	rec, err := kavari.EncodeRecord(context.Background(), "s", 0, nil, m)
	require.NoError(t, err)
	assert.Equal(t, `{"deep":[],"dyn":{"list":[],"n":1,"obj":{"inner":[]}},"custom":"custom","lists":[[],["a"]]}`, string(rec.Value))
	assert.Nil(t, m.Deep)
	assert.Nil(t, m.Dyn["list"])
	assert.Nil(t, m.Dyn["obj"].(map[string]any)["inner"])
	assert.Nil(t, m.Lists[0])
}

type ktNoSlices struct {
	kavari.Message `kavari:"topic=kt-nil"`
	ID             string    `json:"id"`
	N              int       `json:"n"`
	At             time.Time `json:"at"`
	Ptr            *int      `json:"ptr"`
}

// TestJSONWithoutSlicesIsEncodingJSON: a type with no slice, map or
// interface field encodes exactly as encoding/json does.
func TestJSONWithoutSlicesIsEncodingJSON(t *testing.T) {
	m := &ktNoSlices{ID: "a", N: 1}
	rec, err := kavari.EncodeRecord(context.Background(), "s", 0, nil, m)
	require.NoError(t, err)
	want, err := json.Marshal(m)
	require.NoError(t, err)
	assert.Equal(t, string(want), string(rec.Value))
}

type ktCycle struct {
	kavari.Message `kavari:"topic=kt-nil"`
	Next           *ktCycle `json:"next"`
	Tags           []string `json:"tags"`
}

// TestJSONCycleIsAnError: a pointer cycle is encoding/json's error, not a
// hang in the nil-slice walk. (The codec alone: the validator does not
// survive a cycle.)
func TestJSONCycleIsAnError(t *testing.T) {
	c := &ktCycle{}
	c.Next = c
	_, err := kavari.JSON.Marshal(c)
	var ue *json.UnsupportedValueError
	assert.ErrorAs(t, err, &ue)
}

// ktUpper is a custom codec: JSON with a different content type, to see
// that registration plugs any Codec in.
type ktUpper struct{}

func (ktUpper) ContentType() string { return "application/x-upper" }
func (ktUpper) Marshal(msg any) ([]byte, error) {
	b, err := json.Marshal(msg)
	return []byte(strings.ToUpper(string(b))), err
}
func (ktUpper) Unmarshal(data []byte, msg any) error {
	return json.Unmarshal([]byte(strings.ToLower(string(data))), msg)
}

// ktPicky is a codec that carries no type (a Protobuf codec refusing a
// struct that is not a proto.Message would look like this).
type ktPicky struct{ ktUpper }

func (ktPicky) CheckType(t reflect.Type) error { return errors.New("not a picky type") }

type ktByReg struct {
	kavari.Message `kavari:"topic=kt-codec-reg,name=ByReg"`
	Payload        string
}

type ktByRegTagged struct {
	kavari.Message `kavari:"topic=kt-codec-reg,name=ByRegTagged,codec=json"`
	Payload        string
}

// TestCodecByRegistration: Registry.SetCodec chooses a type's codec for
// publishing and consuming through that registry: the built-in Text or any
// Codec. It declares the type, is checked like a tag, and conflicts fail.
func TestCodecByRegistration(t *testing.T) {
	reg := kavari.NewRegistry()
	require.NoError(t, reg.SetCodec(&ktByReg{}, kavari.Text))
	rec, err := kavari.EncodeRecordOn(reg, &ktByReg{Payload: "hi"})
	require.NoError(t, err)
	assert.Equal(t, "hi", string(rec.Value))
	assert.Equal(t, "text/plain; charset=utf-8", ktOne(t, ktHeaderMap(rec), kavari.HeaderContentType))
	got, err := kavari.DecodeRecord(reg, &rec)
	require.NoError(t, err)
	assert.Equal(t, &ktByReg{Payload: "hi"}, got)
	assert.Equal(t, []string{"kt-codec-reg"}, reg.Topics(), "SetCodec declares the type")

	// Another registry (or none) keeps the tag's codec.
	rec, err = kavari.EncodeRecordOn(kavari.NewRegistry(), &ktByReg{Payload: "hi"})
	require.NoError(t, err)
	assert.Equal(t, `{"Payload":"hi"}`, string(rec.Value))

	custom := kavari.NewRegistry()
	require.NoError(t, custom.SetCodec(&ktByReg{}, ktUpper{}))
	require.NoError(t, custom.SetCodec(&ktByReg{}, ktUpper{}), "the same codec again is fine")
	rec, err = kavari.EncodeRecordOn(custom, &ktByReg{Payload: "hi"})
	require.NoError(t, err)
	assert.Equal(t, `{"PAYLOAD":"HI"}`, string(rec.Value))
	assert.Equal(t, "application/x-upper", ktOne(t, ktHeaderMap(rec), kavari.HeaderContentType))
	got, err = kavari.DecodeRecord(custom, &rec)
	require.NoError(t, err)
	assert.Equal(t, &ktByReg{Payload: "hi"}, got)

	assert.ErrorIs(t, custom.SetCodec(&ktByReg{}, kavari.Text), kavari.ErrDuplicate, "a second, different codec")
	assert.ErrorIs(t, kavari.NewRegistry().SetCodec(&ktByRegTagged{}, kavari.Text), kavari.ErrDuplicate, "the tag names another codec")
	require.NoError(t, kavari.NewRegistry().SetCodec(&ktByRegTagged{}, kavari.JSON), "the tag's own codec")
	var te *kavari.TagError
	assert.ErrorAs(t, kavari.NewRegistry().SetCodec(&ktTextTwoFields{}, kavari.Text), &te, "checked like a tag")
	assert.Error(t, kavari.NewRegistry().SetCodec(&ktByReg{}, nil))
	err = kavari.NewRegistry().SetCodec(&ktByReg{}, ktPicky{})
	require.ErrorAs(t, err, &te, "a CodecChecker's refusal")
	assert.Contains(t, te.Reason, "not a picky type")
	bad := rec
	bad.Value = []byte("{")
	_, err = kavari.DecodeRecord(custom, &bad)
	var de *kavari.DecodeError
	require.ErrorAs(t, err, &de)
	assert.Equal(t, kavari.KindDecode, de.Kind)
	assert.Contains(t, err.Error(), "value is not the application/x-upper encoding of ktByReg")

	frozen := kavari.NewRegistry()
	require.NoError(t, frozen.Declare(&ktByReg{}))
	kavari.FreezeRegistry(frozen)
	assert.ErrorIs(t, frozen.SetCodec(&ktByReg{}, kavari.Text), kavari.ErrFrozen)
}

// TestCodecMismatchIsDecodeError: the consumer decodes with the type's
// codec whatever content-type the record claims; a value that codec cannot
// read is a decode error.
func TestCodecMismatchIsDecodeError(t *testing.T) {
	// Plain text (as the Python kavari writes a str payload) reaching a JSON type.
	reg := kavari.NewRegistry()
	require.NoError(t, reg.Declare(&ktEnvPlain{}))
	text := &kafka.Message{Topic: "kt-envelope", Value: []byte("hello"), Headers: []kafka.Header{
		{Key: kavari.HeaderMsgType, Value: []byte("ktEnvPlain")}, {Key: kavari.HeaderContentType, Value: []byte("text/plain; charset=utf-8")}}}
	_, err := kavari.DecodeRecord(reg, text)
	var de *kavari.DecodeError
	require.ErrorAs(t, err, &de)
	assert.Equal(t, kavari.KindDecode, de.Kind)
	// JSON reaching a text type with an int payload.
	treg := ktTextRegistry(t)
	_, err = kavari.DecodeRecord(treg, ktTextRecord("IntMessage", `{"n": 1}`))
	require.ErrorAs(t, err, &de)
	assert.Equal(t, kavari.KindDecode, de.Kind)
	// A wrong content-type header alone is no error.
	good := ktTextRecord("IntMessage", "1")
	good.Headers = append(good.Headers, kafka.Header{Key: kavari.HeaderContentType, Value: []byte("application/json")})
	got, err := kavari.DecodeRecord(treg, good)
	require.NoError(t, err)
	assert.Equal(t, &ktTextInt{N: 1}, got)
	assert.False(t, errors.Is(err, kavari.ErrInvalid))
}
