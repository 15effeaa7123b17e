package contract

import (
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strings"

	"github.com/kavari-go/kavari"
)

// AsyncAPIVersion is the AsyncAPI version of the documents Build writes.
const AsyncAPIVersion = "3.0.0"

// PayloadFormat is the schemaFormat of message payloads: JSON Schema draft
// 2020-12, which TypeSchema writes.
const PayloadFormat = "application/schema+json;version=draft-2020-12"

// Document is an AsyncAPI 3.0 document, reduced to what describes a kavari
// service: channels (topics), their messages and the service's operations.
type Document struct {
	AsyncAPI           string                `json:"asyncapi"`
	Info               Info                  `json:"info"`
	DefaultContentType string                `json:"defaultContentType,omitempty"`
	Channels           map[string]*Channel   `json:"channels"`
	Operations         map[string]*Operation `json:"operations"`
}

// Info is the document's info object.
type Info struct {
	Title       string `json:"title"`
	Version     string `json:"version"`
	Description string `json:"description,omitempty"`
}

// Channel is one topic.
type Channel struct {
	// Address is the topic name.
	Address     string              `json:"address"`
	Description string              `json:"description,omitempty"`
	Messages    map[string]*Message `json:"messages"`
	Bindings    *ChannelBindings    `json:"bindings,omitempty"`
	// DeadLetterOf is, on a dead-letter channel, the topic whose dead
	// letters it holds.
	DeadLetterOf string `json:"x-kavari-dead-letter-of,omitempty"`
}

// ChannelBindings holds the Kafka channel binding.
type ChannelBindings struct {
	Kafka *KafkaChannelBinding `json:"kafka,omitempty"`
}

// KafkaChannelBinding is the AsyncAPI Kafka channel binding.
type KafkaChannelBinding struct {
	Topic          string `json:"topic"`
	BindingVersion string `json:"bindingVersion"`
}

// Message is one message type on a channel.
type Message struct {
	// Name is the logical type name (msg_type).
	Name        string             `json:"name"`
	Title       string             `json:"title,omitempty"`
	Summary     string             `json:"summary,omitempty"`
	ContentType string             `json:"contentType,omitempty"`
	Headers     *Schema            `json:"headers,omitempty"`
	Payload     *MultiFormatSchema `json:"payload,omitempty"`
	Bindings    *MessageBindings   `json:"bindings,omitempty"`
	// GoType is the Go type, with its package path.
	GoType string `json:"x-kavari-go-type,omitempty"`
	// Version is the tag's version (the kavari_version header).
	Version string `json:"x-kavari-version,omitempty"`
	// KeyField is the field holding the partition key, or
	// "PartitionKey()" for a type that computes it.
	KeyField string `json:"x-kavari-key,omitempty"`
}

// MultiFormatSchema is a payload schema with its format.
type MultiFormatSchema struct {
	SchemaFormat string  `json:"schemaFormat"`
	Schema       *Schema `json:"schema"`
}

// MessageBindings holds the Kafka message binding.
type MessageBindings struct {
	Kafka *KafkaMessageBinding `json:"kafka,omitempty"`
}

// KafkaMessageBinding is the AsyncAPI Kafka message binding: the key schema.
type KafkaMessageBinding struct {
	Key            *Schema `json:"key,omitempty"`
	BindingVersion string  `json:"bindingVersion"`
}

// Operation is something the service does on a channel.
type Operation struct {
	// Action is "send" or "receive".
	Action   string `json:"action"`
	Channel  Ref    `json:"channel"`
	Summary  string `json:"summary,omitempty"`
	Messages []Ref  `json:"messages"`
}

// Ref is an AsyncAPI reference object.
type Ref struct {
	Ref string `json:"$ref"`
}

// Option configures Build.
type Option func(*options)

type options struct {
	title, version, description string
	suffix                      string
	sends, receives             map[reflect.Type]bool
}

// WithInfo sets the document's title, version and description (default:
// "kavari service", "0.0.0", none).
func WithInfo(title, version, description string) Option {
	return func(o *options) { o.title, o.version, o.description = title, version, description }
}

// WithDeadLetterSuffix sets the dead-letter topic suffix; it must match
// the service's Config.Topics.DeadLetterSuffix (default ".dlq").
func WithDeadLetterSuffix(suffix string) Option {
	return func(o *options) { o.suffix = suffix }
}

// Sends limits the message types the service publishes to msgs (pointers
// to message structs). By default every registered type is published.
func Sends(msgs ...any) Option {
	return func(o *options) { o.sends = typeSet(msgs) }
}

// Receives limits the message types the service handles to msgs. By
// default they are the types with at least one handler.
func Receives(msgs ...any) Option {
	return func(o *options) { o.receives = typeSet(msgs) }
}

func typeSet(msgs []any) map[reflect.Type]bool {
	m := map[reflect.Type]bool{}
	for _, v := range msgs {
		t := reflect.TypeOf(v)
		if rt, ok := v.(reflect.Type); ok {
			t = rt
		}
		for t != nil && t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		m[t] = true
	}
	return m
}

var unsafeKey = regexp.MustCompile(`[^\w.-]`)

// key makes s usable as an AsyncAPI map key (letters, digits, _ . -).
func key(s string) string { return unsafeKey.ReplaceAllString(s, "_") }

// Build returns the AsyncAPI 3.0 document of the message types registered on
// reg: a channel per topic and one per dead-letter topic, a message per type
// with its payload, key and header schemas, a send operation per published
// type, and a receive operation (plus a send to the dead-letter topic) per
// handled type. The result is deterministic for a given registry and options.
func Build(reg *kavari.Registry, opts ...Option) (*Document, error) {
	o := options{title: "kavari service", version: "0.0.0", suffix: ".dlq"}
	for _, opt := range opts {
		opt(&o)
	}
	if o.suffix == "" {
		return nil, fmt.Errorf("kavari: contract: empty dead-letter suffix")
	}
	types := reg.Types()
	known := map[reflect.Type]bool{}
	for _, mt := range types {
		known[mt.GoType] = true
	}
	for _, set := range []map[reflect.Type]bool{o.sends, o.receives} {
		for t := range set {
			if !known[t] {
				return nil, fmt.Errorf("kavari: contract: %v is not registered", t)
			}
		}
	}
	d := &Document{
		AsyncAPI:           AsyncAPIVersion,
		Info:               Info{Title: o.title, Version: o.version, Description: o.description},
		DefaultContentType: "application/json",
		Channels:           map[string]*Channel{},
		Operations:         map[string]*Operation{},
	}
	for _, mt := range types {
		send := o.sends == nil || o.sends[mt.GoType]
		recv := len(mt.Handlers) > 0
		if o.receives != nil {
			recv = o.receives[mt.GoType]
		}
		ch := d.channel(mt.Topic, "")
		mk := key(mt.Name)
		if _, dup := ch.Messages[mk]; dup {
			return nil, fmt.Errorf("kavari: contract: two message names on topic %q map to %q", mt.Topic, mk)
		}
		ch.Messages[mk] = message(mt)
		ref := []Ref{{"#/channels/" + key(mt.Topic) + "/messages/" + mk}}
		if send {
			d.Operations["send."+key(mt.Topic)+"."+mk] = &Operation{
				Action: "send", Channel: Ref{"#/channels/" + key(mt.Topic)}, Messages: ref,
				Summary: "Publishes " + mt.Name + " to " + mt.Topic + ".",
			}
		}
		if recv {
			d.Operations["receive."+key(mt.Topic)+"."+mk] = &Operation{
				Action: "receive", Channel: Ref{"#/channels/" + key(mt.Topic)}, Messages: ref,
				Summary: "Handles " + mt.Name + " from " + mt.Topic + handledBy(mt.Handlers) + ".",
			}
			dlq := mt.Topic + o.suffix
			dch := d.channel(dlq, mt.Topic)
			dch.Messages[mk] = deadLetterMessage(mt)
			d.Operations["deadLetter."+key(dlq)+"."+mk] = &Operation{
				Action: "send", Channel: Ref{"#/channels/" + key(dlq)},
				Messages: []Ref{{"#/channels/" + key(dlq) + "/messages/" + mk}},
				Summary:  "Dead-letters a " + mt.Name + " that could not be handled.",
			}
		}
	}
	return d, nil
}

func handledBy(hs []string) string {
	if len(hs) == 0 {
		return ""
	}
	return " (" + strings.Join(hs, ", ") + ")"
}

func (d *Document) channel(topic, deadLetterOf string) *Channel {
	k := key(topic)
	if ch := d.Channels[k]; ch != nil {
		return ch
	}
	ch := &Channel{
		Address: topic, Messages: map[string]*Message{}, DeadLetterOf: deadLetterOf,
		Bindings: &ChannelBindings{Kafka: &KafkaChannelBinding{Topic: topic, BindingVersion: "0.5.0"}},
	}
	if deadLetterOf != "" {
		ch.Description = "Dead letters of " + deadLetterOf + ": the original key, value and headers plus the dead-letter headers."
	}
	d.Channels[k] = ch
	return ch
}

func message(mt kavari.MessageType) *Message {
	m := &Message{
		Name:        mt.Name,
		Title:       mt.GoType.Name(),
		ContentType: contentType(mt),
		Headers:     headers(mt, false),
		Payload:     &MultiFormatSchema{SchemaFormat: PayloadFormat, Schema: payloadSchema(mt)},
		GoType:      mt.GoType.PkgPath() + "." + mt.GoType.Name(),
		Version:     mt.Version,
	}
	if k := keySchema(mt); k != nil {
		m.Bindings = &MessageBindings{Kafka: &KafkaMessageBinding{Key: k, BindingVersion: "0.5.0"}}
		m.KeyField = mt.KeyField
		if mt.KeyMethod {
			m.KeyField = "PartitionKey()"
		}
	}
	return m
}

func deadLetterMessage(mt kavari.MessageType) *Message {
	m := message(mt)
	m.Summary = "A " + mt.Name + " that failed; for decode and unknown_type failures the value is whatever the record held."
	m.Headers = headers(mt, true)
	m.Payload = &MultiFormatSchema{SchemaFormat: PayloadFormat, Schema: &Schema{
		Schema:      Draft,
		Description: "The original record's value, unchanged (empty when kavari_truncated is set).",
	}}
	return m
}

// keySchema describes the record key: UTF-8 text of the key field
// (integers in decimal), or nil for a type without a key.
func keySchema(mt kavari.MessageType) *Schema {
	switch {
	case mt.KeyMethod:
		return &Schema{Type: "string", MinLength: ptr(1), Description: "UTF-8 bytes of PartitionKey()."}
	case mt.KeyField == "":
		return nil
	}
	s := &Schema{Type: "string", Description: "UTF-8 bytes of field " + mt.KeyField + "."}
	t := mt.GoType
	for _, name := range strings.Split(mt.KeyField, ".") {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		f, ok := t.FieldByName(name)
		if !ok {
			return s
		}
		t = f.Type
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		s.Pattern = `^-?[0-9]+$`
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		s.Pattern = `^[0-9]+$`
	}
	return s
}

// headers is the header schema of a type's records (AsyncAPI Schema
// Object: every header is a string).
func headers(mt kavari.MessageType, deadLetter bool) *Schema {
	str := func(desc string) *Schema { return &Schema{Type: "string", Description: desc} }
	cnst := func(v, desc string) *Schema { return &Schema{Type: "string", Const: ptr[any](v), Description: desc} }
	p := map[string]*Schema{
		kavari.HeaderMsgType:     cnst(mt.Name, "Logical type name; the Python kavari routes on it."),
		kavari.HeaderSpecVersion: cnst("1.0", "CloudEvents spec version."),
		kavari.HeaderID:          {Type: "string", Format: "uuid", Description: "CloudEvents id: unique per message, kept across retries."},
		kavari.HeaderType:        cnst(mt.Name, "CloudEvents type: the logical type name."),
		kavari.HeaderSource:      str("CloudEvents source: Config.CloudEventsSource, default the host name."),
		kavari.HeaderTime:        {Type: "string", Format: "date-time", Description: "CloudEvents time (RFC 3339)."},
		kavari.HeaderContentType: cnst(contentType(mt), "Content type of the value."),
	}
	order := []string{kavari.HeaderMsgType, kavari.HeaderSpecVersion, kavari.HeaderID, kavari.HeaderType,
		kavari.HeaderSource, kavari.HeaderTime, kavari.HeaderContentType}
	required := append([]string(nil), order...)
	if mt.Version != "" {
		p[kavari.HeaderVersion] = cnst(mt.Version, "Version from the type's kavari tag.")
		order = append(order, kavari.HeaderVersion)
		required = append(required, kavari.HeaderVersion)
	}
	if deadLetter {
		dl := []struct {
			name string
			s    *Schema
			req  bool
		}{
			{kavari.HeaderOriginalError, str("The error text (the header the Python kavari writes)."), true},
			{kavari.HeaderErrorKind, &Schema{Type: "string", Enum: []any{"decode", "validation", "unknown_type", "handler"}}, true},
			{kavari.HeaderOriginalTopic, cnst(mt.Topic, "Topic the record was on."), true},
			{kavari.HeaderOriginalPartition, &Schema{Type: "string", Pattern: `^[0-9]+$`, Description: "Partition the record was on."}, true},
			{kavari.HeaderOriginalOffset, &Schema{Type: "string", Pattern: `^[0-9]+$`, Description: "Offset of the record."}, true},
			{kavari.HeaderAttempts, &Schema{Type: "string", Pattern: `^[0-9]+$`, Description: "Handler attempts made (1 for poison records)."}, true},
			{kavari.HeaderHandler, str("The failing handler's type, for kind handler."), false},
			{kavari.HeaderTruncated, &Schema{Type: "string", Pattern: `^[0-9]+$`, Description: "Original value size, when the value was dropped to fit."}, false},
		}
		// A poison record may lack kavari's own headers.
		required = []string{kavari.HeaderOriginalError, kavari.HeaderErrorKind}
		for _, h := range dl {
			p[h.name] = h.s
			order = append(order, h.name)
		}
		p[kavari.HeaderMsgType] = &Schema{Type: "string", Description: "Logical type name, when the record had one."}
		p[kavari.HeaderType] = str("CloudEvents type, when the record had one.")
	}
	sort.Strings(required)
	return &Schema{
		Type: "object", Properties: p, PropertyOrder: order, Required: required,
		Description: "Kafka record headers (UTF-8 values); user headers pass through.",
	}
}

// contentType is the content type of mt's values: its codec's.
func contentType(mt kavari.MessageType) string {
	if mt.Codec == nil {
		return "application/json"
	}
	return mt.Codec.ContentType()
}

// payloadSchema describes mt's value: the JSON Schema of its struct, or for
// the text codec (the Python kavari's primitive payloads) the plain text of
// its one field.
func payloadSchema(mt kavari.MessageType) *Schema {
	if mt.Codec != kavari.Text {
		return TypeSchema(mt.GoType)
	}
	for i := range mt.GoType.NumField() {
		f := mt.GoType.Field(i)
		if !f.IsExported() || f.Anonymous || f.Tag.Get("json") == "-" {
			continue
		}
		s := &Schema{Schema: Draft, Type: "string", Description: "The plain text of field " + f.Name + " (codec text), as the Python kavari writes a " + f.Type.Kind().String() + " payload."}
		switch k := f.Type.Kind(); {
		case k == reflect.Bool:
			s.Enum = []any{"True", "False"}
		case k >= reflect.Int && k <= reflect.Int64:
			s.Pattern = `^-?[0-9]+$`
		case k >= reflect.Uint && k <= reflect.Uint64:
			s.Pattern = `^[0-9]+$`
		case k == reflect.Slice:
			s.Description = "The raw bytes of field " + f.Name + " (codec text)."
			s.Type = ""
		}
		return s
	}
	return TypeSchema(mt.GoType)
}
