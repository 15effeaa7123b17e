package kavari

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/kavari-go/kavari/internal/transport"

	"github.com/kavari-go/kavari/validate"
)

// Messages of the decode fuzz target: nesting, slices, maps, pointers, time
// and validation rules on one topic, and a second type without rules.

type fuzzLine struct {
	SKU string `json:"sku" validate:"required"`
	Qty int    `json:"qty" validate:"gte=1"`
}

type fuzzAddr struct {
	Zip string `json:"zip" validate:"omitempty,len=5"`
}

type fuzzOrder struct {
	Message `kavari:"topic=fuzz-orders,key=ID,name=order.placed,version=2"`
	ID      string            `json:"id" validate:"required"`
	Amount  int64             `json:"amount" validate:"gt=0"`
	Lines   []fuzzLine        `json:"lines" validate:"dive"`
	Addr    *fuzzAddr         `json:"addr"`
	Tags    map[string]string `json:"tags" validate:"max=5"`
	At      time.Time         `json:"at"`
	Email   string            `json:"email" validate:"omitempty,email"`
	Ratio   float64           `json:"ratio"`
	Blob    []byte            `json:"blob"`
}

type fuzzPing struct {
	Message `kavari:"topic=fuzz-orders,name=ping"`
	N       int `json:"n"`
}

// fuzzTable is the route table the fuzz target decodes with.
func fuzzTable(tb testing.TB) *routeTable {
	r := NewRegistry()
	if err := RegisterFuncOn(r, &fuzzOrder{}, func(ctx context.Context, m *fuzzOrder) error { return nil }); err != nil {
		tb.Fatal(err)
	}
	if err := RegisterFuncOn(r, &fuzzPing{}, func(ctx context.Context, m *fuzzPing) error { return nil }); err != nil {
		tb.Fatal(err)
	}
	return r.freeze()
}

// FuzzDecodeRecord feeds arbitrary record values and headers to the
// consumer's decoder (routeTable.decode) and to the dead-letter builder. It
// must never panic, and always return either a valid message of a registered
// type or a *DecodeError of a known kind that matches the failure:
//
//	go test -run '^$' -fuzz FuzzDecodeRecord -fuzztime 20s .
func FuzzDecodeRecord(f *testing.F) {
	valid := []byte(`{"id":"o-1","amount":10,"lines":[{"sku":"a","qty":1}],"addr":{"zip":"12345"},"tags":{"a":"b"},"at":"2026-01-02T03:04:05Z","email":"a@b.co","ratio":0.5,"blob":"AAE="}`)
	seeds := []struct {
		value      []byte
		msgType    string
		hasMsgType bool
		headers    []byte // more headers: key\x00value\x00key\x00value...
		topic      uint8
	}{
		{valid, "order.placed", true, []byte("ce_id\x00abc"), 0},
		{valid, "order.placed", false, nil, 0},
		{valid, "order.placed", false, []byte("x\x00y"), 0},
		{valid, "order.placed", true, nil, 1},
		{valid, "OrderPlaced", true, nil, 0},
		{[]byte(`{"n":1}`), "ping", true, nil, 0},
		{[]byte(`{"id":"o-1","amount":0}`), "order.placed", true, nil, 0},
		{[]byte(`{"id":"o-1","amount":1,"lines":[{}]}`), "order.placed", true, nil, 0},
		{[]byte(`{"id":"o-1","amount":1,"tags":{"1":"","2":"","3":"","4":"","5":"","6":""}}`), "order.placed", true, nil, 0},
		{[]byte(`{"id":"o-1","amount":"ten"}`), "order.placed", true, nil, 0},
		{[]byte(`{"id":"o-1","amount":1e400}`), "order.placed", true, nil, 0},
		{[]byte(`{"id":"o-1","amount":1,"at":"yesterday"}`), "order.placed", true, nil, 0},
		{[]byte(`{"id":"o-1","amount":1,"blob":"!!"}`), "order.placed", true, nil, 0},
		{[]byte(`{"id":"o-1","amount":1,"addr":null,"lines":null}`), "order.placed", true, nil, 0},
		{[]byte(`{"id":"o-1","amount":1,"addr":{"zip":"1"}}`), "order.placed", true, nil, 0},
		{[]byte(`{"id":"o-1","amount":1,"email":"no"}`), "order.placed", true, nil, 0},
		{[]byte(`null`), "order.placed", true, nil, 0},
		{[]byte(`[]`), "order.placed", true, nil, 0},
		{[]byte(`"str"`), "order.placed", true, nil, 0},
		{[]byte(`{"id":"\ud800","amount":1}`), "order.placed", true, nil, 0},
		{[]byte(`{"id":"o-1","amount":1}{}`), "order.placed", true, nil, 0},
		{[]byte(`{`), "order.placed", true, nil, 0},
		{[]byte{}, "order.placed", true, nil, 0},
		{[]byte{0xff, 0xfe, 0x00}, "order.placed", true, nil, 0},
		{valid, "", true, nil, 0},
		{valid, "\xff\x00", true, nil, 0},
		{valid, "order.placed", true, []byte("msg_type\x00ping"), 0},
		{[]byte(`{"n":1}`), "ping", true, nil, 2},
	}
	for _, s := range seeds {
		f.Add(s.value, s.msgType, s.hasMsgType, s.headers, s.topic)
	}
	table := fuzzTable(f)
	topics := []string{"fuzz-orders", "other-topic", ""}
	kinds := map[ErrorKind]bool{KindDecode: true, KindValidation: true, KindUnknownType: true}

	f.Fuzz(func(t *testing.T, value []byte, msgType string, hasMsgType bool, headers []byte, topic uint8) {
		rec := transport.Record{Topic: topics[int(topic)%len(topics)], Partition: 1, Offset: 42, Key: []byte("k"), Value: value}
		if hasMsgType {
			rec.Headers = append(rec.Headers, transport.Header{Key: HeaderMsgType, Value: []byte(msgType)})
		}
		if len(headers) > 0 {
			parts := bytes.Split(headers, []byte{0})
			for i := 0; i+1 < len(parts); i += 2 {
				rec.Headers = append(rec.Headers, transport.Header{Key: string(parts[i]), Value: parts[i+1]})
			}
		}

		rt, msg, err := table.decode(&rec)
		if err == nil {
			if rt == nil || msg == nil {
				t.Fatalf("no error but route %v, message %v", rt, msg)
			}
			if reflect.TypeOf(msg) != reflect.PointerTo(rt.info.typ) {
				t.Fatalf("message of type %T for route %s", msg, rt.info.typ)
			}
			if name, _ := headerValue(rec.Headers, HeaderMsgType); string(name) != rt.info.name || rec.Topic != rt.info.topic {
				t.Fatalf("record %s/%q routed to %s/%q", rec.Topic, name, rt.info.topic, rt.info.name)
			}
			if verr := validate.Struct(msg); verr != nil {
				t.Fatalf("decoded message does not validate: %v", verr)
			}
			if _, jerr := json.Marshal(msg); jerr != nil {
				t.Fatalf("decoded message does not encode: %v", jerr)
			}
			return
		}
		if rt != nil || msg != nil {
			t.Fatalf("error %v with route %v and message %v", err, rt, msg)
		}
		var de *DecodeError
		if !errors.As(err, &de) {
			t.Fatalf("error %T (%v) is not a *DecodeError", err, err)
		}
		if !kinds[de.Kind] {
			t.Fatalf("DecodeError kind %q is not a decode-side kind", de.Kind)
		}
		if de.Topic != rec.Topic || de.Partition != int(rec.Partition) || de.Offset != rec.Offset {
			t.Fatalf("DecodeError locates %s/%d@%d, record is %s/%d@%d", de.Topic, de.Partition, de.Offset, rec.Topic, rec.Partition, rec.Offset)
		}
		if err.Error() == "" {
			t.Fatal("empty error text")
		}
		switch de.Kind {
		case KindUnknownType:
			if !errors.Is(err, ErrUnknownType) {
				t.Fatalf("unknown_type error does not match ErrUnknownType: %v", err)
			}
		case KindValidation:
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("validation error does not match ErrInvalid: %v", err)
			}
		}
		if !hasMsgType && de.Kind != KindUnknownType {
			if _, ok := headerValue(rec.Headers, HeaderMsgType); !ok {
				t.Fatalf("no msg_type header but kind %q", de.Kind)
			}
		}

		// The dead letter of the record carries the kind and the record.
		dl := deadLetter(&rec, rec.Topic+".dlq", de.Kind, "", 1, err)
		if k, _ := headerValue(dl.Headers, HeaderErrorKind); string(k) != string(de.Kind) {
			t.Fatalf("dead letter kind %q, want %q", k, de.Kind)
		}
		if !bytes.Equal(dl.Value, rec.Value) || !bytes.Equal(dl.Key, rec.Key) {
			t.Fatal("dead letter does not keep the record's key and value")
		}
	})
}
