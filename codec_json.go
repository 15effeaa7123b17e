package kavari

import (
	"encoding"
	"encoding/json"
	"reflect"
	"strings"
	"sync"
	"unsafe"
)

// The JSON codec writes nil slices and maps as [] and {}. It does so on a
// shallow copy of the message that shares everything it does not change,
// found by a walk planned once per type: a type with no slice, map or
// interface reachable through its JSON fields has no plan and is handed to
// encoding/json as it is.

type fillKind uint8

const (
	fillSlice fillKind = iota + 1
	fillMap
	fillPointer
	fillStruct
	fillArray
	fillInterface
)

// fillPlan says how to walk values of one type. A nil *fillPlan means there
// is nothing to fill in that type.
type fillPlan struct {
	kind   fillKind
	elem   *fillPlan // slice, array, map value, pointer target: nil when nothing to fill there
	fields []fillField
	hidden bool // a field is reached through an unexported embedded struct
}

type fillField struct {
	index   int
	plan    *fillPlan
	hidden  bool // an unexported embedded struct: set through its address
	keepNil bool // omitempty/omitzero: a nil slice or map is omitted, leave it nil
}

// maxFillDepth bounds the walk through pointers and interfaces; deeper
// values (a pointer cycle) are left to encoding/json, which reports cycles.
const maxFillDepth = 1000

var (
	fillPlans          sync.Map // reflect.Type -> *fillPlan (a nil *fillPlan when nothing to fill)
	jsonMarshalerType  = reflect.TypeFor[json.Marshaler]()
	textMarshalerType  = reflect.TypeFor[encoding.TextMarshaler]()
	fillPlansBuildLock sync.Mutex
)

// fillPlanOf returns the cached plan of t, building it on first use.
func fillPlanOf(t reflect.Type) *fillPlan {
	if p, ok := fillPlans.Load(t); ok {
		return p.(*fillPlan)
	}
	fillPlansBuildLock.Lock()
	defer fillPlansBuildLock.Unlock()
	building := map[reflect.Type]*fillPlan{}
	p := buildFillPlan(t, building)
	for bt, bp := range building {
		// A type still under construction when it recursed into itself
		// kept its placeholder, which is now complete.
		if bp != nil && bp.kind == 0 {
			continue
		}
		fillPlans.LoadOrStore(bt, bp)
	}
	fillPlans.LoadOrStore(t, p)
	return p
}

func buildFillPlan(t reflect.Type, building map[reflect.Type]*fillPlan) *fillPlan {
	if p, ok := fillPlans.Load(t); ok {
		return p.(*fillPlan)
	}
	if p, ok := building[t]; ok {
		return p // recursive type: the placeholder, filled in below
	}
	if t.Implements(jsonMarshalerType) || t.Implements(textMarshalerType) ||
		(t.Kind() != reflect.Pointer && t.Kind() != reflect.Interface &&
			(reflect.PointerTo(t).Implements(jsonMarshalerType) || reflect.PointerTo(t).Implements(textMarshalerType))) {
		if t.Kind() != reflect.Interface {
			return nil // written by its own method
		}
	}
	p := &fillPlan{}
	building[t] = p
	var keep bool
	switch t.Kind() {
	case reflect.Slice:
		p.kind, p.elem, keep = fillSlice, buildFillPlan(t.Elem(), building), true
	case reflect.Map:
		p.kind, p.elem, keep = fillMap, buildFillPlan(t.Elem(), building), true
	case reflect.Interface:
		p.kind, keep = fillInterface, true
	case reflect.Pointer:
		p.kind, p.elem = fillPointer, buildFillPlan(t.Elem(), building)
		keep = p.elem != nil
	case reflect.Array:
		p.kind, p.elem = fillArray, buildFillPlan(t.Elem(), building)
		keep = p.elem != nil && t.Len() > 0
	case reflect.Struct:
		p.kind = fillStruct
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if !f.IsExported() && !(f.Anonymous && ft.Kind() == reflect.Struct) {
				continue // encoding/json does not see it
			}
			tag := f.Tag.Get("json")
			if tag == "-" {
				continue
			}
			fp := buildFillPlan(f.Type, building)
			if fp == nil {
				continue
			}
			_, opts, _ := strings.Cut(tag, ",")
			keepNil := false
			for _, o := range strings.Split(opts, ",") {
				if o == "omitempty" || o == "omitzero" {
					keepNil = true
				}
			}
			hidden := !f.IsExported()
			p.hidden = p.hidden || hidden
			p.fields = append(p.fields, fillField{index: i, plan: fp, hidden: hidden, keepNil: keepNil})
		}
		keep = len(p.fields) > 0
	}
	if !keep {
		delete(building, t)
		*p = fillPlan{} // a recursive reference taken meanwhile walks nothing
		return nil
	}
	return p
}

// fill returns v with its nil slices and maps replaced by empty ones, and
// whether anything was replaced; v itself is never modified. keepNil leaves
// v nil when it is a nil slice or map.
func fill(v reflect.Value, p *fillPlan, keepNil bool, depth int) (reflect.Value, bool) {
	switch p.kind {
	case fillSlice:
		if v.IsNil() {
			if keepNil {
				return v, false
			}
			return reflect.MakeSlice(v.Type(), 0, 0), true
		}
		if p.elem == nil {
			return v, false
		}
		var out reflect.Value
		for i, n := 0, v.Len(); i < n; i++ {
			if e, ok := fill(v.Index(i), p.elem, false, depth); ok {
				if !out.IsValid() {
					out = reflect.MakeSlice(v.Type(), n, n)
					reflect.Copy(out, v)
				}
				out.Index(i).Set(e)
			}
		}
		if out.IsValid() {
			return out, true
		}
		return v, false
	case fillMap:
		if v.IsNil() {
			if keepNil {
				return v, false
			}
			return reflect.MakeMapWithSize(v.Type(), 0), true
		}
		if p.elem == nil {
			return v, false
		}
		var out reflect.Value
		for it := v.MapRange(); it.Next(); {
			if e, ok := fill(it.Value(), p.elem, false, depth); ok {
				if !out.IsValid() {
					out = reflect.MakeMapWithSize(v.Type(), v.Len())
					for it2 := v.MapRange(); it2.Next(); {
						out.SetMapIndex(it2.Key(), it2.Value())
					}
				}
				out.SetMapIndex(it.Key(), e)
			}
		}
		if out.IsValid() {
			return out, true
		}
		return v, false
	case fillPointer:
		if v.IsNil() || depth >= maxFillDepth {
			return v, false
		}
		e, ok := fill(v.Elem(), p.elem, false, depth+1)
		if !ok {
			return v, false
		}
		out := reflect.New(v.Type().Elem())
		out.Elem().Set(e)
		return out, true
	case fillInterface:
		if v.IsNil() || depth >= maxFillDepth {
			return v, false
		}
		e := v.Elem()
		ep := fillPlanOf(e.Type())
		if ep == nil {
			return v, false
		}
		ne, ok := fill(e, ep, false, depth+1)
		if !ok {
			return v, false
		}
		out := reflect.New(v.Type()).Elem()
		out.Set(ne)
		return out, true
	case fillArray:
		var out reflect.Value
		for i, n := 0, v.Len(); i < n; i++ {
			if e, ok := fill(v.Index(i), p.elem, false, depth); ok {
				if !out.IsValid() {
					out = reflect.New(v.Type()).Elem()
					out.Set(v)
				}
				out.Index(i).Set(e)
			}
		}
		if out.IsValid() {
			return out, true
		}
		return v, false
	case fillStruct:
		if p.hidden && !v.CanAddr() {
			c := reflect.New(v.Type()).Elem()
			c.Set(v)
			v = c
		}
		var out reflect.Value
		for _, f := range p.fields {
			fv := structField(v, f)
			e, ok := fill(fv, f.plan, f.keepNil, depth)
			if !ok {
				continue
			}
			if !out.IsValid() {
				out = reflect.New(v.Type()).Elem()
				out.Set(v)
			}
			structField(out, f).Set(e)
		}
		if out.IsValid() {
			return out, true
		}
		return v, false
	}
	return v, false
}

// structField returns field f of struct v; a field of unexported embedded
// struct type (whose exported fields encoding/json promotes) is reached
// through its address, as reflect refuses to set it otherwise.
func structField(v reflect.Value, f fillField) reflect.Value {
	fv := v.Field(f.index)
	if f.hidden {
		fv = reflect.NewAt(fv.Type(), unsafe.Pointer(fv.UnsafeAddr())).Elem()
	}
	return fv
}
