package kavari

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strconv"
	"time"

	"github.com/kavari-go/kavari/internal/transport"

	"github.com/kavari-go/kavari/validate"
)

// Header names of the wire format (see the README's "Wire format").
const (
	HeaderMsgType           = "msg_type" // logical type name; the Python kavari routes on it
	HeaderSpecVersion       = "ce_specversion"
	HeaderID                = "ce_id"
	HeaderType              = "ce_type"
	HeaderSource            = "ce_source"
	HeaderTime              = "ce_time"
	HeaderContentType       = "content-type"
	HeaderVersion           = "kavari_version"
	HeaderOriginalError     = "original_error"
	HeaderOriginalTopic     = "kavari_original_topic"
	HeaderOriginalPartition = "kavari_original_partition"
	HeaderOriginalOffset    = "kavari_original_offset"
	HeaderAttempts          = "kavari_attempts"
	HeaderErrorKind         = "kavari_error_kind"
	HeaderHandler           = "kavari_handler"
	HeaderTruncated         = "kavari_truncated" // a dead letter's value was left out; its size
)

// Header is a record header. User headers set with WithHeaders travel with the
// message untouched and are copied into dead letters.
type Header struct {
	Key   string
	Value []byte
}

type headersKey struct{}

// WithHeaders returns a context whose Publish calls add headers hs to the
// message (correlation ids, trace context). A user header named like one of
// kavari's replaces kavari's value (a caller may set ce_id to keep one id
// across its own retries).
func WithHeaders(ctx context.Context, hs ...Header) context.Context {
	prev, _ := ctx.Value(headersKey{}).([]Header)
	all := make([]Header, 0, len(prev)+len(hs))
	all = append(append(all, prev...), hs...)
	return context.WithValue(ctx, headersKey{}, all)
}

// Record describes the Kafka record a handler is working on. Handlers get it
// with RecordFromContext.
type Record struct {
	Topic     string
	Partition int
	Offset    int64
	Key       []byte
	Headers   []Header
	ID        string    // ce_id: unique per published message, the same on redelivery
	Type      string    // msg_type: the first one when a record has several, the one it was routed on
	Time      time.Time // ce_time, or the record timestamp
	Attempt   int       // 1 on first delivery to this handler, 2 on its first retry, ...
	// Handler names the handler the context belongs to, as in logs and the
	// kavari_handler header of dead letters ("" outside a handler's attempt,
	// as in a publish hook's Record).
	Handler string
	// RetryTier is the retry tier (Consume.RetryTopics) the record is
	// handled in: 0 on its main topic, n in tier n's topic (its
	// kavari_retry_tier header). In HookRetryScheduled it is the tier the
	// retry runs in: 0 for an in-place retry, the next tier for a move to it.
	RetryTier int
}

type recordKey struct{}

// RecordFromContext returns the record being handled, when ctx is a handler's.
func RecordFromContext(ctx context.Context) (*Record, bool) {
	r, ok := ctx.Value(recordKey{}).(*Record)
	return r, ok
}

// BatchRecordFromContext returns the record at index i of the batch being
// handled, when ctx is a batch handler's (BatchHandler) and i is in the
// batch: its topic, partition, offset, key, headers, ce_id and the attempt
// of the batch (Record.Attempt). In a batch handler RecordFromContext
// reports no record.
func BatchRecordFromContext(ctx context.Context, i int) (*Record, bool) {
	b, ok := ctx.Value(batchKey{}).(*batchCtx)
	if !ok || i < 0 || i >= len(b.jobs) {
		return nil, false
	}
	name := ""
	if b.b != nil {
		name = b.b.name
	}
	return recordOf(b.jobs[i].rec, b.attempt, name), true
}

type batchKey struct{}

// appendID appends a random RFC 4122 version 4 UUID to dst.
func appendID(dst []byte) []byte {
	const hex = "0123456789abcdef"
	var b [16]byte
	a, c := rand.Uint64(), rand.Uint64()
	for i := 0; i < 8; i++ {
		b[i] = byte(a >> (8 * i))
		b[8+i] = byte(c >> (8 * i))
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	for i, x := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			dst = append(dst, '-')
		}
		dst = append(dst, hex[x>>4], hex[x&0x0f])
	}
	return dst
}

// Header values that never change, shared by every record (the transports
// only read them).
var (
	specVersion1 = []byte("1.0")
)

// encoder turns messages into records.
type encoder struct {
	source   []byte
	maxBytes int
	now      func() time.Time
	reg      *Registry // codecs set with SetCodec; nil: the tags' codecs
	// noValidate skips validation: kavaritest delivers invalid messages as
	// another producer could have written them.
	noValidate bool
	// names maps the tags' topics to real ones (Config.Topics.Name); nil: the tags' topics.
	names *topicNames
}

func newEncoder(source string, maxBytes int, now func() time.Time) *encoder {
	return &encoder{source: []byte(source), maxBytes: maxBytes, now: now}
}

// encode validates msg and returns its record.
func (e *encoder) encode(ctx context.Context, msg any) (transport.Record, error) {
	info, v, err := messageValue(msg)
	if err != nil {
		return transport.Record{}, err
	}
	topic, err := e.names.of(info.topic)
	if err != nil {
		return transport.Record{}, err
	}
	if err := validate.Struct(msg); err != nil && !e.noValidate {
		return transport.Record{}, err
	}
	// One buffer holds the key, ce_id and ce_time; the headers point into it.
	buf := make([]byte, 0, 80)
	buf, err = info.appendKey(buf, v)
	if err != nil {
		return transport.Record{}, err
	}
	var key []byte
	if len(buf) > 0 {
		key = buf[:len(buf):len(buf)]
	}
	codec := e.codecOf(info)
	value, err := codec.marshal(msg)
	if err != nil {
		return transport.Record{}, fmt.Errorf("kavari: encode %s: %w", info.goName, err)
	}
	if e.maxBytes > 0 && len(value)+len(key) > e.maxBytes {
		return transport.Record{}, fmt.Errorf("%w: %s is %d bytes encoded, over the %d-byte limit (Config.Publish.MaxMessageBytes)", ErrTooLarge, info.goName, len(value)+len(key), e.maxBytes)
	}
	n := len(buf)
	buf = appendID(buf)
	id := buf[n:len(buf):len(buf)]
	n = len(buf)
	buf = e.now().UTC().AppendFormat(buf, time.RFC3339Nano)
	at := buf[n:len(buf):len(buf)]

	hs := make([]transport.Header, 7, 8)
	hs[0] = transport.Header{Key: HeaderMsgType, Value: info.nameBytes}
	hs[1] = transport.Header{Key: HeaderSpecVersion, Value: specVersion1}
	hs[2] = transport.Header{Key: HeaderID, Value: id}
	hs[3] = transport.Header{Key: HeaderType, Value: info.nameBytes}
	hs[4] = transport.Header{Key: HeaderSource, Value: e.source}
	hs[5] = transport.Header{Key: HeaderTime, Value: at}
	hs[6] = transport.Header{Key: HeaderContentType, Value: codec.contentType}
	if info.version != "" {
		hs = append(hs, transport.Header{Key: HeaderVersion, Value: info.versionBytes})
	}
	if user, _ := ctx.Value(headersKey{}).([]Header); len(user) > 0 {
		hs = mergeHeaders(hs, user)
	}
	return transport.Record{Topic: topic, Key: key, Value: value, Headers: hs}, nil
}

func mergeHeaders(hs []transport.Header, user []Header) []transport.Header {
next:
	for _, u := range user {
		for i := range hs {
			if hs[i].Key == u.Key {
				hs[i].Value = u.Value
				continue next
			}
		}
		hs = append(hs, transport.Header{Key: u.Key, Value: u.Value})
	}
	return hs
}

func headerValue(hs []transport.Header, key string) ([]byte, bool) {
	for _, h := range hs {
		if h.Key == key {
			return h.Value, true
		}
	}
	return nil, false
}

// decode turns a record into a new message of its registered type, validated.
// A record with several msg_type headers is routed on the first, and its
// Record (RecordFromContext) reports that one. Every failure is a *DecodeError saying where the record is and what kind of
// failure it was.
func (t *routeTable) decode(rec *transport.Record) (*route, any, error) {
	return t.decodeOn(rec, rec.Topic)
}

// decodeOn is decode with the types registered on topic (a retry topic's
// record is decoded as its main topic's).
func (t *routeTable) decodeOn(rec *transport.Record, topic string) (*route, any, error) {
	fail := func(kind ErrorKind, msgType string, err error) (*route, any, error) {
		return nil, nil, &DecodeError{Kind: kind, Topic: rec.Topic, Partition: int(rec.Partition), Offset: rec.Offset, MsgType: msgType, Err: err}
	}
	name, ok := headerValue(rec.Headers, HeaderMsgType)
	if !ok {
		if len(rec.Headers) == 0 {
			return fail(KindUnknownType, "", fmt.Errorf("%w: the record has no headers", ErrUnknownType))
		}
		return fail(KindUnknownType, "", fmt.Errorf("%w: no %s header", ErrUnknownType, HeaderMsgType))
	}
	rt := t.lookup(topic, string(name))
	if rt == nil {
		return fail(KindUnknownType, string(name), fmt.Errorf("%w: %q is not registered on topic %q", ErrUnknownType, name, topic))
	}
	msg, err := rt.decode(rec)
	if err != nil {
		return nil, nil, err
	}
	return rt, msg, nil
}

// decode turns rec, whose msg_type names rt, into a new message of rt's
// type, validated; a failure is a *DecodeError.
func (rt *route) decode(rec *transport.Record) (any, error) {
	ptr := reflect.New(rt.info.typ)
	if err := rt.codec.unmarshal(rec.Value, ptr.Interface()); err != nil {
		return nil, &DecodeError{Kind: KindDecode, Topic: rec.Topic, Partition: int(rec.Partition), Offset: rec.Offset, MsgType: rt.info.name,
			Err: fmt.Errorf("value is not %s of %s: %w", rt.codec.what, rt.info.goName, err)}
	}
	msg := ptr.Interface()
	if err := validate.Struct(msg); err != nil {
		return nil, &DecodeError{Kind: KindValidation, Topic: rec.Topic, Partition: int(rec.Partition), Offset: rec.Offset, MsgType: rt.info.name, Err: err}
	}
	return msg, nil
}

// recordOf describes rec for a handler's context (handler: its name) or a
// hook (handler: "" for a publish hook).
func recordOf(rec *transport.Record, attempt int, handler string) *Record {
	r := &Record{
		Topic: rec.Topic, Partition: int(rec.Partition), Offset: rec.Offset, Key: rec.Key,
		Time: rec.Time, Attempt: attempt, Handler: handler,
	}
	r.Headers = make([]Header, len(rec.Headers))
	for i, h := range rec.Headers {
		r.Headers[i] = Header{Key: h.Key, Value: h.Value}
	}
	// The first header of a name wins, as in decode's routing (headerValue).
	if v, ok := headerValue(rec.Headers, HeaderID); ok {
		r.ID = string(v)
	}
	if v, ok := headerValue(rec.Headers, HeaderMsgType); ok {
		r.Type = string(v)
	}
	if v, ok := headerValue(rec.Headers, HeaderTime); ok {
		if t, err := time.Parse(time.RFC3339Nano, string(v)); err == nil {
			r.Time = t
		}
	}
	if v, ok := headerValue(rec.Headers, HeaderRetryTier); ok {
		r.RetryTier, _ = strconv.Atoi(string(v))
	}
	return r
}
