package kavari_test

import (
	"context"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/validate"
)

var ktUUIDv4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func ktHeaderMap(rec kafka.Message) map[string][]string { return ktHeadersOf(rec.Headers) }
func ktHeadersOf(hs []kafka.Header) map[string][]string {
	m := map[string][]string{}
	for _, h := range hs {
		m[h.Key] = append(m[h.Key], string(h.Value))
	}
	return m
}
func ktOne(t *testing.T, hs map[string][]string, key string) string {
	t.Helper()
	require.Len(t, hs[key], 1, "header %s: %v", key, hs[key])
	return hs[key][0]
}

type ktEnvItem struct {
	SKU  string   `json:"sku"`
	Qty  int      `json:"qty"`
	Tags []string `json:"tags,omitempty"`
}

type ktEnvAddr struct {
	Street string  `json:"street"`
	Zip    *string `json:"zip"`
}

type ktEnvFull struct {
	kavari.Message `kavari:"topic=kt-envelope,key=ID,name=kt.envelope.full,version=7"`
	Run            string               `json:"run"`
	ID             string               `json:"id" validate:"required"`
	Amount         int64                `json:"amount"`
	Price          float64              `json:"price"`
	Paid           bool                 `json:"paid"`
	Items          []ktEnvItem          `json:"items" validate:"dive"`
	Labels         map[string]string    `json:"labels"`
	ByKey          map[string]ktEnvItem `json:"by_key"`
	Counts         map[int]int          `json:"counts"`
	Ship           *ktEnvAddr           `json:"ship"`
	Bill           *ktEnvAddr           `json:"bill"`
	At             time.Time            `json:"at"`
	Due            *time.Time           `json:"due"`
	Never          *time.Time           `json:"never"`
	Raw            []byte               `json:"raw"`
	Nested         struct {
		Deep struct {
			V []*ktEnvItem `json:"v"`
		} `json:"deep"`
	} `json:"nested"`
	Skipped string `json:"-"`
	NoTag   string
}

type ktEnvPlain struct {
	kavari.Message `kavari:"topic=kt-envelope,key=ID"`
	Run            string `json:"run"`
	ID             string `json:"id" validate:"required"`
	N              int    `json:"n" validate:"gte=0"`
}

func ktFullMessage(run string) *ktEnvFull {
	zip := "75001"
	due := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	m := &ktEnvFull{
		Run: run, ID: "order-1", Amount: -7, Price: 12.5, Paid: true,
		Items:  []ktEnvItem{{SKU: "a", Qty: 1, Tags: []string{"x", "y"}}, {SKU: "b", Qty: 2}},
		Labels: map[string]string{"env": "test", "é": "ü"},
		ByKey:  map[string]ktEnvItem{"k": {SKU: "c", Qty: 3}},
		Counts: map[int]int{1: 10, -2: 20},
		Ship:   &ktEnvAddr{Street: "rue X", Zip: &zip},
		At:     time.Date(2024, 2, 29, 23, 59, 58, 123456789, time.UTC),
		Due:    &due,
		Raw:    []byte{0, 1, 2, 0xff},
		NoTag:  "kept",
	}
	m.Nested.Deep.V = []*ktEnvItem{{SKU: "d"}, nil}
	return m
}

func TestEnvelopeJSONRoundTrip(t *testing.T) {
	reg := kavari.NewRegistry()
	require.NoError(t, reg.Declare(&ktEnvFull{}))
	in := ktFullMessage("r")
	in.Skipped = "not on the wire"
	rec, err := kavari.EncodeRecord(context.Background(), "src", 0, nil, in)
	require.NoError(t, err)

	want, err := json.Marshal(in)
	require.NoError(t, err)
	assert.JSONEq(t, string(want), string(rec.Value), "the value is the struct as encoding/json writes it")
	var top map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(rec.Value, &top))
	assert.NotContains(t, top, "Message", "kavari.Message encodes to nothing")
	assert.NotContains(t, top, "Skipped")
	assert.Contains(t, top, "NoTag")

	out, err := kavari.DecodeRecord(reg, &rec)
	require.NoError(t, err)
	require.IsType(t, &ktEnvFull{}, out)
	in.Skipped = ""
	assert.Equal(t, in, out.(*ktEnvFull))
	assert.Nil(t, out.(*ktEnvFull).Bill)
	assert.Nil(t, out.(*ktEnvFull).Never)

	// A time in another zone keeps its instant.
	in.At = time.Date(2024, 6, 1, 12, 0, 0, 5, time.FixedZone("CEST", 2*3600))
	rec, err = kavari.EncodeRecord(context.Background(), "src", 0, nil, in)
	require.NoError(t, err)
	out, err = kavari.DecodeRecord(reg, &rec)
	require.NoError(t, err)
	assert.True(t, in.At.Equal(out.(*ktEnvFull).At), "%v vs %v", in.At, out.(*ktEnvFull).At)
}

func TestEnvelopeHeaders(t *testing.T) {
	at := time.Date(2025, 3, 4, 5, 6, 7, 890000000, time.FixedZone("X", -5*3600))
	ctx := context.Background()

	rec, err := kavari.EncodeRecord(ctx, "svc-billing", 0, func() time.Time { return at }, ktFullMessage("r"))
	require.NoError(t, err)
	assert.Equal(t, "kt-envelope", rec.Topic)
	assert.Equal(t, []byte("order-1"), rec.Key)
	hs := ktHeaderMap(rec)
	assert.Equal(t, "kt.envelope.full", ktOne(t, hs, kavari.HeaderMsgType))
	assert.Equal(t, "1.0", ktOne(t, hs, kavari.HeaderSpecVersion))
	assert.Regexp(t, ktUUIDv4, ktOne(t, hs, kavari.HeaderID))
	assert.Equal(t, "kt.envelope.full", ktOne(t, hs, kavari.HeaderType))
	assert.Equal(t, "svc-billing", ktOne(t, hs, kavari.HeaderSource))
	assert.Equal(t, "application/json", ktOne(t, hs, kavari.HeaderContentType))
	assert.Equal(t, "7", ktOne(t, hs, kavari.HeaderVersion))
	ceTime := ktOne(t, hs, kavari.HeaderTime)
	parsed, err := time.Parse(time.RFC3339, ceTime)
	require.NoError(t, err, "ce_time is RFC 3339: %s", ceTime)
	assert.True(t, parsed.Equal(at), "ce_time %s is the clock's time %v", ceTime, at)
	assert.True(t, strings.HasSuffix(ceTime, "Z"), "ce_time is in UTC: %s", ceTime)
	assert.Len(t, rec.Headers, 8, "no other header: %v", hs)

	// No version, no kavari_version header.
	rec, err = kavari.EncodeRecord(ctx, "svc", 0, nil, &ktEnvPlain{ID: "p"})
	require.NoError(t, err)
	hs = ktHeaderMap(rec)
	assert.NotContains(t, hs, kavari.HeaderVersion)
	assert.Equal(t, "ktEnvPlain", ktOne(t, hs, kavari.HeaderMsgType))
	assert.Equal(t, "ktEnvPlain", ktOne(t, hs, kavari.HeaderType))
	assert.Len(t, rec.Headers, 7)
}

func TestEnvelopeIDsUnique(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 2000; i++ {
		rec, err := kavari.EncodeRecord(context.Background(), "s", 0, nil, &ktEnvPlain{ID: "p"})
		require.NoError(t, err)
		id := ktOne(t, ktHeaderMap(rec), kavari.HeaderID)
		require.Regexp(t, ktUUIDv4, id)
		require.False(t, seen[id], "ce_id %s twice", id)
		seen[id] = true
	}
}

func TestEnvelopeUserHeaders(t *testing.T) {
	ctx := kavari.WithHeaders(context.Background(),
		kavari.Header{Key: "traceparent", Value: []byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")},
		kavari.Header{Key: "x-bin", Value: []byte{0, 0xff}},
	)
	ctx = kavari.WithHeaders(ctx,
		kavari.Header{Key: "correlation_id", Value: []byte("corr-1")},
		kavari.Header{Key: kavari.HeaderID, Value: []byte("my-own-id")},
	)
	rec, err := kavari.EncodeRecord(ctx, "s", 0, nil, &ktEnvPlain{ID: "p"})
	require.NoError(t, err)
	hs := ktHeaderMap(rec)
	assert.Equal(t, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", ktOne(t, hs, "traceparent"))
	assert.Equal(t, string([]byte{0, 0xff}), ktOne(t, hs, "x-bin"))
	assert.Equal(t, "corr-1", ktOne(t, hs, "correlation_id"), "nested WithHeaders accumulate")
	assert.Equal(t, "my-own-id", ktOne(t, hs, kavari.HeaderID), "a user ce_id replaces kavari's")
	assert.Equal(t, "ktEnvPlain", ktOne(t, hs, kavari.HeaderMsgType))
	assert.Len(t, rec.Headers, 10)

	// The parent context is unchanged.
	rec, err = kavari.EncodeRecord(context.Background(), "s", 0, nil, &ktEnvPlain{ID: "p"})
	require.NoError(t, err)
	assert.NotContains(t, ktHeaderMap(rec), "correlation_id")
}

// The wire format as a consumer outside Go sees it, read back raw from the
// broker.
func TestEnvelopeOnTheWire(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("run")
	reg := kavari.NewRegistry()
	require.NoError(t, reg.Declare(&ktEnvFull{}))
	require.NoError(t, reg.Declare(&ktEnvPlain{}))
	k := ktNew(t, brokers, reg, func(c *kavari.Config) {
		c.CloudEventsSource = "kt-wire-source"
	})
	ctx := kavari.WithHeaders(context.Background(),
		kavari.Header{Key: "correlation_id", Value: []byte(run)},
		kavari.Header{Key: kavari.HeaderID, Value: []byte("fixed-" + run)},
	)
	full := ktFullMessage(run)
	before := time.Now().Round(0) // wall clock: ce_time is the publishing host's time
	_, err := k.Publish(ctx, full)
	require.NoError(t, err)
	_, err = k.Publish(context.Background(), &ktEnvPlain{Run: run, ID: "plain-1", N: 1})
	require.NoError(t, err)
	_, err = k.Publish(context.Background(), &ktEnvPlain{Run: run, ID: "plain-2", N: 2})
	require.NoError(t, err)
	after := time.Now().Round(0)

	recs := ktOfRun(ktRead(t, brokers, "kt-envelope"), run)
	require.Len(t, recs, 3)
	var ids []string
	for _, r := range recs {
		hs := ktHeaderMap(r)
		assert.Equal(t, "1.0", ktOne(t, hs, kavari.HeaderSpecVersion))
		assert.Equal(t, "kt-wire-source", ktOne(t, hs, kavari.HeaderSource))
		assert.Equal(t, "application/json", ktOne(t, hs, kavari.HeaderContentType))
		assert.Equal(t, ktOne(t, hs, kavari.HeaderMsgType), ktOne(t, hs, kavari.HeaderType))
		ts, err := time.Parse(time.RFC3339, ktOne(t, hs, kavari.HeaderTime))
		require.NoError(t, err)
		assert.False(t, ts.Before(before) || ts.After(after), "ce_time %v is when it was published, between %v and %v", ts, before, after)
		ids = append(ids, ktOne(t, hs, kavari.HeaderID))

		switch string(r.Key) {
		case "order-1":
			assert.Equal(t, "kt.envelope.full", ktOne(t, hs, kavari.HeaderMsgType))
			assert.Equal(t, "7", ktOne(t, hs, kavari.HeaderVersion))
			assert.Equal(t, run, ktOne(t, hs, "correlation_id"))
			assert.Equal(t, "fixed-"+run, ktOne(t, hs, kavari.HeaderID))
			out, err := kavari.DecodeRecord(reg, &r)
			require.NoError(t, err)
			assert.Equal(t, full, out)
		case "plain-1", "plain-2":
			assert.Equal(t, "ktEnvPlain", ktOne(t, hs, kavari.HeaderMsgType))
			assert.NotContains(t, hs, kavari.HeaderVersion)
			assert.NotContains(t, hs, "correlation_id")
			assert.Regexp(t, ktUUIDv4, ktOne(t, hs, kavari.HeaderID))
		default:
			t.Fatalf("unexpected key %q", r.Key)
		}
	}
	assert.Len(t, map[string]bool{ids[0]: true, ids[1]: true, ids[2]: true}, 3, "ce_id is unique per message")
}

// ---- decode failures ----

type ktEnvOther struct {
	kavari.Message `kavari:"topic=kt-envelope-other"`
	ID             string `json:"id"`
}

func TestDecodeErrors(t *testing.T) {
	reg := kavari.NewRegistry()
	require.NoError(t, reg.Declare(&ktEnvPlain{}))
	require.NoError(t, reg.Declare(&ktEnvOther{}))
	require.NoError(t, reg.Declare(&ktEnvFull{}))
	good, err := kavari.EncodeRecord(context.Background(), "s", 0, nil, &ktEnvPlain{ID: "p", N: 3})
	require.NoError(t, err)
	headers := good.Headers
	withType := func(name string) []kafka.Header {
		return []kafka.Header{{Key: kavari.HeaderMsgType, Value: []byte(name)}, {Key: "x", Value: []byte("y")}}
	}

	for _, tc := range []struct {
		name    string
		topic   string
		headers []kafka.Header
		value   string
		kind    kavari.ErrorKind
		msgType string
		is      error
		check   func(t *testing.T, err error)
	}{
		{name: "no headers", headers: nil, value: `{"id":"p"}`, kind: kavari.KindUnknownType, is: kavari.ErrUnknownType,
			check: func(t *testing.T, err error) { assert.Contains(t, err.Error(), "no headers") }},
		{name: "no msg_type", headers: []kafka.Header{{Key: "ce_type", Value: []byte("ktEnvPlain")}}, value: `{"id":"p"}`, kind: kavari.KindUnknownType, is: kavari.ErrUnknownType,
			check: func(t *testing.T, err error) { assert.Contains(t, err.Error(), "no msg_type header") }},
		{name: "unknown type", headers: withType("nope"), value: `{"id":"p"}`, kind: kavari.KindUnknownType, msgType: "nope", is: kavari.ErrUnknownType},
		{name: "type registered on another topic", headers: withType("ktEnvOther"), value: `{"id":"p"}`, kind: kavari.KindUnknownType, msgType: "ktEnvOther", is: kavari.ErrUnknownType},
		{name: "the Go name is not the logical name", topic: "kt-envelope", headers: withType("ktEnvFull"), value: `{"id":"p"}`, kind: kavari.KindUnknownType, msgType: "ktEnvFull", is: kavari.ErrUnknownType},
		{name: "empty value", headers: headers, value: "", kind: kavari.KindDecode, msgType: "ktEnvPlain",
			check: func(t *testing.T, err error) { assert.Contains(t, err.Error(), "empty value") }},
		{name: "invalid JSON", headers: headers, value: `{"id":`, kind: kavari.KindDecode, msgType: "ktEnvPlain",
			check: func(t *testing.T, err error) {
				var se *json.SyntaxError
				assert.ErrorAs(t, err, &se)
			}},
		{name: "not an object", headers: headers, value: `[1,2]`, kind: kavari.KindDecode, msgType: "ktEnvPlain"},
		{name: "wrong field types", headers: headers, value: `{"id":5,"n":"three"}`, kind: kavari.KindDecode, msgType: "ktEnvPlain",
			check: func(t *testing.T, err error) {
				var ue *json.UnmarshalTypeError
				assert.ErrorAs(t, err, &ue)
			}},
		{name: "validation failure", headers: headers, value: `{"id":"","n":-1}`, kind: kavari.KindValidation, msgType: "ktEnvPlain", is: kavari.ErrInvalid,
			check: func(t *testing.T, err error) {
				var verr *validate.Error
				require.ErrorAs(t, err, &verr)
				require.Len(t, verr.Fields, 2)
				assert.Equal(t, "id", verr.Fields[0].Path)
				assert.Equal(t, "required", verr.Fields[0].Rule)
				assert.Equal(t, "n", verr.Fields[1].Path)
				assert.Equal(t, "gte", verr.Fields[1].Rule)
				assert.Equal(t, -1, verr.Fields[1].Value)
			}},
		{name: "JSON null is the zero value, then invalid", headers: headers, value: `null`, kind: kavari.KindValidation, msgType: "ktEnvPlain", is: kavari.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			topic := tc.topic
			if topic == "" {
				topic = "kt-envelope"
			}
			rec := &kafka.Message{Topic: topic, Partition: 4, Offset: 1234, Key: []byte("p"), Headers: tc.headers, Value: []byte(tc.value)}
			msg, err := kavari.DecodeRecord(reg, rec)
			require.Error(t, err)
			assert.Nil(t, msg)
			var de *kavari.DecodeError
			require.ErrorAs(t, err, &de)
			assert.Equal(t, tc.kind, de.Kind)
			assert.Equal(t, topic, de.Topic)
			assert.Equal(t, 4, de.Partition)
			assert.Equal(t, int64(1234), de.Offset)
			assert.Equal(t, tc.msgType, de.MsgType)
			assert.Contains(t, err.Error(), topic+"/4@1234")
			assert.Contains(t, err.Error(), string(tc.kind))
			if tc.is != nil {
				assert.ErrorIs(t, err, tc.is)
			}
			if tc.kind != kavari.KindValidation {
				assert.NotErrorIs(t, err, kavari.ErrInvalid)
			}
			if tc.check != nil {
				tc.check(t, err)
			}
		})
	}

	msg, err := kavari.DecodeRecord(reg, &kafka.Message{Topic: "kt-envelope", Headers: headers, Value: good.Value})
	require.NoError(t, err)
	assert.Equal(t, &ktEnvPlain{ID: "p", N: 3}, msg)
	// Unknown JSON fields are ignored, as encoding/json does.
	msg, err = kavari.DecodeRecord(reg, &kafka.Message{Topic: "kt-envelope", Headers: withType("ktEnvPlain"), Value: []byte(`{"id":"q","extra":true}`)})
	require.NoError(t, err)
	assert.Equal(t, &ktEnvPlain{ID: "q"}, msg)
}

// ---- dead letters ----

func TestDeadLetterRecord(t *testing.T) {
	rec := &kafka.Message{
		Topic: "kt-orders", Partition: 7, Offset: 42,
		Key: []byte("order-1"), Value: []byte(`{"id":"order-1"}`),
		Headers: []kafka.Header{
			{Key: kavari.HeaderMsgType, Value: []byte("order.placed")},
			{Key: kavari.HeaderID, Value: []byte("id-1")},
			{Key: "traceparent", Value: []byte("tp")},
			{Key: "dup", Value: []byte("1")},
			{Key: "dup", Value: []byte("2")},
		},
	}
	dl := kavari.DeadLetterRecord(rec, "kt-orders.dlq", kavari.KindHandler, "*billing.Handler", 3, errors.New("boom: db down"))
	assert.Equal(t, "kt-orders.dlq", dl.Topic)
	assert.Equal(t, rec.Key, dl.Key)
	assert.Equal(t, rec.Value, dl.Value)
	assert.Equal(t, rec.Headers, dl.Headers[:len(rec.Headers)], "the original headers come first, untouched")
	hs := ktHeaderMap(dl)
	assert.Equal(t, "boom: db down", ktOne(t, hs, kavari.HeaderOriginalError))
	assert.Equal(t, "kt-orders", ktOne(t, hs, kavari.HeaderOriginalTopic))
	assert.Equal(t, "7", ktOne(t, hs, kavari.HeaderOriginalPartition))
	assert.Equal(t, "42", ktOne(t, hs, kavari.HeaderOriginalOffset))
	assert.Equal(t, "3", ktOne(t, hs, kavari.HeaderAttempts))
	assert.Equal(t, "handler", ktOne(t, hs, kavari.HeaderErrorKind))
	assert.Equal(t, "*billing.Handler", ktOne(t, hs, kavari.HeaderHandler))
	assert.Equal(t, []string{"1", "2"}, hs["dup"], "repeated user headers are kept")
	assert.Len(t, dl.Headers, len(rec.Headers)+7)
	// The original record is not modified.
	assert.Len(t, rec.Headers, 5)

	for _, kind := range []kavari.ErrorKind{kavari.KindDecode, kavari.KindValidation, kavari.KindUnknownType} {
		dl := kavari.DeadLetterRecord(rec, "kt-orders.dlq", kind, "", 1, errors.New("bad"))
		hs := ktHeaderMap(dl)
		assert.Equal(t, string(kind), ktOne(t, hs, kavari.HeaderErrorKind))
		assert.NotContains(t, hs, kavari.HeaderHandler, "no handler ran")
		assert.Equal(t, "1", ktOne(t, hs, kavari.HeaderAttempts))
	}
}

// A dead letter of a dead letter (a record replayed from the DLQ that fails
// again) carries the new failure's headers only, once each.
func TestDeadLetterReplacesExistingHeaders(t *testing.T) {
	first := kavari.DeadLetterRecord(&kafka.Message{
		Topic: "kt-orders", Partition: 1, Offset: 10, Key: []byte("k"), Value: []byte(`{}`),
		Headers: []kafka.Header{{Key: kavari.HeaderMsgType, Value: []byte("order.placed")}},
	}, "kt-orders.dlq", kavari.KindHandler, "*old.Handler", 5, errors.New("old failure"))
	// Replayed onto another topic, then failing again.
	replayed := first
	replayed.Topic, replayed.Partition, replayed.Offset = "kt-replay", 2, 99

	second := kavari.DeadLetterRecord(&replayed, "kt-replay.dlq", kavari.KindHandler, "*new.Handler", 2, errors.New("new failure"))
	hs := ktHeaderMap(second)
	assert.Equal(t, "new failure", ktOne(t, hs, kavari.HeaderOriginalError))
	assert.Equal(t, "kt-replay", ktOne(t, hs, kavari.HeaderOriginalTopic))
	assert.Equal(t, "2", ktOne(t, hs, kavari.HeaderOriginalPartition))
	assert.Equal(t, "99", ktOne(t, hs, kavari.HeaderOriginalOffset))
	assert.Equal(t, "2", ktOne(t, hs, kavari.HeaderAttempts))
	assert.Equal(t, "handler", ktOne(t, hs, kavari.HeaderErrorKind))
	assert.Equal(t, "*new.Handler", ktOne(t, hs, kavari.HeaderHandler))
	assert.Equal(t, "order.placed", ktOne(t, hs, kavari.HeaderMsgType))
	assert.Len(t, second.Headers, 8)

	third := kavari.DeadLetterRecord(&replayed, "kt-replay.dlq", kavari.KindDecode, "", 1, errors.New("undecodable"))
	hs = ktHeaderMap(third)
	assert.Equal(t, "decode", ktOne(t, hs, kavari.HeaderErrorKind))
	assert.Equal(t, "undecodable", ktOne(t, hs, kavari.HeaderOriginalError))
	if len(hs[kavari.HeaderHandler]) > 0 {
		t.Fatalf("regression: envelope.go deadLetter: a failure without a handler keeps the %s header of an earlier dead letter (%q), so a decode dead letter names a handler that never ran", kavari.HeaderHandler, hs[kavari.HeaderHandler])
	}
}
