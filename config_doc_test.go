package kavari_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strings"
	"testing"
)

// configGroups are the Config fields that group other fields, and their types.
var configGroups = map[string]string{"Publish": "PublishConfig", "Consume": "ConsumeConfig", "Topics": "TopicConfig"}

// TestConfigTableMatchesTheCode: the README's configuration table names
// every Config field (grouped ones as Group.Field) and no other, and the
// default it gives is the one the field's doc comment states on its
// "Default ..." line.
func TestConfigTableMatchesTheCode(t *testing.T) {
	code := configDefaults(t)
	readme := readmeConfigTable(t)
	for path, def := range code {
		got, ok := readme[path]
		if !ok {
			t.Errorf("README.md configuration table has no row for %s", path)
			continue
		}
		if got != def {
			t.Errorf("%s: README.md gives the default %q, its doc comment in config.go %q", path, got, def)
		}
	}
	for path := range readme {
		if _, ok := code[path]; !ok {
			t.Errorf("README.md configuration table names %s, which Config does not have", path)
		}
	}
}

// configDefaults reads config.go and returns each Config field's path
// (Group.Field inside a group) and the default its doc comment states.
func configDefaults(t *testing.T) map[string]string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "config.go", nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	structs := map[string]*ast.StructType{}
	ast.Inspect(f, func(n ast.Node) bool {
		if ts, ok := n.(*ast.TypeSpec); ok {
			if st, ok := ts.Type.(*ast.StructType); ok {
				structs[ts.Name.Name] = st
			}
		}
		return true
	})
	out := map[string]string{}
	var walk func(prefix, typ string)
	walk = func(prefix, typ string) {
		st, ok := structs[typ]
		if !ok {
			t.Fatalf("config.go declares no struct %s", typ)
		}
		for _, fld := range st.Fields.List {
			for _, name := range fld.Names {
				if !name.IsExported() {
					continue
				}
				if id, ok := fld.Type.(*ast.Ident); ok && prefix == "" && configGroups[name.Name] == id.Name {
					walk(name.Name+".", id.Name)
					continue
				}
				path := prefix + name.Name
				def, ok := docDefault(fld.Doc.Text())
				if !ok {
					t.Errorf("config.go: the doc comment of %s states no default (a line \"Default ...\")", path)
				}
				out[path] = def
			}
		}
	}
	walk("", "Config")
	if len(out) < 30 {
		t.Fatalf("found only %d Config fields in config.go", len(out))
	}
	return out
}

// docDefault returns the text of a doc comment's "Default ..." line.
func docDefault(doc string) (string, bool) {
	for _, line := range strings.Split(doc, "\n") {
		if rest, ok := strings.CutPrefix(line, "Default "); ok {
			return normDefault(rest), true
		}
	}
	return "", false
}

// readmeConfigTable returns the field → default rows of the tables in
// README.md's Configuration section.
func readmeConfigTable(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Configuration\n")
	if !ok {
		t.Fatal("README.md has no Configuration section")
	}
	if i := strings.Index(section, "\n## "); i >= 0 {
		section = section[:i]
	}
	out := map[string]string{}
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(line, " | ")
		if len(cells) < 3 {
			t.Fatalf("README.md configuration row without a default: %s", line)
		}
		path := strings.Trim(strings.TrimPrefix(cells[0], "| "), "`")
		if _, dup := out[path]; dup {
			t.Errorf("README.md configuration table names %s twice", path)
		}
		out[path] = normDefault(cells[1])
	}
	return out
}

// normDefault drops what markdown and prose add around a default.
func normDefault(s string) string {
	s = strings.ReplaceAll(s, "`", "")
	return strings.TrimSuffix(strings.TrimSpace(s), ".")
}
