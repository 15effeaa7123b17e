package franz

import (
	"testing"
	"time"

	"github.com/kavari-go/kavari/internal/transport"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The records of one batch get their headers from one allocation, each
// record's capped at its own: appending a header to one leaves the next
// as it was.
func TestSetKgoRecordHeadersApart(t *testing.T) {
	at := time.Unix(1700000000, 0)
	recs := []*transport.Record{
		{Topic: "a", Key: []byte("k1"), Value: []byte("v1"), Time: at, Headers: []transport.Header{{Key: "x", Value: []byte("1")}, {Key: "y", Value: []byte("2")}}},
		{Topic: "b", Value: []byte("v2")},
		{Topic: "c", Key: []byte("k3"), Value: []byte("v3"), Headers: []transport.Header{{Key: "z", Value: []byte("3")}}},
	}
	kv := make([]kgo.Record, len(recs))
	hs := kgoHeaders(recs)
	for i, r := range recs {
		hs = setKgoRecord(&kv[i], r, hs)
	}
	if len(hs) != 0 {
		t.Fatalf("%d headers of room left, want 0", len(hs))
	}
	for i, r := range recs {
		kr := kv[i]
		if kr.Topic != r.Topic || string(kr.Key) != string(r.Key) || string(kr.Value) != string(r.Value) || !kr.Timestamp.Equal(r.Time) || len(kr.Headers) != len(r.Headers) {
			t.Fatalf("record %d: %+v from %+v", i, kr, *r)
		}
		for j, h := range r.Headers {
			if kr.Headers[j].Key != h.Key || string(kr.Headers[j].Value) != string(h.Value) {
				t.Fatalf("record %d header %d: %+v, want %+v", i, j, kr.Headers[j], h)
			}
		}
	}
	if kv[1].Headers != nil {
		t.Fatalf("a record without headers got %v", kv[1].Headers)
	}
	kv[0].Headers = append(kv[0].Headers, kgo.RecordHeader{Key: "added"})
	if kv[2].Headers[0].Key != "z" {
		t.Fatalf("appending to record 0's headers changed record 2's: %+v", kv[2].Headers)
	}
}
