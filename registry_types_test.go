package kavari_test

import (
	"context"
	"reflect"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
)

type ktTypesShipped struct {
	kavari.Message `kavari:"topic=kt-types-b,key=Order.ID,name=order.shipped,version=3"`
	Order          struct {
		ID string `json:"id"`
	} `json:"order"`
}

type ktTypesKeyed struct {
	kavari.Message `kavari:"topic=kt-types-a,key=ID"`
	ID             string `json:"id"`
}

func (m *ktTypesKeyed) PartitionKey() string { return "k-" + m.ID }

type ktTypesAudit struct {
	kavari.Message `kavari:"topic=kt-types-b"`
}

type ktTypesText struct {
	kavari.Message `kavari:"topic=kt-types-c,codec=text"`
	Payload        string `json:"payload"`
}

type ktTypesHandler struct{}

func (*ktTypesHandler) Handle(context.Context, *ktTypesShipped) error { return nil }

func TestRegistryTypes(t *testing.T) {
	r := kavari.NewRegistry()
	require.NoError(t, kavari.RegisterOn(r, &ktTypesShipped{}, func() *ktTypesHandler { return &ktTypesHandler{} }))
	require.NoError(t, kavari.RegisterFuncOn(r, &ktTypesShipped{}, func(context.Context, *ktTypesShipped) error { return nil }))
	require.NoError(t, r.Declare(&ktTypesAudit{}))
	require.NoError(t, r.Declare(&ktTypesKeyed{}))
	require.NoError(t, r.Declare(&ktTypesText{}))

	got := r.Types()
	want := []kavari.MessageType{
		{GoType: reflect.TypeFor[ktTypesKeyed](), Topic: "kt-types-a", Name: "ktTypesKeyed", KeyMethod: true, Codec: kavari.JSON},
		{GoType: reflect.TypeFor[ktTypesAudit](), Topic: "kt-types-b", Name: "ktTypesAudit", Codec: kavari.JSON},
		{
			GoType: reflect.TypeFor[ktTypesShipped](), Topic: "kt-types-b", Name: "order.shipped", Version: "3",
			KeyField: "Order.ID",
			Handlers: []string{"*kavari_test.ktTypesHandler", "github.com/kavari-go/kavari_test.TestRegistryTypes.func2"},
			Codec:    kavari.JSON,
		},
		{GoType: reflect.TypeFor[ktTypesText](), Topic: "kt-types-c", Name: "ktTypesText", Codec: kavari.Text},
	}
	assert.Equal(t, want, got)

	// A copy: changing it leaves the registry alone.
	got[2].Handlers[0] = "changed"
	assert.Equal(t, "*kavari_test.ktTypesHandler", r.Types()[2].Handlers[0])
	assert.Empty(t, kavari.NewRegistry().Types())
}
