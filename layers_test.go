package kavari_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
)

// apiFiles are the files of package kavari that may declare exported
// identifiers: the user-facing API (docs/architecture.md, "Layers"). Every
// other file is engine or machinery and exports nothing; exported methods of
// Client (Start, Stop, Publish, ...) are thin entry points here that call
// unexported functions there.
var apiFiles = []string{
	"kavari.go",     // package doc, Client, New, Publish*, Start, Stop, EnsureTopics
	"config.go",     // Config and its groups, Ordering, Partitioner, OffsetReset, SASL
	"transports.go", // Transport, GroupProtocol
	"registry.go",   // Registry, Register*, Handler, Declare, MsgPtr
	"registry_types.go",
	"provider.go", // Provider, MapProvider
	"message.go",  // Message, Msg
	"envelope.go", // headers, Header, WithHeaders, Record, RecordFromContext
	"receipt.go",  // Receipt
	"codec.go",    // Codec, CodecChecker, JSON, Text, SetCodec
	"codec_json.go",
	"codec_text.go",
	"errors.go",     // sentinels and typed errors, Permanent
	"hooks.go",      // Hook and its capabilities
	"middleware.go", // Middleware, AttemptFunc
	"health.go",     // Health, PartitionHealth, Client.Health
	"backoff.go",    // RetryPolicy, Strategy, RetryError
	"deadletter.go", // dead-letter headers, MaxErrorText
	"encoded.go",    // Encoded, Client.Encode, Client.PublishEncoded (the outbox module's)

	"retryheaders.go", // retry-topic headers (Consume.RetryTopics)
	"isolation.go",    // Isolation, ReadUncommitted, ReadCommitted
}

// TestExportedIdentifiersLiveInAPIFiles: every exported identifier of
// package kavari (a top-level type, func, var or const, or an exported
// method of an exported type) is declared in one of apiFiles, so that the
// engine files export nothing and the API can be read in those files alone.
// An exported method of an unexported type (an error's Error, a context's
// Value, the engine's transport.GroupHandler methods) is not part of the
// package's API and may live anywhere, unless its type is embedded in an
// exported struct, which would promote it.
func TestExportedIdentifiersLiveInAPIFiles(t *testing.T) {
	for _, name := range apiFiles {
		if _, err := os.Stat(name); err != nil {
			t.Errorf("apiFiles names %s: %v", name, err)
		}
	}
	fset := token.NewFileSet()
	files := map[string]*ast.File{}
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		if f.Name.Name != "kavari" {
			continue
		}
		files[name] = f
	}
	if len(files) == 0 {
		t.Fatal("no non-test files of package kavari found")
	}
	// Unexported types whose methods an exported struct promotes.
	promoted := map[string]bool{}
	for _, f := range files {
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.TYPE {
				continue
			}
			for _, s := range gd.Specs {
				ts := s.(*ast.TypeSpec)
				st, ok := ts.Type.(*ast.StructType)
				if !ok || !ts.Name.IsExported() {
					continue
				}
				for _, fld := range st.Fields.List {
					if len(fld.Names) == 0 {
						if n := baseTypeName(fld.Type); n != "" && !ast.IsExported(n) {
							promoted[n] = true
						}
					}
				}
			}
		}
	}
	var misplaced []string
	for name, f := range files {
		if slices.Contains(apiFiles, name) {
			continue
		}
		for _, d := range f.Decls {
			for _, id := range exportedIn(d, promoted) {
				misplaced = append(misplaced, fset.Position(d.Pos()).String()+": "+id)
			}
		}
	}
	sort.Strings(misplaced)
	for _, m := range misplaced {
		t.Errorf("%s is exported outside the API files (move it to one of them, or add its file to apiFiles in layers_test.go)", m)
	}
}

// exportedIn returns the exported identifiers declaration d declares.
func exportedIn(d ast.Decl, promoted map[string]bool) []string {
	var out []string
	switch d := d.(type) {
	case *ast.FuncDecl:
		if !d.Name.IsExported() {
			return nil
		}
		if d.Recv == nil {
			return []string{"func " + d.Name.Name}
		}
		recv := baseTypeName(d.Recv.List[0].Type)
		if ast.IsExported(recv) || promoted[recv] {
			out = append(out, "method "+recv+"."+d.Name.Name)
		}
	case *ast.GenDecl:
		for _, s := range d.Specs {
			switch s := s.(type) {
			case *ast.TypeSpec:
				if s.Name.IsExported() {
					out = append(out, "type "+s.Name.Name)
				}
			case *ast.ValueSpec:
				for _, n := range s.Names {
					if n.IsExported() {
						out = append(out, d.Tok.String()+" "+n.Name)
					}
				}
			}
		}
	}
	return out
}

// baseTypeName returns the name of the type expression x (a receiver or an
// embedded field): T, *T, T[P], pkg.T ("" for other packages' types).
func baseTypeName(x ast.Expr) string {
	for {
		switch t := x.(type) {
		case *ast.StarExpr:
			x = t.X
		case *ast.IndexExpr:
			x = t.X
		case *ast.IndexListExpr:
			x = t.X
		case *ast.ParenExpr:
			x = t.X
		case *ast.Ident:
			return t.Name
		default:
			return ""
		}
	}
}
