package kavaritest

import (
	"errors"
	"fmt"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testlink"
	"github.com/kavari-go/kavari/internal/transport"
)

// Record is a Kafka record as the in-memory broker of a Harness holds it:
// one the client published, a dead letter, or one given to
// Harness.DeliverRecord (which sets Partition, from the key, and Offset).
type Record struct {
	Topic     string
	Partition int
	Offset    int64
	Key       []byte
	Value     []byte
	Headers   []kavari.Header

	h *Harness // whose codecs Decode uses; nil: the tags' codecs
}

// Header returns the value of the first header named key.
func (r Record) Header(key string) (string, bool) {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

// Decode decodes r's value into a new T (a kavari message struct type) with
// the codec the Harness's client uses for T (the tag's codec=, one set with
// Registry.SetCodec, or JSON). It fails when r's msg_type header does not
// name T: the record is another type's. It does not validate the message.
func Decode[T any](r Record) (*T, error) {
	msg := new(T)
	var client any
	if r.h != nil {
		client = r.h.client
	}
	name, err := testlink.Decode(client, r.Value, msg)
	if name == "" && err != nil {
		return nil, err // T is not a message type
	}
	if got, _ := r.Header(kavari.HeaderMsgType); got != name {
		return nil, fmt.Errorf("kavaritest: record %s/%d@%d is msg_type %q, not %q (%T)", r.Topic, r.Partition, r.Offset, got, name, msg)
	}
	if err != nil {
		return nil, fmt.Errorf("kavaritest: decode record %s/%d@%d as %T: %w", r.Topic, r.Partition, r.Offset, msg, err)
	}
	return msg, nil
}

// DeadLetter is a record the consumer wrote to a dead-letter topic
// (<topic>.dlq by default): the original key, value and headers, plus the
// headers kavari adds, of which the main ones are decoded here.
type DeadLetter struct {
	Record
	Kind    kavari.ErrorKind // kavari_error_kind: decode, validation, unknown_type or handler
	Handler string           // kavari_handler: the handler that gave up; "" for a poison record
	Error   string           // original_error: the cause, as text
}

// Result says how the consumer finished a record.
type Result int

const (
	// Handled: every handler of the record's type returned nil (after
	// retries, if any).
	Handled Result = iota + 1
	// DeadLettered: the record was written to the dead-letter topic, as
	// poison (undecodable, invalid, unknown type) or because a handler kept
	// failing.
	DeadLettered
	// Skipped: no handler ran and nothing was dead-lettered: a record of
	// unknown type with Config.Relaxed, or of a type declared without
	// handlers on a consumed topic.
	Skipped
)

func (r Result) String() string {
	switch r {
	case Handled:
		return "handled"
	case DeadLettered:
		return "dead-lettered"
	case Skipped:
		return "skipped"
	}
	return fmt.Sprintf("Result(%d)", int(r))
}

// Outcome is how the consumer finished one delivered record.
type Outcome struct {
	Result Result
	// Record is the record delivered, with its partition and offset.
	Record Record
	// Attempts counts handler attempts, retries included, summed over the
	// handlers of the record's type (0 for a poison record); for a batch
	// handler, the calls whose batch held the record.
	Attempts int
	// Kind, Handler and Err describe the dead letter (DeadLettered): why,
	// which handler gave up ("" for a poison record), and the cause as the
	// consumer had it: errors.As finds a *kavari.HandlerError or a
	// *kavari.DecodeError in it. A type with several handlers can be
	// dead-lettered once per failing handler: these describe the first, and
	// Harness.DeadLetters lists every one.
	Kind    kavari.ErrorKind
	Handler string
	Err     error
}

func (o Outcome) String() string {
	where := fmt.Sprintf("%s/%d@%d", o.Record.Topic, o.Record.Partition, o.Record.Offset)
	switch o.Result {
	case DeadLettered:
		if o.Handler != "" {
			return fmt.Sprintf("%s dead-lettered (%s) by %s after %d attempts: %v", where, o.Kind, o.Handler, o.Attempts, o.Err)
		}
		return fmt.Sprintf("%s dead-lettered (%s): %v", where, o.Kind, o.Err)
	case Handled:
		return fmt.Sprintf("%s handled in %d attempts", where, o.Attempts)
	}
	return fmt.Sprintf("%s %v", where, o.Result)
}

// recordOf converts rec, kept by h.
func (h *Harness) recordOf(rec *transport.Record) Record {
	r := Record{Topic: rec.Topic, Partition: int(rec.Partition), Offset: rec.Offset, Key: rec.Key, Value: rec.Value, h: h}
	for _, x := range rec.Headers {
		r.Headers = append(r.Headers, kavari.Header{Key: x.Key, Value: x.Value})
	}
	return r
}

// toTransport converts r for producing.
func (r Record) toTransport() *transport.Record {
	rec := &transport.Record{Topic: r.Topic, Key: r.Key, Value: r.Value}
	for _, x := range r.Headers {
		rec.Headers = append(rec.Headers, transport.Header{Key: x.Key, Value: x.Value})
	}
	return rec
}

var errNoTopic = errors.New("kavaritest: the record has no topic")
