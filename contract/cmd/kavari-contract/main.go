// Command kavari-contract compares two kavari contract documents (AsyncAPI
// 3.0, JSON or YAML, as contract.Build writes them) so a service's CI can
// gate on breaking changes:
//
//	kavari-contract diff OLD NEW
//
// It prints every change, one per line, classified for consumers and
// producers, and exits 0 when nothing breaks, 1 on a breaking change and 2
// on bad usage or input (a file that is not an AsyncAPI 3 document).
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/kavari-go/kavari/contract"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) != 3 || args[0] != "diff" {
		fmt.Fprintln(stderr, "usage: kavari-contract diff OLD NEW")
		return 2
	}
	docs := make([]*contract.Document, 2)
	for i, name := range args[1:] {
		b, err := os.ReadFile(name)
		if err != nil {
			fmt.Fprintf(stderr, "kavari-contract: %v\n", err)
			return 2
		}
		if docs[i], err = contract.Parse(b); err != nil {
			fmt.Fprintf(stderr, "kavari-contract: %s: %v\n", name, err)
			return 2
		}
	}
	changes := contract.Diff(docs[0], docs[1])
	breaking := 0
	for _, c := range changes {
		fmt.Fprintln(stdout, c)
		if c.Breaking() {
			breaking++
		}
	}
	fmt.Fprintf(stdout, "%d changes, %d breaking\n", len(changes), breaking)
	if breaking > 0 {
		return 1
	}
	return 0
}
