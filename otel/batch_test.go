package kavariotel_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/kavari-go/kavari"
	kavariotel "github.com/kavari-go/kavari/otel"
)

type batchOrder struct {
	kavari.Message `kavari:"topic=kavari-otel-batch,key=ID"`
	ID             string `json:"id" validate:"required"`
}

// A PublishBatch refused because one message is invalid sends nothing and
// leaves no producer span open: every span started is ended.
func TestTraceRefusedBatchLeaksNoSpan(t *testing.T) {
	s := newSetup(t, "")
	started := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(started), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	inst := kavariotel.New(kavariotel.Config{TracerProvider: tp})
	reg := kavari.NewRegistry()
	require.NoError(t, reg.Declare(&batchOrder{}))
	k := s.kavari(t, "", reg, false, func(c *kavari.Config) {
		c.Consume.GroupID = ""
		c.Hooks = []kavari.Hook{inst}
	})
	_, err := k.PublishBatch(context.Background(), &batchOrder{ID: "a"}, &batchOrder{}, &batchOrder{ID: "c"})
	require.ErrorIs(t, err, kavari.ErrInvalid)
	assert.Len(t, started.Ended(), len(started.Started()), "a producer span started for a message of the refused batch was never ended")
}
