package kavari_test

// Benchmarks of the per-message work that involves no I/O:
//
//	go test -run XXX -bench . -benchmem -count 3
//
// BenchmarkEncodeValidate is the whole publish path before the Writer
// (validate, key, JSON, headers); BenchmarkDecode the whole consume path
// before a handler (headers, type lookup, JSON, validate).

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/validate"
)

type ktBenchLine struct {
	SKU   string `json:"sku" validate:"required"`
	Qty   int    `json:"qty" validate:"min=1"`
	Price int64  `json:"price" validate:"gte=0"`
}

type ktBenchOrder struct {
	kavari.Message `kavari:"topic=kt-bench,key=OrderID,name=bench.order,version=1"`
	OrderID        string            `json:"order_id" validate:"required"`
	Customer       string            `json:"customer" validate:"required,email"`
	Amount         int64             `json:"amount" validate:"gt=0"`
	Currency       string            `json:"currency" validate:"len=3"`
	Lines          []ktBenchLine     `json:"lines" validate:"min=1,dive"`
	Labels         map[string]string `json:"labels,omitempty"`
	PlacedAt       time.Time         `json:"placed_at"`
}

func ktBenchMessage() *ktBenchOrder {
	return &ktBenchOrder{
		OrderID: "order-000123", Customer: "someone@example.com", Amount: 4250, Currency: "EUR",
		Lines: []ktBenchLine{
			{SKU: "sku-1", Qty: 1, Price: 1000},
			{SKU: "sku-2", Qty: 2, Price: 1250},
			{SKU: "sku-3", Qty: 1, Price: 750},
		},
		Labels:   map[string]string{"channel": "web"},
		PlacedAt: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
	}
}

// BenchmarkTagLookup is the cached per-type description every publish and
// registration starts with.
func BenchmarkTagLookup(b *testing.B) {
	msg := ktBenchMessage()
	if _, err := kavari.CachedTypeInfo(msg); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := kavari.CachedTypeInfo(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTagLookupParallel(b *testing.B) {
	msg := ktBenchMessage()
	if _, err := kavari.CachedTypeInfo(msg); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := kavari.CachedTypeInfo(msg); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkEncode is the encoding without validation: the partition key
// (cached type, key extraction) and the JSON value, as kavari produces them.
func BenchmarkEncode(b *testing.B) {
	msg := ktBenchMessage()
	b.ReportAllocs()
	for b.Loop() {
		info, err := kavari.DescribeMessage(msg)
		if err != nil || len(info.Key) == 0 {
			b.Fatal(err)
		}
		if _, err := json.Marshal(msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkValidate is go-playground validation through kavari's wrapper,
// and the validator called directly for comparison.
func BenchmarkValidate(b *testing.B) {
	msg := ktBenchMessage()
	b.Run("kavari", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := validate.Struct(msg); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("validator", func(b *testing.B) {
		v := validate.Validator()
		b.ReportAllocs()
		for b.Loop() {
			if err := v.Struct(msg); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkValidateInvalid is the cost of building the field-by-field error.
func BenchmarkValidateInvalid(b *testing.B) {
	msg := ktBenchMessage()
	msg.Amount, msg.Currency, msg.Lines[1].Qty = -1, "EURO", 0
	b.ReportAllocs()
	for b.Loop() {
		if err := validate.Struct(msg); err == nil {
			b.Fatal("valid")
		}
	}
}

// ktSmallOrder is the README's message: two fields, two rules.
type ktSmallOrder struct {
	kavari.Message `kavari:"topic=kt-bench-small,key=OrderID"`
	OrderID        string `json:"order_id" validate:"required"`
	Amount         int64  `json:"amount"   validate:"gt=0"`
}

// ktBenchCases are the messages the path benchmarks run on: the README's
// two-field message and a richer one (nested slice with dive, map, time).
func ktBenchCases() []struct {
	name string
	msg  any
} {
	return []struct {
		name string
		msg  any
	}{
		{"small", &ktSmallOrder{OrderID: "order-000123", Amount: 4250}},
		{"rich", ktBenchMessage()},
	}
}

// BenchmarkEncodeValidate is the per-message publish path without I/O:
// validation, key, JSON value and CloudEvents headers.
func BenchmarkEncodeValidate(b *testing.B) {
	ctx := context.Background()
	for _, c := range ktBenchCases() {
		b.Run(c.name, func(b *testing.B) {
			encode := kavari.Encoder("bench", 1_000_000)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := encode(ctx, c.msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecode is the per-record consume path before a handler: msg_type
// header, route lookup, JSON decode into a new message, validation.
func BenchmarkDecode(b *testing.B) {
	for _, c := range ktBenchCases() {
		b.Run(c.name, func(b *testing.B) {
			reg := kavari.NewRegistry()
			if err := kavari.DeclareAny(reg, c.msg); err != nil {
				b.Fatal(err)
			}
			kavari.FreezeRegistry(reg) // as after Start: the lock-free route table
			rec, err := kavari.EncodeRecord(context.Background(), "bench", 0, nil, c.msg)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(rec.Value)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := kavari.DecodeRecord(reg, &rec); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
