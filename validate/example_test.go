package validate_test

import (
	"errors"
	"fmt"

	"github.com/kavari-go/kavari/validate"
)

func ExampleStruct() {
	type Line struct {
		SKU string `json:"sku" validate:"required"`
	}
	type OrderPlaced struct {
		OrderID string `json:"order_id" validate:"required"`
		Amount  int64  `json:"amount" validate:"gt=0"`
		Lines   []Line `json:"lines" validate:"dive"`
	}

	err := validate.Struct(&OrderPlaced{Amount: -1, Lines: []Line{{SKU: "a"}, {}}})
	fmt.Println(errors.Is(err, validate.ErrInvalid))
	fmt.Println(err)

	var verr *validate.Error
	if errors.As(err, &verr) {
		for _, f := range verr.Fields {
			fmt.Printf("%s rule=%s param=%q value=%v\n", f.Path, f.Rule, f.Param, f.Value)
		}
	}
	// Output:
	// true
	// kavari: invalid OrderPlaced: order_id: required; amount: must satisfy gt=0 (got -1); lines[1].sku: required
	// order_id rule=required param="" value=
	// amount rule=gt param="0" value=-1
	// lines[1].sku rule=required param="" value=
}
