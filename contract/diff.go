package contract

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
)

// Kinds of Change.
const (
	ChannelAdded      = "channel-added"
	ChannelRemoved    = "channel-removed"
	MessageAdded      = "message-added"
	MessageRemoved    = "message-removed"
	TopicChanged      = "topic-changed"
	NameChanged       = "name-changed"
	KeyChanged        = "key-changed"
	VersionChanged    = "version-changed"
	OperationAdded    = "operation-added"
	OperationRemoved  = "operation-removed"
	FieldAdded        = "field-added"
	FieldRemoved      = "field-removed"
	TypeChanged       = "type-changed"
	BecameRequired    = "became-required"
	BecameOptional    = "became-optional"
	NullAdded         = "null-added"
	NullRemoved       = "null-removed"
	EnumNarrowed      = "enum-narrowed"
	EnumWidened       = "enum-widened"
	BoundsTightened   = "bounds-tightened"
	BoundsLoosened    = "bounds-loosened"
	ConstraintAdded   = "constraint-added"
	ConstraintRemoved = "constraint-removed"
	ConstraintChanged = "constraint-changed"
)

// Change is one difference between two contract documents, classified for
// the consumers of the messages (code reading them: may it now see data
// it does not expect?) and for their producers (code writing them: may
// what it writes now be rejected?).
type Change struct {
	// Path locates the change, e.g.
	// "channels/orders/messages/order.placed/payload/amount".
	Path string
	// Kind is one of the kinds above, e.g. FieldRemoved.
	Kind string
	// BreaksConsumers reports that a consumer written for the old
	// contract may fail on messages of the new one.
	BreaksConsumers bool
	// BreaksProducers reports that messages written for the old contract
	// may be invalid under the new one.
	BreaksProducers bool
	// Message says what changed, for people.
	Message string
}

// Breaking reports whether the change breaks consumers or producers.
func (c Change) Breaking() bool { return c.BreaksConsumers || c.BreaksProducers }

// String formats the change as one line.
func (c Change) String() string {
	who := "compatible"
	switch {
	case c.BreaksConsumers && c.BreaksProducers:
		who = "BREAKING consumers+producers"
	case c.BreaksConsumers:
		who = "BREAKING consumers"
	case c.BreaksProducers:
		who = "BREAKING producers"
	}
	return fmt.Sprintf("%-29s %-18s %s: %s", who, c.Kind, c.Path, c.Message)
}

// Diff lists every change from old to new, sorted by path, then kind.
// Messages are matched by topic and logical name; a message that moved to
// another topic or was renamed (same Go type) is reported as such.
func Diff(old, new *Document) []Change {
	d := &differ{}
	oldMsgs, newMsgs := messagesOf(old), messagesOf(new)
	for addr := range union(addresses(old), addresses(new)) {
		_, inOld := findChannel(old, addr)
		_, inNew := findChannel(new, addr)
		switch {
		case inOld && !inNew:
			d.add("channels/"+addr, ChannelRemoved, true, true, "topic "+addr+" is no longer in the contract")
		case !inOld && inNew:
			d.add("channels/"+addr, ChannelAdded, false, false, "new topic "+addr)
		}
	}
	for id, om := range oldMsgs {
		nm, ok := newMsgs[id]
		path := "channels/" + id.topic + "/messages/" + id.name
		if ok {
			d.message(path, om, nm)
			continue
		}
		if moved, to := findByGoType(newMsgs, om.GoType, oldMsgs); moved != nil {
			switch {
			case to.topic != id.topic && to.name == id.name:
				d.add(path, TopicChanged, true, true, fmt.Sprintf("%s moved from topic %s to %s", id.name, id.topic, to.topic))
			case to.topic == id.topic:
				d.add(path, NameChanged, true, true, fmt.Sprintf("logical name %s became %s (msg_type changes)", id.name, to.name))
			default:
				d.add(path, TopicChanged, true, true, fmt.Sprintf("%s on %s became %s on %s", id.name, id.topic, to.name, to.topic))
			}
			d.message(path, om, moved)
			continue
		}
		d.add(path, MessageRemoved, true, true, "message "+id.name+" removed from topic "+id.topic)
	}
	for id, nm := range newMsgs {
		if _, ok := oldMsgs[id]; ok {
			continue
		}
		if m, _ := findByGoType(oldMsgs, nm.GoType, newMsgs); m != nil {
			continue // reported as moved or renamed
		}
		d.add("channels/"+id.topic+"/messages/"+id.name, MessageAdded, false, false, "new message "+id.name+" on topic "+id.topic)
	}
	oldOps, newOps := operations(old), operations(new)
	for k := range union(oldOps, newOps) {
		_, inOld := oldOps[k]
		_, inNew := newOps[k]
		switch {
		case inOld && !inNew:
			d.add("operations/"+k, OperationRemoved, true, true, "the service no longer does "+k)
		case !inOld && inNew:
			d.add("operations/"+k, OperationAdded, false, false, "the service now does "+k)
		}
	}
	sort.SliceStable(d.out, func(i, j int) bool {
		if d.out[i].Path != d.out[j].Path {
			return d.out[i].Path < d.out[j].Path
		}
		return d.out[i].Kind < d.out[j].Kind
	})
	return d.out
}

type differ struct{ out []Change }

func (d *differ) add(path, kind string, consumers, producers bool, msg string) {
	d.out = append(d.out, Change{Path: path, Kind: kind, BreaksConsumers: consumers, BreaksProducers: producers, Message: msg})
}

type msgID struct{ topic, name string }

func messagesOf(doc *Document) map[msgID]*Message {
	out := map[msgID]*Message{}
	for _, ch := range doc.Channels {
		if ch == nil || ch.DeadLetterOf != "" {
			continue // dead-letter channels follow their topic
		}
		for _, m := range ch.Messages {
			if m != nil {
				out[msgID{ch.Address, m.Name}] = m
			}
		}
	}
	return out
}

// findByGoType finds a message of Go type goType in msgs that is not also
// in other under the same id (which would make it a plain match).
func findByGoType(msgs map[msgID]*Message, goType string, other map[msgID]*Message) (*Message, msgID) {
	if goType == "" {
		return nil, msgID{}
	}
	for id, m := range msgs {
		if _, matched := other[id]; !matched && m.GoType == goType {
			return m, id
		}
	}
	return nil, msgID{}
}

func addresses(doc *Document) map[string]bool {
	out := map[string]bool{}
	for _, ch := range doc.Channels {
		if ch != nil {
			out[ch.Address] = true
		}
	}
	return out
}

func findChannel(doc *Document, addr string) (*Channel, bool) {
	for _, ch := range doc.Channels {
		if ch != nil && ch.Address == addr {
			return ch, true
		}
	}
	return nil, false
}

// operations names each operation by action, topic and message name.
func operations(doc *Document) map[string]bool {
	out := map[string]bool{}
	for _, op := range doc.Operations {
		if op == nil {
			continue
		}
		ch := strings.TrimPrefix(op.Channel.Ref, "#/channels/")
		addr := ch
		if c := doc.Channels[ch]; c != nil {
			addr = c.Address
		}
		for _, m := range op.Messages {
			_, name, _ := strings.Cut(strings.TrimPrefix(m.Ref, "#/channels/"), "/messages/")
			if c := doc.Channels[ch]; c != nil && c.Messages[name] != nil {
				name = c.Messages[name].Name
			}
			out[op.Action+" "+name+" on "+addr] = true
		}
	}
	return out
}

func union[V any](a, b map[string]V) map[string]bool {
	out := map[string]bool{}
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

func (d *differ) message(path string, a, b *Message) {
	if a.Version != b.Version {
		d.add(path, VersionChanged, false, false, fmt.Sprintf("version %q became %q", a.Version, b.Version))
	}
	ak, bk := keyOf(a), keyOf(b)
	if a.KeyField != b.KeyField || !reflect.DeepEqual(ak, bk) {
		d.add(path+"/key", KeyChanged, true, true, fmt.Sprintf("partition key %q became %q: ordering and partitioning change", a.KeyField, b.KeyField))
	}
	var as, bs *Schema
	if a.Payload != nil {
		as = a.Payload.Schema
	}
	if b.Payload != nil {
		bs = b.Payload.Schema
	}
	d.schema(path+"/payload", orEmpty(as), orEmpty(bs))
}

func keyOf(m *Message) string {
	if m.Bindings == nil || m.Bindings.Kafka == nil || m.Bindings.Kafka.Key == nil {
		return ""
	}
	k := *m.Bindings.Kafka.Key
	k.Description = ""
	b, _ := json.Marshal(k)
	return string(b)
}

// shape is a schema split into what the diff compares.
type shape struct {
	types    []string // without "null"
	nullable bool
	s        *Schema
}

func shapeOf(s *Schema) shape {
	sh := shape{s: s}
	if len(s.AnyOf) == 2 && s.AnyOf[1].Type == "null" && s.Type == "" && len(s.Types) == 0 {
		sh.nullable = true
		sh.s = merge(s.AnyOf[0].CloneSchemas(), &Schema{Extra: s.Extra})
	}
	ts := sh.s.Types
	if sh.s.Type != "" {
		ts = []string{sh.s.Type}
	}
	for _, t := range ts {
		if t == "null" {
			sh.nullable = true
		} else {
			sh.types = append(sh.types, t)
		}
	}
	sort.Strings(sh.types)
	return sh
}

// schema compares two schemas of one value.
func (d *differ) schema(path string, a, b *Schema) {
	sa, sb := shapeOf(a), shapeOf(b)
	if !reflect.DeepEqual(sa.types, sb.types) || sa.s.Ref != sb.s.Ref {
		d.add(path, TypeChanged, true, true, fmt.Sprintf("type %s became %s", typeString(sa), typeString(sb)))
		return
	}
	switch {
	case !sa.nullable && sb.nullable:
		d.add(path, NullAdded, true, false, "may now be null")
	case sa.nullable && !sb.nullable:
		d.add(path, NullRemoved, false, true, "may no longer be null")
	}
	x, y := sa.s, sb.s
	d.enum(path, x.Enum, y.Enum)
	d.value(path, "const", x.Const, y.Const)
	lower := map[string][2]any{
		"minimum": {x.Minimum, y.Minimum}, "exclusiveMinimum": {x.ExclusiveMinimum, y.ExclusiveMinimum},
		"minLength": {x.MinLength, y.MinLength}, "minItems": {x.MinItems, y.MinItems}, "minProperties": {x.MinProperties, y.MinProperties},
	}
	upper := map[string][2]any{
		"maximum": {x.Maximum, y.Maximum}, "exclusiveMaximum": {x.ExclusiveMaximum, y.ExclusiveMaximum},
		"maxLength": {x.MaxLength, y.MaxLength}, "maxItems": {x.MaxItems, y.MaxItems}, "maxProperties": {x.MaxProperties, y.MaxProperties},
	}
	for _, k := range sortedKeys(lower) {
		d.bound(path, k, lower[k][0], lower[k][1], true)
	}
	for _, k := range sortedKeys(upper) {
		d.bound(path, k, upper[k][0], upper[k][1], false)
	}
	d.value(path, "format", x.Format, y.Format)
	d.value(path, "pattern", x.Pattern, y.Pattern)
	d.value(path, "uniqueItems", x.UniqueItems, y.UniqueItems)
	d.value(path, "contentEncoding", x.ContentEncoding, y.ContentEncoding)
	d.value(path, "propertyNames", x.PropertyNames, y.PropertyNames)
	d.value(path, "not", x.Not, y.Not)
	d.value(path, "anyOf", x.AnyOf, y.AnyOf)
	d.value(path, "allOf", x.AllOf, y.AllOf)
	d.value(path, "oneOf", x.OneOf, y.OneOf)
	d.value(path, ExtUnmapped, x.Extra[ExtUnmapped], y.Extra[ExtUnmapped])

	if x.Items != nil || y.Items != nil {
		d.schema(path+"[]", orEmpty(x.Items), orEmpty(y.Items))
	}
	if x.AdditionalProperties != nil || y.AdditionalProperties != nil {
		d.schema(path+"{}", orEmpty(x.AdditionalProperties), orEmpty(y.AdditionalProperties))
	}
	req := func(s *Schema) map[string]bool {
		m := map[string]bool{}
		for _, r := range s.Required {
			m[r] = true
		}
		return m
	}
	ra, rb := req(x), req(y)
	for name := range union(x.Properties, y.Properties) {
		p := path + "/" + name
		pa, pb := x.Properties[name], y.Properties[name]
		switch {
		case pb == nil:
			d.add(p, FieldRemoved, true, false, "field "+name+" removed")
		case pa == nil:
			d.add(p, FieldAdded, false, rb[name], "field "+name+" added"+map[bool]string{true: " as required", false: ""}[rb[name]])
		default:
			if !ra[name] && rb[name] {
				d.add(p, BecameRequired, false, true, "field "+name+" became required")
			}
			if ra[name] && !rb[name] {
				d.add(p, BecameOptional, true, false, "field "+name+" became optional")
			}
			d.schema(p, pa, pb)
		}
	}
	for name := range union(x.Defs, y.Defs) {
		if x.Defs[name] != nil && y.Defs[name] != nil {
			d.schema(path+"/$defs/"+name, x.Defs[name], y.Defs[name])
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func typeString(s shape) string {
	t := strings.Join(s.types, "|")
	if s.s.Ref != "" {
		t = s.s.Ref
	}
	if t == "" {
		t = "any"
	}
	return t
}

// enum: fewer values reject what producers wrote; more values surprise
// consumers.
func (d *differ) enum(path string, a, b []any) {
	if a == nil && b == nil {
		return
	}
	in := func(v any, set []any) bool {
		for _, w := range set {
			if reflect.DeepEqual(v, w) {
				return true
			}
		}
		return false
	}
	var removed, added []string
	if a != nil && b != nil {
		for _, v := range a {
			if !in(v, b) {
				removed = append(removed, fmt.Sprint(v))
			}
		}
		for _, v := range b {
			if !in(v, a) {
				added = append(added, fmt.Sprint(v))
			}
		}
	}
	switch {
	case a == nil:
		d.add(path, EnumNarrowed, false, true, fmt.Sprintf("now limited to %v", b))
	case b == nil:
		d.add(path, EnumWidened, true, false, fmt.Sprintf("no longer limited to %v", a))
	default:
		if len(removed) > 0 {
			d.add(path, EnumNarrowed, false, true, "values removed: "+strings.Join(removed, ", "))
		}
		if len(added) > 0 {
			d.add(path, EnumWidened, true, false, "values added: "+strings.Join(added, ", "))
		}
	}
}

// bound compares one bound; lower says whether larger is tighter.
func (d *differ) bound(path, name string, a, b any, lower bool) {
	fa, okA := num(a)
	fb, okB := num(b)
	if !okA && !okB || okA && okB && fa == fb {
		return
	}
	tighter := !okA || (okB && (lower && fb > fa || !lower && fb < fa))
	msg := fmt.Sprintf("%s %s became %s", name, numString(fa, okA), numString(fb, okB))
	if tighter {
		d.add(path, BoundsTightened, false, true, msg)
	} else {
		d.add(path, BoundsLoosened, true, false, msg)
	}
}

func num(v any) (float64, bool) {
	switch p := v.(type) {
	case *float64:
		if p != nil {
			return *p, true
		}
	case *int:
		if p != nil {
			return float64(*p), true
		}
	}
	return 0, false
}

func numString(f float64, ok bool) string {
	if !ok {
		return "(none)"
	}
	return fmt.Sprint(f)
}

// value compares any other keyword: added constrains producers, removed
// frees them (and may surprise consumers), changed does both.
func (d *differ) value(path, name string, a, b any) {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	za, zb := isZeroJSON(ja), isZeroJSON(jb)
	switch {
	case string(ja) == string(jb) || za && zb:
	case za:
		d.add(path, ConstraintAdded, false, true, fmt.Sprintf("%s %s added", name, jb))
	case zb:
		d.add(path, ConstraintRemoved, true, false, fmt.Sprintf("%s %s removed", name, ja))
	default:
		d.add(path, ConstraintChanged, true, true, fmt.Sprintf("%s %s became %s", name, ja, jb))
	}
}

func isZeroJSON(b []byte) bool {
	switch string(b) {
	case "null", `""`, "false", "[]", "{}":
		return true
	}
	return false
}
