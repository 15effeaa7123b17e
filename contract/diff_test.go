package contract_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari/contract"
)

func quickstartDoc(t *testing.T) *contract.Document {
	t.Helper()
	d, err := contract.Build(quickstartRegistry())
	require.NoError(t, err)
	b, err := d.JSON()
	require.NoError(t, err)
	d, err = contract.Parse(b) // a fresh copy, as read from a file
	require.NoError(t, err)
	return d
}

func TestDiffClassification(t *testing.T) {
	const orders = "quickstart.orders"
	payload := func(d *contract.Document) *contract.Schema {
		return d.Channels[orders].Messages["order.placed"].Payload.Schema
	}
	prop := func(d *contract.Document, name string) *contract.Schema { return payload(d).Properties[name] }
	p := "channels/" + orders + "/messages/order.placed"
	type want struct {
		path, kind           string
		consumers, producers bool
	}
	cases := []struct {
		name   string
		change func(d *contract.Document)
		want   []want
	}{
		{"no change", func(*contract.Document) {}, nil},
		{"field removed", func(d *contract.Document) { delete(payload(d).Properties, "currency") },
			[]want{{p + "/payload/currency", contract.FieldRemoved, true, false}}},
		{"required field removed", func(d *contract.Document) {
			delete(payload(d).Properties, "customer")
			payload(d).Required = []string{"order_id"}
		}, []want{{p + "/payload/customer", contract.FieldRemoved, true, false}}},
		{"optional field added", func(d *contract.Document) {
			payload(d).Properties["note"] = &contract.Schema{Type: "string"}
		}, []want{{p + "/payload/note", contract.FieldAdded, false, false}}},
		{"required field added", func(d *contract.Document) {
			payload(d).Properties["note"] = &contract.Schema{Type: "string"}
			payload(d).Required = append(payload(d).Required, "note")
		}, []want{{p + "/payload/note", contract.FieldAdded, false, true}}},
		{"type changed", func(d *contract.Document) { prop(d, "amount_cents").Type = "string" },
			[]want{{p + "/payload/amount_cents", contract.TypeChanged, true, true}}},
		{"became required", func(d *contract.Document) { payload(d).Required = append(payload(d).Required, "currency") },
			[]want{{p + "/payload/currency", contract.BecameRequired, false, true}}},
		{"became optional", func(d *contract.Document) { payload(d).Required = []string{"order_id"} },
			[]want{{p + "/payload/customer", contract.BecameOptional, true, false}}},
		{"enum narrowed", func(d *contract.Document) { prop(d, "currency").Enum = []any{"EUR", "USD"} },
			[]want{{p + "/payload/currency", contract.EnumNarrowed, false, true}}},
		{"enum widened", func(d *contract.Document) { prop(d, "currency").Enum = append(prop(d, "currency").Enum, "CHF") },
			[]want{{p + "/payload/currency", contract.EnumWidened, true, false}}},
		{"bounds tightened", func(d *contract.Document) { v := 100.0; prop(d, "amount_cents").ExclusiveMinimum = &v },
			[]want{{p + "/payload/amount_cents", contract.BoundsTightened, false, true}}},
		{"bound added", func(d *contract.Document) { n := 64; prop(d, "order_id").MaxLength = &n },
			[]want{{p + "/payload/order_id", contract.BoundsTightened, false, true}}},
		{"bounds loosened", func(d *contract.Document) { prop(d, "order_id").MinLength = nil },
			[]want{{p + "/payload/order_id", contract.BoundsLoosened, true, false}}},
		{"format changed", func(d *contract.Document) { prop(d, "customer").Format = "uri" },
			[]want{{p + "/payload/customer", contract.ConstraintChanged, true, true}}},
		{"pattern added", func(d *contract.Document) { prop(d, "order_id").Pattern = "^o-" },
			[]want{{p + "/payload/order_id", contract.ConstraintAdded, false, true}}},
		{"null added", func(d *contract.Document) {
			s := prop(d, "order_id")
			s.Types, s.Type = []string{"string", "null"}, ""
		}, []want{{p + "/payload/order_id", contract.NullAdded, true, false}}},
		{"key changed", func(d *contract.Document) { d.Channels[orders].Messages["order.placed"].KeyField = "Customer" },
			[]want{{p + "/key", contract.KeyChanged, true, true}}},
		{"version changed", func(d *contract.Document) { d.Channels[orders].Messages["order.placed"].Version = "2" },
			[]want{{p, contract.VersionChanged, false, false}}},
		{"logical name changed", func(d *contract.Document) {
			ch := d.Channels[orders]
			m := ch.Messages["order.placed"]
			m.Name = "order.created"
		}, []want{{p, contract.NameChanged, true, true}}},
		{"topic changed", func(d *contract.Document) {
			ch := d.Channels[orders]
			ch.Address = "shop.orders"
			ch.Bindings = nil
		}, []want{
			{"channels/" + orders, contract.ChannelRemoved, true, true},
			{p, contract.TopicChanged, true, true},
			{"channels/shop.orders", contract.ChannelAdded, false, false},
		}},
		{"message removed", func(d *contract.Document) {
			delete(d.Channels["quickstart.payments"].Messages, "PaymentReceived")
		}, []want{{"channels/quickstart.payments/messages/PaymentReceived", contract.MessageRemoved, true, true}}},
		{"receive dropped", func(d *contract.Document) {
			delete(d.Operations, "receive.quickstart.orders.order.placed")
		}, []want{{"operations/receive order.placed on quickstart.orders", contract.OperationRemoved, true, true}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			old, new := quickstartDoc(t), quickstartDoc(t)
			c.change(new)
			got := contract.Diff(old, new)
			var kinds []want
			for _, ch := range got {
				if ch.Kind == contract.OperationAdded || ch.Kind == contract.OperationRemoved && c.name != "receive dropped" {
					continue // a move or rename also changes operation names
				}
				kinds = append(kinds, want{ch.Path, ch.Kind, ch.BreaksConsumers, ch.BreaksProducers})
			}
			assert.ElementsMatch(t, c.want, kinds, "%v", got)
		})
	}
}

func TestDiffRealTypes(t *testing.T) {
	// httpservice's OrderPlaced against quickstart's, as if one replaced
	// the other on one topic: the currency field went, order_id got a
	// bound.
	a, err := contract.Build(quickstartRegistry())
	require.NoError(t, err)
	b := quickstartDoc(t)
	b.Channels["quickstart.orders"].Messages["order.placed"].Payload.Schema =
		contract.TypeSchema(typeOf(&httpOrderPlaced{}))
	changes := contract.Diff(a, b)
	var kinds []string
	for _, c := range changes {
		kinds = append(kinds, c.Kind+" "+c.Path)
	}
	assert.ElementsMatch(t, []string{
		contract.FieldRemoved + " channels/quickstart.orders/messages/order.placed/payload/currency",
		contract.BoundsTightened + " channels/quickstart.orders/messages/order.placed/payload/order_id",
	}, kinds)
}
