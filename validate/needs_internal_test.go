package validate

import (
	"errors"
	"testing"

	"github.com/go-playground/validator/v10"
)

type plainLine struct {
	SKU string `json:"sku"`
}

type plainMsg struct {
	ID    string            `json:"id"`
	Lines []plainLine       `json:"lines"`
	Tags  map[string]string `json:"tags"`
}

type deepLine struct {
	SKU string `json:"sku" validate:"required"`
}

type deepMsg struct {
	ID   string      `json:"id"`
	Line *deepLine   `json:"line"`
	More []*deepLine `json:"more" validate:"dive"`
}

type ruledByHand struct {
	N int `json:"n"`
}

// A type without any rule costs nothing to validate (no allocation: the
// validator is not run); one with a rule deep inside is still validated;
// once the shared instance is exposed, a struct-level rule registered on it
// applies to a type without tags.
func TestStructSkipsTypesWithoutRules(t *testing.T) {
	was := exposed.Load()
	exposed.Store(false)
	defer exposed.Store(was)
	msg := &plainMsg{Lines: []plainLine{{}}}
	if n := testing.AllocsPerRun(100, func() {
		if err := Struct(msg); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("validating a type without rules allocates %v times", n)
	}
	if err := Struct(&deepMsg{Line: &deepLine{}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("nested rule not checked: %v", err)
	}
	if err := Struct(&deepMsg{More: []*deepLine{{SKU: "a"}, {}}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("rule behind dive not checked: %v", err)
	}
	Validator().RegisterStructValidation(func(sl validator.StructLevel) {
		if sl.Current().Interface().(ruledByHand).N < 0 {
			sl.ReportError(sl.Current().Field(0).Interface(), "N", "N", "nonnegative", "")
		}
	}, ruledByHand{})
	if err := Struct(&ruledByHand{N: -1}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("struct-level rule on a type without tags not checked: %v", err)
	}
}
