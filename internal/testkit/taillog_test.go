package testkit

import (
	"fmt"
	"strings"
	"testing"
)

// TestTailLogKeepsTheLastWholeLines: past logTail bytes the oldest lines
// go, whole, and the count of dropped bytes says how much.
func TestTailLogKeepsTheLastWholeLines(t *testing.T) {
	l := &tailLog{}
	total := 0
	for i := 0; total < 3*logTail; i++ {
		line := fmt.Sprintf("line %d %s\n", i, strings.Repeat("x", i%50))
		total += len(line)
		_, _ = l.Write([]byte(line))
	}
	_, _ = l.Write([]byte("last\n"))
	total += len("last\n")
	text, cut := l.close()
	if len(text) > logTail || len(text) < logTail-100 {
		t.Fatalf("kept %d bytes, want about %d", len(text), logTail)
	}
	if !strings.HasPrefix(text, "line ") || !strings.HasSuffix(text, "last\n") {
		t.Fatalf("not whole lines: %q ... %q", text[:20], text[len(text)-20:])
	}
	if cut+len(text) != total {
		t.Fatalf("kept %d + dropped %d != written %d", len(text), cut, total)
	}
	_, _ = l.Write([]byte("after close\n"))
	if again, _ := l.close(); again != text {
		t.Fatal("a write after close was kept")
	}
}
