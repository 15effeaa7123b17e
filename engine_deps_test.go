package kavari

import (
	"go/ast"
	"go/parser"
	"go/token"
	"reflect"
	"testing"
)

// engineFiles are the engine files (docs/architecture.md, "Engine files")
// but lifecycle.go, the Client's side of Start and Stop: the consumer engine
// runs on the engineDeps that launch hands it, the publisher on what New
// hands it, never on the Client.
var engineFiles = []string{"dispatch.go", "handle.go", "commit.go", "buffer.go", "workers.go", "lag.go", "publish.go", "asyncqueue.go", "retrytopic.go"}

// TestEngineFilesDoNotReachTheClient: the engine files name no Client (no
// *Client field, receiver, parameter or conversion) and select no field k
// (the engine's former link to its Client), so everything the engine uses
// of the client is in engineDeps, where it can be read in one place.
func TestEngineFilesDoNotReachTheClient(t *testing.T) {
	fset := token.NewFileSet()
	for _, name := range engineFiles {
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.Ident:
				if n.Name == "Client" {
					t.Errorf("%s: engine file names Client (pass what the engine needs in engineDeps)", fset.Position(n.Pos()))
				}
			case *ast.SelectorExpr:
				if n.Sel.Name == "k" {
					t.Errorf("%s: engine file selects .k (the engine's link to its Client; use engineDeps)", fset.Position(n.Pos()))
				}
			}
			return true
		})
	}
}

// TestEngineHoldsNoClient: no field of the engine or the publisher, nor of
// what they hold (engineDeps, partitions, the worker pool's tasks, ...), is
// a Client or points to one. Funcs in engineDeps may call back into the
// Client: they are the narrow callbacks the engine is given.
func TestEngineHoldsNoClient(t *testing.T) {
	client := reflect.TypeOf(Client{})
	seen := map[reflect.Type]bool{}
	var walk func(t reflect.Type, path string)
	walk = func(typ reflect.Type, path string) {
		if typ == client {
			t.Errorf("the engine holds a Client: %s", path)
			return
		}
		if seen[typ] {
			return
		}
		seen[typ] = true
		switch typ.Kind() {
		case reflect.Pointer, reflect.Slice, reflect.Array, reflect.Chan:
			walk(typ.Elem(), path+"[]")
		case reflect.Map:
			walk(typ.Key(), path+"[key]")
			walk(typ.Elem(), path+"[elem]")
		case reflect.Struct:
			for i := range typ.NumField() {
				f := typ.Field(i)
				walk(f.Type, path+"."+f.Name)
			}
		}
	}
	walk(reflect.TypeOf(engine{}), "engine")
	walk(reflect.TypeOf(task{}), "task")
	walk(reflect.TypeOf(publisher{}), "publisher")
}
