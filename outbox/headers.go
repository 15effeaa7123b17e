package outbox

import (
	"bytes"
	"encoding/base64"
	"encoding/json"

	"github.com/kavari-go/kavari"
)

// The headers column holds a row's headers as JSON, an array of
// {"k": key, "v": value in base64, or null}: what encoding/json makes of
// []storedHeader. appendHeaders writes exactly those bytes and
// parseHeaders reads them without reflection (encoding/json's decoding
// was half of the relay's CPU time); anything else, such as a row written
// by hand, goes through encoding/json.

// storedHeader is a header as the headers column holds it.
type storedHeader struct {
	K string `json:"k"`
	V []byte `json:"v"`
}

// appendHeaders appends hs as the headers column holds them: the bytes
// json.Marshal writes for []storedHeader.
func appendHeaders(b []byte, hs []kavari.Header) []byte {
	b = append(b, '[')
	for i, h := range hs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"k":`...)
		if plainJSON(h.Key) {
			b = append(b, '"')
			b = append(b, h.Key...)
			b = append(b, '"')
		} else {
			k, _ := json.Marshal(h.Key) // a string always marshals
			b = append(b, k...)
		}
		b = append(b, `,"v":`...)
		if h.Value == nil {
			b = append(b, "null"...)
		} else {
			b = append(b, '"')
			b = base64.StdEncoding.AppendEncode(b, h.Value)
			b = append(b, '"')
		}
		b = append(b, '}')
	}
	return append(b, ']')
}

// plainJSON reports whether json.Marshal writes s between quotes
// unchanged: printable ASCII without the characters it escapes.
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// parseHeaders reads a headers column.
func parseHeaders(s []byte) ([]kavari.Header, error) {
	if hs, ok := parseHeadersFast(s); ok {
		return hs, nil
	}
	var stored []storedHeader
	if err := json.Unmarshal(s, &stored); err != nil {
		return nil, err
	}
	hs := make([]kavari.Header, len(stored))
	for i, h := range stored {
		hs[i] = kavari.Header{Key: h.K, Value: h.V}
	}
	return hs, nil
}

// parseHeadersFast reads what appendHeaders writes, with no escapes in
// keys; ok is false for anything else. The values share one allocation
// (each capped at its length, so appending to one never writes over the
// next) and the keys kavari writes are its constants, not copies: a row
// costs two allocations, not two a header.
func parseHeadersFast(s []byte) (hs []kavari.Header, ok bool) {
	if len(s) < 2 || s[0] != '[' || s[len(s)-1] != ']' {
		return nil, false
	}
	s = s[1 : len(s)-1]
	hs = make([]kavari.Header, 0, bytes.Count(s, []byte(`{"k":`)))
	// The encoded values fit in the column, so their decoded bytes in
	// three quarters of it.
	buf := make([]byte, 0, base64.StdEncoding.DecodedLen(len(s)))
	for len(s) > 0 {
		if len(hs) > 0 {
			if s[0] != ',' {
				return nil, false
			}
			s = s[1:]
		}
		var key, val []byte
		var null bool
		if s, ok = cut(s, `{"k":"`); !ok {
			return nil, false
		}
		if key, s, ok = quoted(s); !ok {
			return nil, false
		}
		if s, ok = cut(s, `,"v":`); !ok {
			return nil, false
		}
		if s, null = cut(s, "null"); !null {
			if s, ok = cut(s, `"`); !ok {
				return nil, false
			}
			if val, s, ok = quoted(s); !ok {
				return nil, false
			}
		}
		if s, ok = cut(s, "}"); !ok {
			return nil, false
		}
		h := kavari.Header{Key: headerKey(key)}
		if !null {
			at := len(buf)
			n, err := base64.StdEncoding.Decode(buf[at:at+base64.StdEncoding.DecodedLen(len(val))], val)
			if err != nil {
				return nil, false
			}
			buf = buf[:at+n]
			h.Value = buf[at : at+n : at+n]
		}
		hs = append(hs, h)
	}
	return hs, true
}

// ownHeaders are the header names kavari writes.
var ownHeaders = []string{kavari.HeaderMsgType, kavari.HeaderSpecVersion, kavari.HeaderID, kavari.HeaderType,
	kavari.HeaderSource, kavari.HeaderTime, kavari.HeaderContentType, kavari.HeaderVersion}

// headerKey is key as a string: kavari's own header names are its
// constants (no allocation), others a copy.
func headerKey(key []byte) string {
	for _, k := range ownHeaders {
		if string(key) == k {
			return k
		}
	}
	return string(key)
}

// cut removes prefix from s.
func cut(s []byte, prefix string) ([]byte, bool) {
	if len(s) < len(prefix) || string(s[:len(prefix)]) != prefix {
		return s, false
	}
	return s[len(prefix):], true
}

// quoted returns the bytes of s up to the closing quote (which it
// consumes); ok is false when there is none, or an escape, a control
// character or a non-ASCII byte comes first (encoding/json decides then).
func quoted(s []byte) (str, rest []byte, ok bool) {
	for i, c := range s {
		switch {
		case c == '"':
			return s[:i], s[i+1:], true
		case c == '\\' || c < 0x20 || c > 0x7e:
			return nil, nil, false
		}
	}
	return nil, nil, false
}
