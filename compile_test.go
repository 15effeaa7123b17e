package kavari_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestOnlyMessagePointersCompile builds small programs with the go command:
// Publish, PublishBatch, PublishAsync, TryPublishAsync, the Register
// functions, Declare and SetCodec accept a pointer to a struct embedding
// kavari.Message, and a struct value or another type does not compile.
func TestOnlyMessagePointersCompile(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command")
	}
	const prelude = `package main

import (
	"context"

	"github.com/kavari-go/kavari"
)

type Order struct {
	kavari.Message ` + "`kavari:\"topic=orders,key=ID\"`" + `
	ID string
}

type NotMessage struct{ ID string }

type handler struct{}

func (handler) Handle(context.Context, *Order) error { return nil }

var _ = handler{}

func main() {
	ctx := context.Background()
	var c *kavari.Client
	_, _ = ctx, c
	onOrder := func(context.Context, *Order) error { return nil }
	onNot := func(context.Context, *NotMessage) error { return nil }
	_, _ = onOrder, onNot
	factory := func() handler { return handler{} }
	_ = factory
`
	cases := []struct {
		name, code string
		ok         bool
	}{
		{"pointers", `
	_, _ = c.Publish(ctx, &Order{ID: "1"})
	_, _ = c.PublishBatch(ctx, &Order{ID: "1"}, &Order{ID: "2"})
	c.PublishAsync(ctx, &Order{ID: "1"}, func(kavari.Receipt, error) {})
	_ = c.TryPublishAsync(ctx, &Order{ID: "1"}, nil)
	_ = kavari.Register(&Order{}, factory)
	_ = kavari.RegisterFunc(&Order{}, onOrder)
	_ = kavari.RegisterProvided(&Order{}, (*handler)(nil))
	_ = kavari.Declare(&Order{})
	_ = kavari.SetCodec(&Order{}, kavari.JSON)
	_ = kavari.NewRegistry().SetCodec(&Order{}, kavari.JSON)
	_ = kavari.RetryInPlace(&Order{})
	_ = kavari.NewRegistry().RetryInPlace(&Order{})`, true},
		{"Publish a value", `_, _ = c.Publish(ctx, Order{ID: "1"})`, false},
		{"Publish a non-message", `_, _ = c.Publish(ctx, &NotMessage{ID: "1"})`, false},
		{"PublishBatch a value", `_, _ = c.PublishBatch(ctx, &Order{ID: "1"}, Order{ID: "2"})`, false},
		{"PublishAsync a value", `c.PublishAsync(ctx, Order{ID: "1"}, nil)`, false},
		{"TryPublishAsync a value", `_ = c.TryPublishAsync(ctx, Order{ID: "1"}, nil)`, false},
		{"Register a value", `_ = kavari.Register(Order{}, factory)`, false},
		{"RegisterFunc a non-message", `_ = kavari.RegisterFunc(&NotMessage{}, onNot)`, false},
		{"Declare a value", `_ = kavari.Declare(Order{})`, false},
		{"SetCodec a value", `_ = kavari.SetCodec(Order{}, kavari.JSON)`, false},
		{"Registry.SetCodec a non-message", `_ = kavari.NewRegistry().SetCodec(&NotMessage{}, kavari.JSON)`, false},
		{"RetryInPlace a value", `_ = kavari.RetryInPlace(Order{})`, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := goBuild(t, prelude+"\t"+tc.code+"\n}\n")
			switch {
			case tc.ok && err != nil:
				t.Fatalf("does not compile:\n%s", out)
			case !tc.ok && err == nil:
				t.Fatalf("compiles:\n%s", tc.code)
			case !tc.ok && !strings.Contains(string(out), "kavari.Msg") && !strings.Contains(string(out), "MsgPtr"):
				t.Fatalf("fails for another reason than the Msg check:\n%s", out)
			}
		})
	}
}

// goBuild builds src, a main package, with the go command, in a directory
// starting with "_" inside the module: the go command resolves kavari from
// the working tree, and ./... patterns skip it.
func goBuild(t *testing.T, src string) ([]byte, error) {
	t.Helper()
	dir, err := os.MkdirTemp(".", "_compile")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-o", os.DevNull, ".")
	cmd.Dir = dir
	return cmd.CombinedOutput()
}

// TestReadmeExampleCompiles builds the README's complete example, so that
// it follows the API.
func TestReadmeExampleCompiles(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command")
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "## A complete example")
	if !ok {
		t.Fatal(`README.md has no "## A complete example" section`)
	}
	_, rest, ok = strings.Cut(rest, "```go\n")
	code, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("the complete example has no go code block")
	}
	if out, err := goBuild(t, code); err != nil {
		t.Fatalf("README's complete example does not compile:\n%s", out)
	}
}
