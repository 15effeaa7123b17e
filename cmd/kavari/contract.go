package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/kavari-go/kavari/contract"
)

func runContractDiff(args []string, stdout, stderr io.Writer) int {
	var output string
	fs := newFlagSet("contract diff", "kavari contract diff OLD NEW [flags]\n\n"+
		"Compares two kavari contract documents (AsyncAPI 3.0, JSON or YAML, as\n"+
		"contract.Build writes them) and lists every change, classified for consumers\n"+
		"and producers. Exit status 0: nothing breaks; 1: a breaking change; 2: bad\n"+
		"usage or a file that is not an AsyncAPI 3 document.")
	fs.StringVar(&output, "o", "table", "output format: table or json")
	pos, err := fs.parse(args, 2, stdout)
	if err != nil {
		return exitCode(err, stderr)
	}
	if output != "table" && output != "json" {
		return exitCode(usagef("-o %q: want table or json", output), stderr)
	}
	docs := make([]*contract.Document, 2)
	for i, name := range pos {
		b, err := os.ReadFile(name)
		if err != nil {
			return exitCode(usagef("contract diff: %v", err), stderr)
		}
		if docs[i], err = contract.Parse(b); err != nil {
			return exitCode(usagef("contract diff: %s: %v", name, err), stderr)
		}
	}
	changes := contract.Diff(docs[0], docs[1])
	breaking := 0
	enc := json.NewEncoder(stdout)
	for _, c := range changes {
		if c.Breaking() {
			breaking++
		}
		if output == "json" {
			err = enc.Encode(changeJSON{c.Path, c.Kind, c.BreaksConsumers, c.BreaksProducers, c.Message})
		} else {
			_, err = fmt.Fprintln(stdout, c)
		}
		if err != nil {
			return exitCode(err, stderr)
		}
	}
	if output == "json" {
		err = enc.Encode(map[string]int{"changes": len(changes), "breaking": breaking})
	} else {
		_, err = fmt.Fprintf(stdout, "%d changes, %d breaking\n", len(changes), breaking)
	}
	if err != nil {
		return exitCode(err, stderr)
	}
	if breaking > 0 {
		return exitFail
	}
	return exitOK
}

// changeJSON is the -o json form of a contract change.
type changeJSON struct {
	Path            string `json:"path"`
	Kind            string `json:"kind"`
	BreaksConsumers bool   `json:"breaks_consumers"`
	BreaksProducers bool   `json:"breaks_producers"`
	Message         string `json:"message"`
}
