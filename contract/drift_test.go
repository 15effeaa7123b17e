package contract_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestExampleCopies fails when an example's message type and its copy in
// types_test.go drift apart: field names, types and tags must match.
func TestExampleCopies(t *testing.T) {
	for _, c := range []struct {
		file, name string
		copy       reflect.Type
	}{
		{"../examples/quickstart/main.go", "OrderPlaced", typeOf(&OrderPlaced{})},
		{"../examples/quickstart/main.go", "PaymentReceived", typeOf(&PaymentReceived{})},
		{"../examples/httpservice/main.go", "OrderPlaced", typeOf(&httpOrderPlaced{})},
		{"../examples/di/main.go", "PaymentReceived", typeOf(&diPaymentReceived{})},
	} {
		t.Run(c.file+" "+c.name, func(t *testing.T) {
			f, err := parser.ParseFile(token.NewFileSet(), c.file, nil, parser.SkipObjectResolution)
			require.NoError(t, err)
			var fields []string
			ast.Inspect(f, func(n ast.Node) bool {
				ts, ok := n.(*ast.TypeSpec)
				if !ok || ts.Name.Name != c.name {
					return true
				}
				for _, fl := range ts.Type.(*ast.StructType).Fields.List {
					tag := ""
					if fl.Tag != nil {
						tag, _ = strconv.Unquote(fl.Tag.Value)
					}
					typ := types(fl.Type)
					if len(fl.Names) == 0 {
						fields = append(fields, typ+" "+tag)
					}
					for _, n := range fl.Names {
						fields = append(fields, n.Name+" "+typ+" "+tag)
					}
				}
				return false
			})
			require.NotEmpty(t, fields, "type %s not found in %s", c.name, c.file)
			var copied []string
			for i := 0; i < c.copy.NumField(); i++ {
				sf := c.copy.Field(i)
				typ := sf.Type.String()
				if sf.Anonymous {
					copied = append(copied, typ+" "+string(sf.Tag))
					continue
				}
				copied = append(copied, sf.Name+" "+typ+" "+string(sf.Tag))
			}
			assert.Equal(t, fields, copied)
		})
	}
}

// types renders a field type as reflect does for the simple types used.
func types(e ast.Expr) string {
	switch x := e.(type) {
	case *ast.Ident:
		return x.Name
	case *ast.SelectorExpr:
		return types(x.X) + "." + x.Sel.Name
	case *ast.StarExpr:
		return "*" + types(x.X)
	case *ast.ArrayType:
		return "[]" + types(x.Elt)
	}
	return strings.TrimSpace(reflect.TypeOf(e).String())
}
