package kavaritest_test

import (
	"context"
	"fmt"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/kavaritest"
)

type OrderPlaced struct {
	kavari.Message `kavari:"topic=orders,key=OrderID"`
	OrderID        string `json:"order_id" validate:"required"`
	Amount         int64  `json:"amount"   validate:"gt=0"`
}

type InvoiceRequested struct {
	kavari.Message `kavari:"topic=invoices,key=OrderID"`
	OrderID        string `json:"order_id"`
	Amount         int64  `json:"amount"`
}

// Billing asks for an invoice for every order placed.
type Billing struct{ Pub *kavari.Client }

func (b *Billing) Handle(ctx context.Context, m *OrderPlaced) error {
	_, err := b.Pub.Publish(ctx, &InvoiceRequested{OrderID: m.OrderID, Amount: m.Amount})
	return err
}

// A unit test of a handler, without Kafka: deliver an order, decode the
// invoice request the handler published, and see an invalid order
// dead-lettered by the consumer's validation. (An Example has no
// *testing.T: exampleT stands in for the test's t.)
func Example() {
	t := &exampleT{} // in a test: the test's t
	defer t.done()
	ctx := context.Background()

	reg := kavari.NewRegistry()
	_ = reg.Declare(&InvoiceRequested{}) // published, not consumed: its topic exists, as on Kafka
	h := kavaritest.New(t, kavari.Config{Registry: reg})
	_ = kavari.RegisterOn(reg, &OrderPlaced{}, func() *Billing { return &Billing{Pub: h.Client()} })

	out := h.Deliver(ctx, &OrderPlaced{OrderID: "o-1", Amount: 10})
	fmt.Println(out.Result, out.Attempts)
	inv, err := kavaritest.Decode[InvoiceRequested](h.PublishedTo("invoices")[0])
	fmt.Println(inv.OrderID, inv.Amount, err)

	out = h.Deliver(ctx, &OrderPlaced{OrderID: "o-2"}) // Amount must be > 0
	fmt.Println(out.Result, out.Kind, len(h.DeadLetters()))
	// Output:
	// handled 1
	// o-1 10 <nil>
	// dead-lettered validation 1
}
