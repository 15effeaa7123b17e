package franz

import (
	"strings"
	"testing"
	"time"

	"github.com/kavari-go/kavari/internal/transport"
	"github.com/twmb/franz-go/pkg/kgo"
)

// setKgoRecord gives kgo each record's fields and its headers, without
// copying them, capped at their length: appending a header to the kgo
// record leaves kavari's record as it was, also when its headers have
// room beyond their length (encode makes them with room for one more).
func TestSetKgoRecord(t *testing.T) {
	at := time.Unix(1700000000, 0)
	withRoom := make([]transport.Header, 2, 3)
	withRoom[0], withRoom[1] = transport.Header{Key: "x", Value: []byte("1")}, transport.Header{Key: "y", Value: []byte("2")}
	recs := []*transport.Record{
		{Topic: "a", Key: []byte("k1"), Value: []byte("v1"), Time: at, Headers: withRoom},
		{Topic: "b", Value: []byte("v2")},
		{Topic: "c", Key: []byte("k3"), Value: []byte("v3"), Headers: []transport.Header{{Key: "z", Value: []byte("3")}}},
	}
	kv := make([]kgo.Record, len(recs))
	for i, r := range recs {
		setKgoRecord(&kv[i], r)
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
	if got := withRoom[:3][2]; got.Key != "" {
		t.Fatalf("appending to the kgo record's headers wrote into kavari's: %+v", got)
	}
}

// gotRecords is a transport.GroupHandler that keeps what Records delivers.
type gotRecords struct {
	transport.GroupHandler
	recs []*transport.Record
}

func (g *gotRecords) Records(_ transport.TopicPartition, recs []*transport.Record, _ int64) {
	g.recs = append(g.recs, recs...)
}

// deliver copies keys, values and header values out of the fetch response
// (a record the engine holds must not keep the response alive), keeps each
// record's headers, and caps them at their own length.
func TestDeliverCopiesOutOfTheResponse(t *testing.T) {
	resp := []byte("k1v1h1h2k2v2h3")
	at := time.Unix(1700000000, 0)
	krs := []*kgo.Record{
		{Topic: "t", Partition: 2, Offset: 7, Key: resp[0:2], Value: resp[2:4], Timestamp: at,
			Headers: []kgo.RecordHeader{{Key: "a", Value: resp[4:6]}, {Key: "b", Value: resp[6:8]}}},
		{Topic: "t", Partition: 2, Offset: 8, Value: resp[10:12], Timestamp: at},
		{Topic: "t", Partition: 2, Offset: 9, Key: resp[8:10], Value: resp[10:12], Timestamp: at,
			Headers: []kgo.RecordHeader{{Key: "c", Value: resp[12:14]}, {Key: "nil"}}},
	}
	tp := transport.TopicPartition{Topic: "t", Partition: 2}
	g := &gotRecords{}
	c := &consumer{h: g, deliverable: map[transport.TopicPartition]bool{tp: true}}
	if !c.deliver(tp, krs, 10) {
		t.Fatal("deliver refused a deliverable partition")
	}
	for i := range resp {
		resp[i] = '#' // the response's buffer is reused or gone
	}
	type want struct {
		off        int64
		key, value string
		headers    []string // key=value
	}
	wants := []want{
		{7, "k1", "v1", []string{"a=h1", "b=h2"}},
		{8, "", "v2", nil},
		{9, "k2", "v2", []string{"c=h3", "nil="}},
	}
	if len(g.recs) != len(wants) {
		t.Fatalf("%d records delivered, want %d", len(g.recs), len(wants))
	}
	for i, w := range wants {
		r := g.recs[i]
		if r.Topic != "t" || r.Partition != 2 || r.Offset != w.off || string(r.Key) != w.key || string(r.Value) != w.value || !r.Time.Equal(at) {
			t.Fatalf("record %d: %+v, want %+v", i, *r, w)
		}
		var hs []string
		for _, h := range r.Headers {
			hs = append(hs, h.Key+"="+string(h.Value))
		}
		if strings.Join(hs, ",") != strings.Join(w.headers, ",") || cap(r.Headers) != len(r.Headers) {
			t.Fatalf("record %d headers %v (cap %d), want %v", i, hs, cap(r.Headers), w.headers)
		}
	}
	if g.recs[1].Key != nil || g.recs[2].Headers[1].Value != nil {
		t.Fatal("a nil key or header value came out not nil")
	}
	c.deliverable[tp] = false
	if c.deliver(tp, krs, 10) {
		t.Fatal("deliver handed records of a partition that is not deliverable")
	}
}
