package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	dir := t.TempDir()
	golden, err := os.ReadFile("../../testdata/quickstart.asyncapi.json")
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	old := write("old.json", string(golden))
	same := write("same.json", string(golden))
	narrowed := write("new.json", strings.Replace(string(golden), `"GBP"`, `"USD"`, 1))
	notAsync := write("openapi.yaml", "openapi: 3.1.0\ninfo: {title: x, version: '1'}\n")
	for _, c := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"diff", old, same}, 0, "0 changes, 0 breaking"},
		{[]string{"diff", old, narrowed}, 1, "enum-narrowed"},
		{[]string{"diff", old, notAsync}, 2, "not an AsyncAPI 3 document"},
		{[]string{"diff", old, filepath.Join(dir, "missing.json")}, 2, "no such file"},
		{[]string{"diff", old}, 2, "usage"},
	} {
		var out, errOut bytes.Buffer
		if code := run(c.args, &out, &errOut); code != c.code {
			t.Errorf("%v: exit %d, want %d\n%s%s", c.args, code, c.code, out.String(), errOut.String())
		}
		if !strings.Contains(out.String()+errOut.String(), c.out) {
			t.Errorf("%v: output lacks %q:\n%s%s", c.args, c.out, out.String(), errOut.String())
		}
	}
}
