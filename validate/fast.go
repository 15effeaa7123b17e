package validate

import "reflect"

// Most message types carry only `validate:"required"` on fields of basic
// kinds (an id, a name, an amount). The validator checks those through its
// generic machinery: it walks every field of the value and calls its rule
// through a FieldLevel. A check planned once per type answers the same
// question with a few comparisons. The plan only says "valid": when a
// field fails it, Struct runs the validator, which builds the error, so the
// errors are the validator's in every case.

// fastPlan lists the fields of a struct type that must not be zero: the
// fields tagged exactly `validate:"required"`, of a kind whose required
// check is "not the zero value" (strings, booleans, integers, floats). No
// other rule is reachable from the type.
type fastPlan struct {
	required []int // field indexes
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
		if tag != "required" || !f.IsExported() || f.Anonymous || !zeroChecked(f.Type.Kind()) {
			return nil
		}
		p.required = append(p.required, i)
	}
	return p
}

// zeroChecked reports whether the validator's required check on a field of
// kind k is "not the zero value" (hasValue, for a field that is not a
// pointer).
func zeroChecked(k reflect.Kind) bool {
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
	for _, i := range p.required {
		if v.Field(i).IsZero() {
			return false
		}
	}
	return true
}
