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

// untagged caches, per struct type, whether no `validate` tag is reachable
// from it (bool).
var untagged sync.Map

// hasNoRules reports whether struct type t can be skipped.
func hasNoRules(t reflect.Type) bool {
	if exposed.Load() {
		return false
	}
	if v, ok := untagged.Load(t); ok {
		return v.(bool)
	}
	none := !tagged(t, map[reflect.Type]bool{})
	untagged.Store(t, none)
	return none
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
