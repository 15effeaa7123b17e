package validate

import (
	"reflect"
	"sync"
	"sync/atomic"
)

// Without a rule to check, the validator still walks every field of every
// value. A message type whose fields carry no `validate` tag, however deep,
// cannot be invalid, so Struct skips it — unless the application reached
// the shared instance through Validator(), where struct-level rules, custom
// type functions or another tag name may apply to any type.

// exposed is set once Validator() returned the shared instance.
var exposed atomic.Bool

// infos caches, per dynamic type of a value given to Struct, its *typeInfo.
var infos sync.Map

// typeInfo is what Struct needs to know of a value's type, computed once.
type typeInfo struct {
	notStruct bool         // neither a struct (time.Time excluded) nor a pointer to one
	ptr       bool         // a pointer to the struct
	elem      reflect.Type // the struct type
	noRules   bool         // no `validate` tag is reachable from it
	plan      *fastPlan    // the checks of its rules, when a plan covers them all (fast.go)
}

// infoOf returns the typeInfo of t, the dynamic type of a value.
func infoOf(t reflect.Type) *typeInfo {
	if v, ok := infos.Load(t); ok {
		return v.(*typeInfo)
	}
	ti := &typeInfo{elem: t}
	if t.Kind() == reflect.Pointer {
		ti.ptr, ti.elem = true, t.Elem()
	}
	ti.notStruct = ti.elem.Kind() != reflect.Struct || ti.elem.ConvertibleTo(timeType)
	if !ti.notStruct {
		ti.noRules = !tagged(ti.elem, map[reflect.Type]bool{})
		if !ti.noRules {
			ti.plan = makePlan(ti.elem)
		}
	}
	infos.Store(t, ti)
	return ti
}

// tagged reports whether a `validate` tag is reachable from t through
// struct fields (exported or not), pointers, slices, arrays and maps.
func tagged(t reflect.Type, seen map[reflect.Type]bool) bool {
	for {
		switch t.Kind() {
		case reflect.Pointer, reflect.Slice, reflect.Array:
			t = t.Elem()
			continue
		case reflect.Map:
			if tagged(t.Key(), seen) {
				return true
			}
			t = t.Elem()
			continue
		case reflect.Interface:
			return true // the dynamic type may have rules
		}
		break
	}
	if t.Kind() != reflect.Struct || seen[t] {
		return false
	}
	seen[t] = true
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if _, ok := f.Tag.Lookup("validate"); ok || tagged(f.Type, seen) {
			return true
		}
	}
	return false
}
