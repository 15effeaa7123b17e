package kavaritest_test

import (
	"context"
	"fmt"
	"testing"
)

// exampleT stands in for a test's *testing.T in Examples, which have none:
// it runs the cleanups at done, drops log lines and panics on a failure.
type exampleT struct {
	testing.TB // nil: calling a method not below panics
	cleanups   []func()
}

func (t *exampleT) Helper()                        {}
func (t *exampleT) Log(...any)                     {}
func (t *exampleT) Logf(string, ...any)            {}
func (t *exampleT) Context() context.Context       { return context.Background() }
func (t *exampleT) Cleanup(f func())               { t.cleanups = append(t.cleanups, f) }
func (t *exampleT) Errorf(format string, a ...any) { panic(fmt.Sprintf(format, a...)) }
func (t *exampleT) Fatalf(format string, a ...any) { panic(fmt.Sprintf(format, a...)) }
func (t *exampleT) Fatal(a ...any)                 { panic(fmt.Sprint(a...)) }

func (t *exampleT) done() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
}
