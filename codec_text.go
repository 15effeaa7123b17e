package kavari

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

type textCodec struct{}

func (textCodec) ContentType() string { return "text/plain; charset=utf-8" }

func (textCodec) CheckType(t reflect.Type) error {
	_, err := textFieldOf(t)
	return err
}

func (textCodec) Marshal(msg any) ([]byte, error) {
	b, err := textMarshal(msg)
	if err != nil {
		return nil, fmt.Errorf("kavari: text codec: %w", err)
	}
	return b, nil
}

func (textCodec) Unmarshal(data []byte, msg any) error {
	if err := textUnmarshal(data, msg); err != nil {
		return fmt.Errorf("kavari: text codec: %w", err)
	}
	return nil
}

// textField is the payload field of a text-codec message type.
type textField struct {
	index int
	kind  reflect.Kind
	bits  int
	err   error
}

var textFields sync.Map // reflect.Type -> *textField

// textFieldOf finds the one payload field of struct type t.
func textFieldOf(t reflect.Type) (*textField, error) {
	if f, ok := textFields.Load(t); ok {
		f := f.(*textField)
		return f, f.err
	}
	f := &textField{index: -1}
	if t.Kind() != reflect.Struct {
		f.err = fmt.Errorf("%s is not a struct", t)
	} else {
		var names []string
		for i := 0; i < t.NumField(); i++ {
			sf := t.Field(i)
			if sf.Anonymous && sf.Type == messageMarker || !sf.IsExported() && !sf.Anonymous || sf.Tag.Get("json") == "-" {
				continue
			}
			names = append(names, sf.Name)
			f.index, f.kind = i, sf.Type.Kind()
		}
		switch {
		case len(names) != 1:
			f.err = fmt.Errorf("the text codec needs exactly one exported payload field besides kavari.Message, %s has %d %v", t, len(names), names)
		default:
			ft := t.Field(f.index).Type
			switch k := f.kind; {
			case k == reflect.String, k == reflect.Bool:
			case k >= reflect.Int && k <= reflect.Int64, k >= reflect.Uint && k <= reflect.Uint64, k == reflect.Float32, k == reflect.Float64:
				f.bits = ft.Bits()
			case k == reflect.Slice && ft.Elem().Kind() == reflect.Uint8:
			default:
				f.err = fmt.Errorf("unsupported payload field %s %s for the text codec (want string, bool, an integer, a float or []byte)", names[0], ft)
			}
		}
	}
	if f.err != nil {
		f.index = -1
	}
	v, _ := textFields.LoadOrStore(t, f)
	f = v.(*textField)
	return f, f.err
}

// textPayload returns the payload field of msg, a pointer to a message struct.
func textPayload(msg any) (reflect.Value, *textField, error) {
	v := reflect.ValueOf(msg)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return reflect.Value{}, nil, fmt.Errorf("%T is not a non-nil pointer to a struct", msg)
	}
	f, err := textFieldOf(v.Type().Elem())
	if err != nil {
		return reflect.Value{}, nil, err
	}
	return v.Elem().Field(f.index), f, nil
}

// textMarshal writes the payload as the Python kavari does: f"{payload}".
func textMarshal(msg any) ([]byte, error) {
	fv, f, err := textPayload(msg)
	if err != nil {
		return nil, err
	}
	switch f.kind {
	case reflect.String:
		s := fv.String()
		if !utf8.ValidString(s) {
			return nil, errors.New("the string payload is not valid UTF-8")
		}
		return append(make([]byte, 0, len(s)), s...), nil
	case reflect.Bool:
		if fv.Bool() {
			return []byte("True"), nil
		}
		return []byte("False"), nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.AppendInt(make([]byte, 0, 20), fv.Int(), 10), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return strconv.AppendUint(make([]byte, 0, 20), fv.Uint(), 10), nil
	case reflect.Float32, reflect.Float64:
		return appendPyFloat(make([]byte, 0, 24), fv.Float(), f.bits), nil
	default: // []byte
		return append(make([]byte, 0, fv.Len()), fv.Bytes()...), nil
	}
}

// appendPyFloat appends f as CPython's repr(float) writes it: the shortest
// digits that read back as f, positional from 1e-4 up to 1e16 with at least
// one decimal (1.0), else d.ddde±XX with at least two exponent digits.
func appendPyFloat(dst []byte, f float64, bits int) []byte {
	switch {
	case math.IsNaN(f):
		return append(dst, "nan"...)
	case math.IsInf(f, 1):
		return append(dst, "inf"...)
	case math.IsInf(f, -1):
		return append(dst, "-inf"...)
	}
	var buf [32]byte
	e := strconv.AppendFloat(buf[:0], f, 'e', -1, bits) // -d.ddde±XX
	if e[0] == '-' {
		dst = append(dst, '-')
		e = e[1:]
	}
	mant, exps, _ := strings.Cut(string(e), "e")
	exp, _ := strconv.Atoi(exps)
	digits := strings.Replace(mant, ".", "", 1)
	decpt := exp + 1 // the value is 0.digits × 10^decpt
	if decpt <= -4 || decpt > 16 {
		dst = append(dst, digits[0])
		if len(digits) > 1 {
			dst = append(append(dst, '.'), digits[1:]...)
		}
		dst = append(dst, 'e')
		if exp < 0 {
			dst, exp = append(dst, '-'), -exp
		} else {
			dst = append(dst, '+')
		}
		if exp < 10 {
			dst = append(dst, '0')
		}
		return strconv.AppendInt(dst, int64(exp), 10)
	}
	switch {
	case decpt <= 0:
		dst = append(dst, "0."...)
		for i := decpt; i < 0; i++ {
			dst = append(dst, '0')
		}
		return append(dst, digits...)
	case decpt < len(digits):
		return append(append(append(dst, digits[:decpt]...), '.'), digits[decpt:]...)
	default:
		dst = append(dst, digits...)
		for i := len(digits); i < decpt; i++ {
			dst = append(dst, '0')
		}
		return append(dst, ".0"...)
	}
}

// textUnmarshal reads the payload as the Python kavari's deserialiser
// does for str, int and float (str: strict UTF-8; int(), float()); bools
// are True/False and []byte the raw value.
func textUnmarshal(data []byte, msg any) error {
	fv, f, err := textPayload(msg)
	if err != nil {
		return err
	}
	switch f.kind {
	case reflect.String:
		if !utf8.Valid(data) {
			return errors.New("the value is not valid UTF-8")
		}
		fv.SetString(string(data))
	case reflect.Bool:
		b, err := strconv.ParseBool(string(data))
		if err != nil {
			return fmt.Errorf("%s is not a bool (want True or False)", quoteClip(data))
		}
		fv.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		s, ok := pyNumber(data)
		n, err := strconv.ParseInt(s, 10, f.bits)
		if !ok || err != nil {
			return fmt.Errorf("%s is not an int%d", quoteClip(data), f.bits)
		}
		fv.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		s, ok := pyNumber(data)
		n, err := strconv.ParseUint(strings.TrimPrefix(s, "+"), 10, f.bits)
		if !ok || err != nil {
			return fmt.Errorf("%s is not a uint%d", quoteClip(data), f.bits)
		}
		fv.SetUint(n)
	case reflect.Float32, reflect.Float64:
		s, ok := pyNumber(data)
		x, err := strconv.ParseFloat(s, f.bits)
		if err != nil && f.bits == 64 && errors.Is(err, strconv.ErrRange) {
			err = nil // Python's float() too: 1e400 is inf
		}
		if !ok || err != nil || strings.ContainsAny(s, "xX") {
			return fmt.Errorf("%s is not a float%d", quoteClip(data), f.bits)
		}
		fv.SetFloat(x)
	default: // []byte
		fv.SetBytes(append(make([]byte, 0, len(data)), data...))
	}
	return nil
}

// pyNumber prepares a number as Python's int() and float() read one:
// surrounding whitespace is dropped and _ is allowed between two digits.
func pyNumber(data []byte) (string, bool) {
	s := strings.Trim(string(data), " \t\n\r\v\f")
	if !strings.Contains(s, "_") {
		return s, true
	}
	isDigit := func(c byte) bool { return c >= '0' && c <= '9' }
	for i := 0; i < len(s); i++ {
		if s[i] == '_' && (i == 0 || i == len(s)-1 || !isDigit(s[i-1]) || !isDigit(s[i+1])) {
			return "", false
		}
	}
	return strings.ReplaceAll(s, "_", ""), true
}

// quoteClip quotes a value for an error message, clipped to 64 bytes.
func quoteClip(data []byte) string {
	if len(data) > 64 {
		return strconv.Quote(string(data[:64])) + "…"
	}
	return strconv.Quote(string(data))
}
