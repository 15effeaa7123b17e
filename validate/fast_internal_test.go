package validate

import (
	"errors"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

type fastName string

type fastAll struct {
	S  string     `json:"s" validate:"required"`
	B  bool       `json:"b" validate:"required"`
	I  int8       `json:"i" validate:"required"`
	U  uint16     `json:"u" validate:"required"`
	F  float64    `json:"f" validate:"required"`
	C  complex64  `json:"c" validate:"required"`
	N  fastName   `json:"n" validate:"required"`
	X  int        `json:"x"`
	PL plainLine  `json:"pl"`
	PP *plainLine `json:"pp"`
}

// fastAllValues returns a value of fastAll for each combination of a zero
// or a non-zero value in its required fields, and the value with every
// field set with F at -0 and at NaN (not zero either).
func fastAllValues() []fastAll {
	out := []fastAll{{}}
	set := []func(v *fastAll){
		func(v *fastAll) { v.S = "s" },
		func(v *fastAll) { v.B = true },
		func(v *fastAll) { v.I = -1 },
		func(v *fastAll) { v.U = 7 },
		func(v *fastAll) { v.F = 1.5 },
		func(v *fastAll) { v.C = 1i },
		func(v *fastAll) { v.N = "n" },
	}
	for _, f := range set {
		n := len(out)
		for k := 0; k < n; k++ {
			v := out[k]
			f(&v)
			out = append(out, v)
		}
	}
	all := out[len(out)-1]
	for _, f := range []float64{math.Copysign(0, -1), math.NaN()} {
		v := all
		v.F = f
		out = append(out, v)
	}
	return out
}

// The plan of a type whose only rules are `required` on basic kinds says
// valid exactly when the validator does, for every combination of zero and
// non-zero fields; Struct then skips the validator (no allocation), and an
// invalid value gets the validator's error.
func TestFastPlanAgreesWithTheValidator(t *testing.T) {
	was := exposed.Load()
	exposed.Store(false)
	defer exposed.Store(was)
	p := infoOf(reflect.TypeFor[*fastAll]()).plan
	if p == nil {
		t.Fatal("fastAll has no plan")
	}
	vals := fastAllValues()
	valid := 0
	for i := range vals {
		v := &vals[i]
		full := shared().Struct(v) == nil
		if fast := p.passes(reflect.ValueOf(v).Elem()); fast != full {
			t.Fatalf("%+v: plan says valid=%v, the validator %v", *v, fast, full)
		}
		err := Struct(v)
		if (err == nil) != full {
			t.Fatalf("%+v: Struct returned %v, the validator says valid=%v", *v, err, full)
		}
		if !full {
			var e *Error
			if !errors.As(err, &e) || len(e.Fields) == 0 {
				t.Fatalf("%+v: want the validator's *Error, got %v", *v, err)
			}
			continue
		}
		valid++
		if n := testing.AllocsPerRun(10, func() { _ = Struct(v) }); n != 0 {
			t.Fatalf("%+v: Struct ran the validator (%v allocations)", *v, n)
		}
	}
	if full := vals[len(vals)-3]; Struct(&full) != nil {
		t.Fatalf("%+v: every required field set, yet invalid", full)
	}
	t.Logf("%d valid values of %d", valid, len(vals))
}

type (
	fastOtherRule struct {
		S string `validate:"required,email"`
	}
	fastOr struct {
		S string `validate:"len=2|len=4"`
	}
	fastDuration struct {
		D time.Duration `validate:"gt=1s"`
	}
	fastPointer struct {
		S *string `validate:"required"`
	}
	fastSlice struct {
		S []string `validate:"required"`
	}
	fastStruct struct {
		L plainLine `validate:"required"`
	}
	fastDeep struct {
		S string   `validate:"required"`
		L deepLine `json:"l"`
	}
	fastAny struct {
		S string `validate:"required"`
		A any    `json:"a"`
	}
	fastUnexported struct {
		S string `validate:"required"`
		s string `validate:"required"`
	}
	fastOmitLater struct {
		S string `validate:"required,omitempty"`
	}
)

// A type with any other rule or tag syntax, a rule on a field of another
// kind, a rule deeper in, or an interface field has no plan: the validator
// checks it.
func TestFastPlanOnlyForCoveredRules(t *testing.T) {
	for _, v := range []any{fastOtherRule{}, fastOr{}, fastDuration{}, fastPointer{}, fastSlice{}, fastStruct{}, fastDeep{}, fastAny{}, fastUnexported{s: "x"}, fastOmitLater{}} {
		if p := infoOf(reflect.TypeOf(v)).plan; p != nil {
			t.Errorf("%T has a plan", v)
		}
	}
	if err := Struct(&fastOtherRule{S: "ab"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("email not checked: %v", err)
	}
	if err := Struct(&fastDeep{S: "a"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("nested rule not checked: %v", err)
	}
}

// Every rule a plan covers, on every kind it covers, alone and combined,
// says valid exactly when the validator does, for values around each
// bound (multi-byte strings, negative zero and NaN among them); a
// parameter that does not parse, or a bound on a bool, leaves the type to
// the validator.
func TestFastPlanBoundsAgreeWithTheValidator(t *testing.T) {
	was := exposed.Load()
	exposed.Store(false)
	defer exposed.Store(was)
	values := map[reflect.Kind][]any{
		reflect.String:  {"", "a", "ab", "abc", "héé", "日本語x", "abcdef"},
		reflect.Int:     {-17, -2, -1, 0, 1, 2, 3, 5, 16, 17},
		reflect.Int8:    {int8(-128), int8(-1), int8(0), int8(1), int8(2), int8(3), int8(127)},
		reflect.Int64:   {int64(-1), int64(0), int64(2), int64(3), int64(16), int64(1) << 62},
		reflect.Uint:    {uint(0), uint(1), uint(2), uint(3), uint(5), uint(16), uint(17)},
		reflect.Uint8:   {uint8(0), uint8(1), uint8(2), uint8(3), uint8(255)},
		reflect.Float32: {float32(math.NaN()), float32(-1), float32(0), float32(math.Copysign(0, -1)), float32(0.1), float32(1), float32(1.5), float32(2), float32(3)},
		reflect.Float64: {math.NaN(), -1.0, 0.0, math.Copysign(0, -1), 0.1, 1.0, 1.5, 2.0, 3.0, 5.0},
		reflect.Bool:    {false, true},
	}
	tags := []string{"required", "omitempty", "gt=0", "gte=1", "min=2", "lt=5", "lte=3", "max=3", "len=2",
		"gt=-1", "lt=0x10", "min=0.1", "max=1.5", "required,gt=0", "omitempty,gt=2", "omitempty,required",
		"omitempty,min=2,max=3", "required,len=3", "gte=0,lte=0",
		"oneof=a ab héé 2 17 255", "oneof=ab 2 16 17 255", "oneof=3 -1 0x10", "omitempty,oneof=abc 5", "oneof='a b' c", "oneof=", "min=1,oneof=ab abc 1 2 3"}
	covered := 0
	for kind, vals := range values {
		for _, tag := range tags {
			st := reflect.StructOf([]reflect.StructField{{Name: "V", Type: reflect.TypeOf(vals[0]), Tag: reflect.StructTag(`json:"v" validate:"` + tag + `"`)}})
			p := infoOf(reflect.PointerTo(st)).plan
			fullPanics := func(v reflect.Value) (ok, panicked bool) {
				defer func() {
					if recover() != nil {
						panicked = true
					}
				}()
				return shared().Struct(v.Interface()) == nil, false
			}
			for _, val := range vals {
				v := reflect.New(st)
				v.Elem().Field(0).Set(reflect.ValueOf(val))
				full, panicked := fullPanics(v)
				if p == nil {
					continue
				}
				if panicked {
					t.Fatalf("%v %q: planned, but the validator panics on it", kind, tag)
				}
				if fast := p.passes(v.Elem()); fast != full {
					t.Fatalf("%v %q = %#v: plan says valid=%v, the validator %v", kind, tag, val, fast, full)
				}
			}
			if p != nil {
				covered++
			}
			bound := strings.Contains(tag, "=")
			oneOf := strings.Contains(tag, "oneof")
			wantPlan := !(kind == reflect.Bool && bound) &&
				!(oneOf && (strings.ContainsAny(tag, "'é") || kind == reflect.Bool || kind == reflect.Float32 || kind == reflect.Float64))
			if parses := func() bool {
				_, param, _ := strings.Cut(strings.Split(tag, ",")[len(strings.Split(tag, ","))-1], "=")
				if param == "" || oneOf {
					return true
				}
				switch kind {
				case reflect.Float32, reflect.Float64:
					_, err := strconv.ParseFloat(param, 64)
					return err == nil
				case reflect.Uint, reflect.Uint8:
					_, err := strconv.ParseUint(param, 0, 64)
					return err == nil
				}
				_, err := strconv.ParseInt(param, 0, 64)
				return err == nil
			}(); !parses {
				wantPlan = false
			}
			if (p != nil) != wantPlan {
				t.Errorf("%v %q: plan %v, want %v", kind, tag, p != nil, wantPlan)
			}
		}
	}
	t.Logf("%d kind × tag pairs planned and checked", covered)
	type status struct {
		S string `validate:"required,oneof=new paid shipped"`
		N uint16 `validate:"oneof=1 2 300"`
	}
	ok := &status{S: "paid", N: 300}
	if n := testing.AllocsPerRun(10, func() {
		if err := Struct(ok); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("a valid oneof costs %v allocations", n)
	}
}
