package validate_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-playground/validator/v10"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari/validate"
)

type Address struct {
	Street string `json:"street" validate:"required"`
	Zip    string `json:"zip" validate:"required,len=5"`
}

type Customer struct {
	Name    string   `json:"name" validate:"required"`
	Address *Address `json:"address" validate:"required"`
}

type Item struct {
	SKU string `json:"sku" validate:"required"`
	Qty int    `json:"qty" validate:"gte=1"`
}

type Meta struct {
	TraceID string `json:"trace_id" validate:"required"`
}

type OrderPlaced struct {
	Meta                       // flattened by encoding/json
	OrderID  string            `json:"order_id" validate:"required"`
	Amount   int64             `json:"amount" validate:"gt=0"`
	Email    string            `json:"email,omitempty" validate:"omitempty,email"`
	Customer Customer          `json:"customer"`
	Items    []Item            `json:"items" validate:"min=1,dive"`
	Tags     []string          `json:"tags" validate:"dive,max=8"`
	Labels   map[string]string `json:"labels" validate:"dive,required"`
	Note     string            `validate:"max=3"`          // no json tag: Go name
	Secret   string            `json:"-" validate:"max=3"` // not on the wire: Go name
}

func validOrder() *OrderPlaced {
	return &OrderPlaced{
		Meta:     Meta{TraceID: "t-1"},
		OrderID:  "o-1",
		Amount:   10,
		Customer: Customer{Name: "Ada", Address: &Address{Street: "Main St", Zip: "12345"}},
		Items:    []Item{{SKU: "a", Qty: 1}},
	}
}

// fields returns the failing fields of err, which must be an *validate.Error.
func fields(t *testing.T, err error) []validate.FieldError {
	t.Helper()
	require.Error(t, err)
	require.ErrorIs(t, err, validate.ErrInvalid)
	var verr *validate.Error
	require.ErrorAs(t, err, &verr)
	return verr.Fields
}

func paths(fs []validate.FieldError) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.Path
	}
	return out
}

func TestStructValid(t *testing.T) {
	assert.NoError(t, validate.Struct(validOrder()))
	assert.NoError(t, validate.Struct(*validOrder()), "a struct value, not only a pointer")

	type noTags struct {
		A string
		B int
	}
	assert.NoError(t, validate.Struct(noTags{}))
	assert.NoError(t, validate.Struct(struct{}{}))
}

func TestStructSeveralRules(t *testing.T) {
	m := validOrder()
	m.OrderID = ""
	m.Amount = -1
	m.Email = "not-an-email"

	err := validate.Struct(m)
	fs := fields(t, err)
	require.Len(t, fs, 3)
	assert.Equal(t, validate.FieldError{Path: "order_id", Field: "OrderID", Rule: "required", Value: ""}, fs[0])
	assert.Equal(t, validate.FieldError{Path: "amount", Field: "Amount", Rule: "gt", Param: "0", Value: int64(-1)}, fs[1])
	assert.Equal(t, validate.FieldError{Path: "email", Field: "Email", Rule: "email", Value: "not-an-email"}, fs[2])

	var verr *validate.Error
	require.ErrorAs(t, err, &verr)
	assert.Equal(t, "OrderPlaced", verr.Type)
	assert.Equal(t,
		`kavari: invalid OrderPlaced: order_id: required; amount: must satisfy gt=0 (got -1); email: must satisfy email (got "not-an-email")`,
		err.Error())
}

func TestStructNestedPaths(t *testing.T) {
	m := validOrder()
	m.TraceID = ""
	m.Customer.Name = ""
	m.Customer.Address.Zip = "1"

	fs := fields(t, validate.Struct(m))
	assert.Equal(t, []string{"trace_id", "customer.name", "customer.address.zip"}, paths(fs))
	assert.Equal(t, "TraceID", fs[0].Field)
	assert.Equal(t, "Zip", fs[2].Field)
	assert.Equal(t, "len", fs[2].Rule)
	assert.Equal(t, "5", fs[2].Param)

	m = validOrder()
	m.Customer.Address = nil
	fs = fields(t, validate.Struct(m))
	require.Len(t, fs, 1)
	assert.Equal(t, "customer.address", fs[0].Path)
	assert.Equal(t, "customer.address: required", fs[0].Error())
}

func TestStructCollectionPaths(t *testing.T) {
	m := validOrder()
	m.Items = []Item{{SKU: "a", Qty: 1}, {SKU: "b", Qty: 1}, {SKU: "", Qty: 0}}
	m.Tags = []string{"ok", "much-too-long"}
	m.Labels = map[string]string{"env": ""}

	fs := fields(t, validate.Struct(m))
	assert.Equal(t, []string{"items[2].sku", "items[2].qty", "tags[1]", "labels[env]"}, paths(fs))
	assert.Equal(t, "SKU", fs[0].Field)
	assert.Equal(t, "Tags", fs[2].Field, "Field carries no index")
	assert.Equal(t, "max", fs[2].Rule)

	m = validOrder()
	m.Items = nil
	fs = fields(t, validate.Struct(m))
	require.Len(t, fs, 1)
	assert.Equal(t, "items: must satisfy min=1 (got []validate_test.Item, len 0)", fs[0].Error())
}

func TestStructGoNames(t *testing.T) {
	m := validOrder()
	m.Note = "long"
	m.Secret = "long"
	fs := fields(t, validate.Struct(m))
	assert.Equal(t, []string{"Note", "Secret"}, paths(fs))
}

func TestStructNilPointer(t *testing.T) {
	err := validate.Struct((*OrderPlaced)(nil))
	require.ErrorIs(t, err, validate.ErrInvalid)
	var verr *validate.Error
	require.ErrorAs(t, err, &verr)
	assert.Equal(t, "OrderPlaced", verr.Type)
	assert.Empty(t, verr.Fields)
	assert.Equal(t, "kavari: invalid OrderPlaced: nil pointer", err.Error())
}

func TestStructNotAStruct(t *testing.T) {
	m := validOrder()
	for _, v := range []any{nil, 42, "x", map[string]int{}, []OrderPlaced{}, time.Now(), &m, (*int)(nil)} {
		err := validate.Struct(v)
		require.Error(t, err, "%T", v)
		assert.NotErrorIs(t, err, validate.ErrInvalid, "%T", v)
		assert.Equal(t, fmt.Sprintf("kavari: validate: %T is not a struct", v), err.Error())
	}
}

func TestStructBadTag(t *testing.T) {
	type badTag struct {
		A string `validate:"no_such_rule"`
	}
	var err error
	require.NotPanics(t, func() { err = validate.Struct(badTag{}) })
	require.Error(t, err)
	assert.NotErrorIs(t, err, validate.ErrInvalid)
	assert.Contains(t, err.Error(), "kavari: validate badTag: ")
	assert.Contains(t, err.Error(), "no_such_rule")
}

var registerEven sync.Once

func TestCustomRule(t *testing.T) {
	registerEven.Do(func() {
		require.NoError(t, validate.Validator().RegisterValidation("kavari_even", func(fl validator.FieldLevel) bool {
			return fl.Field().Int()%2 == 0
		}))
	})
	type pair struct {
		N int `json:"n" validate:"kavari_even"`
	}
	assert.NoError(t, validate.Struct(pair{N: 2}))
	fs := fields(t, validate.Struct(pair{N: 3}))
	require.Len(t, fs, 1)
	assert.Equal(t, validate.FieldError{Path: "n", Field: "N", Rule: "kavari_even", Value: 3}, fs[0])
	assert.Equal(t, "n: must satisfy kavari_even (got 3)", fs[0].Error())
	assert.Same(t, validate.Validator(), validate.Validator(), "one shared instance")
}

func TestFieldErrorValueIsShort(t *testing.T) {
	long := strings.Repeat("é", 100)
	f := validate.FieldError{Path: "name", Rule: "max", Param: "10", Value: long}
	want := `name: must satisfy max=10 (got "` + strings.Repeat("é", 64) + `…")`
	assert.Equal(t, want, f.Error())

	n := 7
	assert.Equal(t, "p: must satisfy gt=9 (got 7)", validate.FieldError{Path: "p", Rule: "gt", Param: "9", Value: &n}.Error())
	assert.Equal(t, "p: must satisfy gt=9 (got nil)", validate.FieldError{Path: "p", Rule: "gt", Param: "9", Value: (*int)(nil)}.Error())
	assert.Equal(t, "Go: must satisfy x (got nil)", validate.FieldError{Field: "Go", Rule: "x"}.Error(), "Field when Path is empty")
}

func TestStructConcurrent(t *testing.T) {
	type small struct {
		ID string `json:"id" validate:"required"`
	}
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				switch (g + i) % 4 {
				case 0:
					assert.NoError(t, validate.Struct(validOrder()))
				case 1:
					m := validOrder()
					m.Items[0].SKU = ""
					fs := fields(t, validate.Struct(m))
					assert.Equal(t, []string{"items[0].sku"}, paths(fs))
				case 2:
					assert.NoError(t, validate.Struct(&small{ID: "x"}))
				case 3:
					err := validate.Struct(small{})
					assert.ErrorIs(t, err, validate.ErrInvalid)
				}
			}
		}()
	}
	wg.Wait()
}

func TestErrorIsOnlyErrInvalid(t *testing.T) {
	err := &validate.Error{Type: "X"}
	assert.True(t, errors.Is(err, validate.ErrInvalid))
	assert.False(t, errors.Is(err, errors.New("kavari: invalid message")))
}

type benchSmall struct {
	OrderID string `json:"order_id" validate:"required"`
	Amount  int64  `json:"amount" validate:"gt=0"`
}

type benchNoTags struct {
	OrderID string `json:"order_id"`
	Amount  int64  `json:"amount"`
	Note    string `json:"note"`
}

func BenchmarkStructValidSmall(b *testing.B) {
	m := &benchSmall{OrderID: "o-1", Amount: 10}
	b.ReportAllocs()
	for b.Loop() {
		if err := validate.Struct(m); err != nil {
			b.Fatal(err)
		}
	}
}

type benchRequired struct {
	OrderID string `json:"order_id" validate:"required"`
	Amount  int64  `json:"amount" validate:"required"`
	Note    string `json:"note"`
}

// BenchmarkStructValidRequired: a type whose only rules are required
// fields of basic kinds (the plan of fast.go).
func BenchmarkStructValidRequired(b *testing.B) {
	m := &benchRequired{OrderID: "o-1", Amount: 10}
	b.ReportAllocs()
	for b.Loop() {
		if err := validate.Struct(m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStructNoTags(b *testing.B) {
	m := &benchNoTags{OrderID: "o-1", Amount: 10}
	b.ReportAllocs()
	for b.Loop() {
		if err := validate.Struct(m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStructInvalidSmall(b *testing.B) {
	m := &benchSmall{Amount: -1}
	b.ReportAllocs()
	for b.Loop() {
		if err := validate.Struct(m); err == nil {
			b.Fatal("want an error")
		}
	}
}

func BenchmarkStructValidNested(b *testing.B) {
	m := validOrder()
	b.ReportAllocs()
	for b.Loop() {
		if err := validate.Struct(m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStructInvalidNested(b *testing.B) {
	m := validOrder()
	m.Customer.Address.Zip = ""
	m.Items = append(m.Items, Item{})
	b.ReportAllocs()
	for b.Loop() {
		if err := validate.Struct(m); err == nil {
			b.Fatal("want an error")
		}
	}
}
