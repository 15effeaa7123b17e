package contract_test

import (
	"os"
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari/contract"
)

// TestDocListsMappedRules keeps the package documentation's list of mapped
// rules in step with MappedRules.
func TestDocListsMappedRules(t *testing.T) {
	b, err := os.ReadFile("doc.go")
	require.NoError(t, err)
	for _, r := range contract.MappedRules() {
		assert.Regexp(t, regexp.MustCompile(`[\s(,/]`+regexp.QuoteMeta(r)+`[\s,)/]`), string(b), "doc.go does not list %s", r)
	}
}
