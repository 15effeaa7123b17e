package contract_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// asyncapiSpecs is the npm package whose bundled AsyncAPI 3.0.0 JSON Schema
// the golden test validates against. The schema is not written by hand:
// it is fetched once into .cache/ at the repository root, as the project
// fetches Kafka.
const asyncapiSpecs = "@asyncapi/specs@6.11.1"

// asyncapiSchema returns the compiled AsyncAPI 3.0.0 schema. Without npm
// the test is skipped, except under CI=true, where it fails.
func asyncapiSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", ".cache", "asyncapi-specs-6.11.1"))
	require.NoError(t, err)
	file := filepath.Join(dir, "schemas", "3.0.0.json")
	if _, err := os.Stat(file); err != nil {
		fetchSpecs(t, dir)
	}
	return compileFile(t, file, "http://asyncapi.com/definitions/3.0.0/asyncapi.json")
}

var fetchMu sync.Mutex

func fetchSpecs(t *testing.T, dir string) {
	fetchMu.Lock()
	defer fetchMu.Unlock()
	npm, err := exec.LookPath("npm")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("npm is needed to fetch %s (the AsyncAPI 3.0 JSON Schema)", asyncapiSpecs)
		}
		t.Skipf("npm not found: cannot fetch %s to validate against the AsyncAPI 3.0 schema", asyncapiSpecs)
	}
	tmp := t.TempDir()
	cmd := exec.Command(npm, "pack", asyncapiSpecs, "--silent", "--pack-destination", tmp)
	cmd.Dir = tmp
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "npm pack %s: %s", asyncapiSpecs, out)
	tgz := filepath.Join(tmp, strings.TrimSpace(lastLine(string(out))))
	f, err := os.Open(tgz)
	require.NoError(t, err)
	defer f.Close()
	zr, err := gzip.NewReader(f)
	require.NoError(t, err)
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		name := strings.TrimPrefix(h.Name, "package/")
		if !strings.HasPrefix(name, "schemas/") || h.Typeflag != tar.TypeReg {
			continue
		}
		dst := filepath.Join(dir, filepath.FromSlash(name))
		require.NoError(t, os.MkdirAll(filepath.Dir(dst), 0o755))
		b, err := io.ReadAll(tr)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(dst, b, 0o644))
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// compileFile compiles the JSON Schema in file, known by url.
func compileFile(t *testing.T, file, url string) *jsonschema.Schema {
	t.Helper()
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	return compile(t, b, url)
}

// compile compiles schema b with format assertions on (email, uuid, ...).
func compile(t testing.TB, b []byte, url string) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	require.NoError(t, err)
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	c.AssertContent()
	require.NoError(t, c.AddResource(url, doc))
	s, err := c.Compile(url)
	require.NoError(t, err)
	return s
}

// instance decodes JSON b for validation.
func instance(t testing.TB, b []byte) any {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	require.NoError(t, err)
	return v
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.WriteFile(path, got, 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test -update to create %s", path)
	require.Equal(t, string(want), string(got), "%s differs; run go test -update and review the diff", path)
}
