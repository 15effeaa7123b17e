package contract_test

import (
	"context"
	"reflect"
	"time"

	"github.com/kavari-go/kavari"
)

// The examples are package main and cannot be imported: these are copies
// of their message types (examples/quickstart, examples/httpservice,
// examples/di), field for field and tag for tag.

// OrderPlaced is examples/quickstart's OrderPlaced.
type OrderPlaced struct {
	kavari.Message `kavari:"topic=quickstart.orders,key=OrderID,name=order.placed"`
	OrderID        string `json:"order_id" validate:"required"`
	Customer       string `json:"customer" validate:"required,email"`
	AmountCents    int64  `json:"amount_cents" validate:"gt=0"`
	Currency       string `json:"currency" validate:"oneof=EUR USD GBP"`
}

// PaymentReceived is examples/quickstart's PaymentReceived.
type PaymentReceived struct {
	kavari.Message `kavari:"topic=quickstart.payments,key=OrderID"`
	OrderID        string `json:"order_id" validate:"required"`
	AmountCents    int64  `json:"amount_cents" validate:"gt=0"`
	Method         string `json:"method" validate:"oneof=card transfer"`
}

// OrderPlacedHandler stands for the quickstart's handler struct.
type OrderPlacedHandler struct{}

func (*OrderPlacedHandler) Handle(context.Context, *OrderPlaced) error { return nil }

// quickstartRegistry registers what examples/quickstart registers.
func quickstartRegistry() *kavari.Registry {
	r := kavari.NewRegistry()
	must(kavari.RegisterOn(r, &OrderPlaced{}, func() *OrderPlacedHandler { return &OrderPlacedHandler{} }))
	must(kavari.RegisterFuncOn(r, &PaymentReceived{}, func(context.Context, *PaymentReceived) error { return nil }))
	return r
}

// httpOrderPlaced is examples/httpservice's OrderPlaced.
type httpOrderPlaced struct {
	kavari.Message `kavari:"topic=httpservice.orders,key=OrderID,name=order.placed"`
	OrderID        string `json:"order_id" validate:"required,max=64"`
	Customer       string `json:"customer" validate:"required,email"`
	AmountCents    int64  `json:"amount_cents" validate:"gt=0"`
}

// diPaymentReceived is examples/di's PaymentReceived (its OrderPlaced
// matches quickstart's shape).
type diPaymentReceived struct {
	kavari.Message `kavari:"topic=di.payments,key=OrderID,name=payment.received"`
	OrderID        string `json:"order_id" validate:"required"`
	Method         string `json:"method" validate:"oneof=card transfer"`
}

// Test message types exercising every mapped type and rule.

type ctAddress struct {
	Street string `json:"street" validate:"required,max=40"`
	Zip    string `json:"zip" validate:"number,len=5"`
	Host   string `json:"host,omitempty" validate:"omitempty,hostname"`
}

type ctBase struct {
	Source string `json:"source" validate:"required,alphanum,max=16"`
	Seq    uint16 `json:"seq"`
}

type ctOrder struct {
	kavari.Message `kavari:"topic=ct.orders,key=ID,name=ct.order,version=2"`
	ctBase
	ID       string            `json:"id" validate:"required,uuid4"`
	Email    string            `json:"email,omitempty" validate:"omitempty,email"`
	Site     string            `json:"site" validate:"omitempty,url"`
	IP       string            `json:"ip" validate:"omitempty,ip"`
	Status   string            `json:"status" validate:"oneof=new paid 'on hold'"`
	Qty      int8              `json:"qty" validate:"gte=1,lte=100"`
	Price    float64           `json:"price" validate:"gt=0,lt=1000000"`
	Rate     float32           `json:"rate" validate:"min=0,max=1"`
	Paid     bool              `json:"paid"`
	Code     string            `json:"code" validate:"startswith=C-,len=6"`
	Day      string            `json:"day" validate:"datetime=2006-01-02"`
	At       time.Time         `json:"at"`
	Due      *time.Time        `json:"due,omitempty"`
	Note     *string           `json:"note" validate:"omitempty,max=20"`
	Ship     *ctAddress        `json:"ship"`
	Bill     ctAddress         `json:"bill"`
	Lines    []ctLine          `json:"lines" validate:"required,min=1,max=5,dive"`
	Tags     []string          `json:"tags" validate:"max=3,unique,dive,alpha,min=1,max=8"`
	Labels   map[string]string `json:"labels" validate:"max=4,dive,keys,alpha,max=8,endkeys,max=16"`
	Counts   map[int]uint32    `json:"counts,omitempty"`
	Blob     []byte            `json:"blob"`
	Pair     [2]int32          `json:"pair"`
	Big      int64             `json:"big,string"`
	Secret   string            `json:"-"`
	Level    int               `json:"level" validate:"oneof=1 2 3"`
	Ratio    float64           `json:"ratio" validate:"nefield=Price"`
	Untagged string
	//lint:ignore U1000 an unexported field, which the schema must leave out
	hidden    string
	Phone     string `json:"phone" validate:"omitempty,e164"`
	Hex       string `json:"hex" validate:"omitempty,hexadecimal"`
	NotAdmin  string `json:"not_admin" validate:"excludes=admin"`
	Alternate string `json:"alt" validate:"omitempty,uuid|email"`
}

type ctLine struct {
	SKU   string `json:"sku" validate:"required,alphanum,min=3,max=12"`
	Count int    `json:"count" validate:"required,min=1"`
}

type ctTree struct {
	kavari.Message `kavari:"topic=ct.trees"`
	Name           string    `json:"name" validate:"required"`
	Children       []*ctTree `json:"children,omitempty" validate:"omitempty,dive"`
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

// ctRegistry declares ctOrder (published only) and handles ctTree.
func ctRegistry() *kavari.Registry {
	r := kavari.NewRegistry()
	must(r.Declare(&ctOrder{}))
	must(kavari.RegisterFuncOn(r, &ctTree{}, func(context.Context, *ctTree) error { return nil }))
	return r
}

func typeOf(m any) reflect.Type { return reflect.TypeOf(m).Elem() }
