package main

import (
	"fmt"
	"strings"
	"time"
)

// multiReport is the report of one run: one report per toolchain
// (-toolchains), or one for the toolchain that built the bench.
type multiReport struct {
	env  environment
	reps []*report
}

func (m *multiReport) summary() string {
	if len(m.reps) == 1 {
		return m.reps[0].summary()
	}
	var b strings.Builder
	for _, r := range m.reps {
		fmt.Fprintf(&b, "\n%s:", r.goVersions())
		b.WriteString(r.summary())
	}
	return b.String()
}

// markdown is the single report as before, or, for several toolchains, the
// header once, a table of every target under each toolchain side by side,
// then each toolchain's sections under a heading of its own.
func (m *multiReport) markdown() string {
	if len(m.reps) == 1 {
		return m.reps[0].markdown()
	}
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	b.WriteString(m.reps[0].header(m.reps))
	w("Every Go workload ran once per toolchain (`-toolchains`): the bench rebuilt itself with `GOTOOLCHAIN` set and ran its\n")
	w("workers and the microbenchmarks' `go test` with it; the Python kavari ran once, in the first pass. The passes ran one\n")
	w("after the other on the same broker, so load may differ between them (%s in all).\n\n", m.env.Elapsed.Round(time.Second))
	w("## Targets by toolchain\n\n| target |")
	for _, r := range m.reps {
		w(" %s |", r.goVersions())
	}
	w("\n| --- |%s\n", strings.Repeat(" --- |", len(m.reps)))
	for i, t := range m.reps[0].targets {
		w("| %s |", t.Name)
		for _, r := range m.reps {
			cell := "–"
			// evaluate adds the same targets in the same order in every pass.
			if i < len(r.targets) && r.targets[i].Name == t.Name {
				x := r.targets[i]
				cell = x.Status
				if x.Measured != "" {
					cell = x.Measured + ": " + x.Status
				}
			}
			w(" %s |", cell)
		}
		w("\n")
	}
	w("\n")
	for _, r := range m.reps {
		w("## Results with %s\n\n", r.goVersions())
		// One level down: each toolchain's sections sit under its heading.
		for _, line := range strings.SplitAfter(r.body(), "\n") {
			if strings.HasPrefix(line, "## ") {
				line = "#" + line
			}
			b.WriteString(line)
		}
	}
	return b.String()
}
