package validate

import (
	"errors"
	"math"
	"reflect"
	"testing"
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
		S string `validate:"required,min=3"`
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
	fastOmit struct {
		S string `validate:"omitempty"`
	}
)

// A type with any other rule, a required field of another kind, a rule
// deeper in, or an interface field has no plan: the validator checks it.
func TestFastPlanOnlyForRequiredBasicFields(t *testing.T) {
	for _, v := range []any{fastOtherRule{}, fastPointer{}, fastSlice{}, fastStruct{}, fastDeep{}, fastAny{}, fastUnexported{s: "x"}, fastOmit{}} {
		if p := infoOf(reflect.TypeOf(v)).plan; p != nil {
			t.Errorf("%T has a plan", v)
		}
	}
	if err := Struct(&fastOtherRule{S: "ab"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("min=3 not checked: %v", err)
	}
	if err := Struct(&fastDeep{S: "a"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("nested rule not checked: %v", err)
	}
}
