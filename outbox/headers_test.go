package outbox

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/kavari-go/kavari"
)

// viaJSON is the headers column as encoding/json writes and reads it.
func viaJSON(hs []kavari.Header) []byte {
	st := make([]storedHeader, len(hs))
	for i, h := range hs {
		st[i] = storedHeader{K: h.Key, V: h.Value}
	}
	b, _ := json.Marshal(st)
	return b
}

func fromJSON(s []byte) ([]kavari.Header, error) {
	var st []storedHeader
	if err := json.Unmarshal(s, &st); err != nil {
		return nil, err
	}
	hs := make([]kavari.Header, len(st))
	for i, h := range st {
		hs[i] = kavari.Header{Key: h.K, Value: h.V}
	}
	return hs, nil
}

// The headers column is written byte for byte as encoding/json wrote it
// (rows written before and after read alike) and read back as
// encoding/json reads it.
func TestHeadersColumn(t *testing.T) {
	cases := [][]kavari.Header{
		{},
		{{Key: "ce_id", Value: []byte("0190c0de-0000-7000-8000-000000000001")}, {Key: "msg_type", Value: []byte("OrderPlaced")}},
		{{Key: "empty", Value: []byte{}}, {Key: "nil", Value: nil}, {Key: "bin", Value: []byte{0, 1, 2, 0xff, 0xfe}}},
		{{Key: "quote\"back\\slash", Value: []byte("x")}, {Key: "<html>&", Value: []byte("y")}, {Key: "tab\tnl\n", Value: []byte("z")}},
		{{Key: "ünïcödé", Value: []byte("é")}, {Key: "bad\xffutf8", Value: []byte("v")}, {Key: "", Value: []byte("")}},
	}
	for _, hs := range cases {
		want := viaJSON(hs)
		got := appendHeaders(nil, hs)
		if string(want) != string(got) {
			t.Fatalf("appendHeaders wrote %s, encoding/json %s", got, want)
		}
		back, err := parseHeaders(got)
		if err != nil {
			t.Fatal(err)
		}
		if jback, err := fromJSON(got); err != nil || !reflect.DeepEqual(jback, back) {
			t.Fatalf("%s: parseHeaders read %q, encoding/json %q (%v)", got, back, jback, err)
		}
	}
	// Written by hand: other spacing, order, escapes; or corrupt.
	for _, s := range []string{
		`[ {"k": "a", "v": "eA=="} ]`,
		`[{"v":"eA==","k":"a"}]`,
		`[{"k":"\u0061","v":"eA=="}]`,
		`[{"K":"a","V":"eA=="}]`,
		`[{"k":"a"}]`,
		`[{"k":"a","v":"eA=="},]`,
		`[{"k":"a","v":"e A=="}]`,
		`[{"k":"a","v":"not base64!"}]`,
		`[{"k":"a","v":"eA\n=="}]`,
		`[{"k":"a` + "\x01" + `","v":null}]`,
		`{"k":"a"}`,
		`[`,
		``,
		`null`,
	} {
		want, werr := fromJSON([]byte(s))
		got, err := parseHeaders([]byte(s))
		if (err == nil) != (werr == nil) || !reflect.DeepEqual(want, got) {
			t.Fatalf("%s: parseHeaders read %q (%v), encoding/json %q (%v)", s, got, err, want, werr)
		}
	}
}

// kavariHeaders are the headers of a message kavari encodes.
var kavariHeaders = []kavari.Header{
	{Key: kavari.HeaderMsgType, Value: []byte("OrderPlaced")},
	{Key: kavari.HeaderSpecVersion, Value: []byte("1.0")},
	{Key: kavari.HeaderID, Value: []byte("0190c0de-0000-7000-8000-000000000001")},
	{Key: kavari.HeaderType, Value: []byte("OrderPlaced")},
	{Key: kavari.HeaderSource, Value: []byte("kavari-go")},
	{Key: kavari.HeaderTime, Value: []byte("2026-12-07T13:00:00.000Z")},
	{Key: kavari.HeaderContentType, Value: []byte("application/json")},
	{Key: "tenant", Value: []byte("t1")},
}

// A row's headers are read in two allocations (the slice and the values'
// bytes), with kavari's own header names not copied: the relay reads
// them for every row.
func TestParseHeadersAllocations(t *testing.T) {
	col := appendHeaders(nil, kavariHeaders)
	// The one header kavari does not write costs its name's copy.
	if n := testing.AllocsPerRun(100, func() { _, _ = parseHeaders(col) }); n > 3 {
		t.Fatalf("parseHeaders: %v allocations for %d headers, want at most 3", n, len(kavariHeaders))
	}
}

// The values read from one column share their bytes, but appending to one
// never changes another.
func TestParseHeadersValuesAreApart(t *testing.T) {
	hs, err := parseHeaders(appendHeaders(nil, kavariHeaders))
	if err != nil {
		t.Fatal(err)
	}
	for i := range hs {
		hs[i].Value = append(hs[i].Value, "!!!!"...)
	}
	for i, h := range hs {
		if want := string(kavariHeaders[i].Value) + "!!!!"; string(h.Value) != want {
			t.Fatalf("header %s: %q, want %q", h.Key, h.Value, want)
		}
	}
}

func FuzzHeadersColumn(f *testing.F) {
	f.Add([]byte(`[{"k":"ce_id","v":"eA=="},{"k":"n","v":null}]`))
	f.Add([]byte(`[{"k":"a","v":""}]`))
	f.Fuzz(func(t *testing.T, s []byte) {
		want, werr := fromJSON(s)
		got, err := parseHeaders(s)
		if werr != nil {
			if err == nil {
				t.Fatalf("%q: parsed %v, encoding/json: %v", s, got, werr)
			}
			return
		}
		if err != nil || !reflect.DeepEqual(want, got) {
			t.Fatalf("%q: parseHeaders read %q (%v), encoding/json %q", s, got, err, want)
		}
	})
}
