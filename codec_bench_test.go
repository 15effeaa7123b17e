package kavari_test

import (
	"encoding/json"
	"testing"

	"github.com/kavari-go/kavari"
)

// BenchmarkJSONCodec compares kavari.JSON with encoding/json on the same
// messages: "rich" and "small" have nothing to fill (the per-type plan says
// so, or the walk finds every slice set), "nil-lines" has a nil slice in
// each of its three lines, so it is copied.
func BenchmarkJSONCodec(b *testing.B) {
	nilLines := &ktNilMsg{Leaves: []ktNilLeaf{{}, {}, {}}}
	cases := append(ktBenchCases(), struct {
		name string
		msg  any
	}{"nil-lines", nilLines})
	for _, c := range cases {
		b.Run(c.name+"/encoding-json", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := json.Marshal(c.msg); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(c.name+"/kavari-JSON", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := kavari.JSON.Marshal(c.msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
