package kafkago

import (
	"testing"

	"github.com/segmentio/kafka-go"
)

func TestIsMarker(t *testing.T) {
	abort := kafka.Message{Key: []byte{0, 0, 0, 0}, Value: []byte{0, 0, 0, 0, 0, 3}}
	commit := kafka.Message{Key: []byte{0, 0, 0, 1}, Value: []byte{0, 0, 0, 0, 0, 3}}
	if !isMarker(abort) || !isMarker(commit) {
		t.Fatal("an abort or commit marker is not recognised")
	}
	for name, m := range map[string]kafka.Message{
		"headers":      {Key: commit.Key, Value: commit.Value, Headers: []kafka.Header{{Key: "msg_type", Value: []byte("x")}}},
		"other type":   {Key: []byte{0, 0, 0, 2}, Value: commit.Value},
		"other key":    {Key: []byte("k"), Value: commit.Value},
		"long value":   {Key: commit.Key, Value: []byte(`{"a":1}`)},
		"no key":       {Value: commit.Value},
		"empty record": {},
	} {
		if isMarker(m) {
			t.Errorf("%s: taken for a marker", name)
		}
	}
}
