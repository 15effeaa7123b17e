package kavari_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
)

func TestPanicErrorUnwrapsAPanickedError(t *testing.T) {
	err := error(&kavari.PanicError{Value: io.ErrUnexpectedEOF})
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF, "a panic with an error value unwraps to it")
	var pe *kavari.PanicError
	require.ErrorAs(t, err, &pe)
	assert.NotErrorIs(t, error(&kavari.PanicError{Value: "boom"}), io.ErrUnexpectedEOF)
	assert.Nil(t, errors.Unwrap(&kavari.PanicError{Value: "boom"}), "a non-error value unwraps to nil")
}

type ktFuncNameMsg struct {
	kavari.Message `kavari:"topic=kt-func-names"`
}

func ktNamedHandler(context.Context, *ktFuncNameMsg) error      { return nil }
func ktOtherNamedHandler(context.Context, *ktFuncNameMsg) error { return nil }

func TestRegisterFuncDuplicateAndNames(t *testing.T) {
	r := kavari.NewRegistry()
	require.NoError(t, kavari.RegisterFuncOn(r, &ktFuncNameMsg{}, ktNamedHandler))
	err := kavari.RegisterFuncOn(r, &ktFuncNameMsg{}, ktNamedHandler)
	require.ErrorIs(t, err, kavari.ErrDuplicate, "the same function registered twice")
	assert.Contains(t, err.Error(), "ktNamedHandler")

	require.NoError(t, kavari.RegisterFuncOn(r, &ktFuncNameMsg{}, ktOtherNamedHandler))
	anon := func(context.Context, *ktFuncNameMsg) error { return nil }
	require.NoError(t, kavari.RegisterFuncOn(r, &ktFuncNameMsg{}, anon))
	require.ErrorIs(t, kavari.RegisterFuncOn(r, &ktFuncNameMsg{}, anon), kavari.ErrDuplicate)
	// Two closures of one literal are different handlers (they may capture
	// different state), so both are accepted, under distinct names.
	for _, tenant := range []string{"a", "b"} {
		require.NoError(t, kavari.RegisterFuncOn(r, &ktFuncNameMsg{}, func(context.Context, *ktFuncNameMsg) error {
			_ = tenant
			return nil
		}))
	}
	names := kavari.HandlerNames(r, &ktFuncNameMsg{})
	require.Len(t, names, 5)
	assert.True(t, strings.HasSuffix(names[0], "ktNamedHandler"), names[0])
	assert.True(t, strings.HasSuffix(names[1], "ktOtherNamedHandler"), names[1])
	seen := map[string]bool{}
	for _, n := range names {
		assert.False(t, seen[n], "two handlers share the name %q in %v", n, names)
		seen[n] = true
	}
}

type ktStartErrMsg struct {
	kavari.Message `kavari:"topic=kt-start-errors"`
}

func TestStartErrorsAreSentinels(t *testing.T) {
	reg := kavari.NewRegistry()
	require.NoError(t, reg.Declare(&ktStartErrMsg{}))
	k, err := kavari.New(kavari.Config{Brokers: []string{"127.0.0.1:1"}, Registry: reg, Logger: ktLogger()})
	require.NoError(t, err)
	defer func() { _ = k.Stop(context.Background()) }()
	assert.ErrorIs(t, k.Start(context.Background()), kavari.ErrNoGroupID)
	assert.ErrorIs(t, k.Start(context.Background()), kavari.ErrNoGroupID, "a failed Start can be retried, and fails the same way")

	k2, err := kavari.New(kavari.Config{Brokers: []string{"127.0.0.1:1"}, Registry: reg, Logger: ktLogger(), Consume: kavari.ConsumeConfig{GroupID: "g"}})
	require.NoError(t, err)
	defer func() { _ = k2.Stop(context.Background()) }()
	assert.ErrorIs(t, k2.Start(context.Background()), kavari.ErrNoHandlers)
}

type ktStartTwiceMsg struct {
	kavari.Message `kavari:"topic=kt-start-twice"`
}

func TestStartAfterSuccessIsErrStarted(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	reg := kavari.NewRegistry()
	require.NoError(t, kavari.RegisterFuncOn(reg, &ktStartTwiceMsg{}, func(context.Context, *ktStartTwiceMsg) error { return nil }))
	k, err := kavari.New(kavari.Config{Brokers: brokers, Registry: reg, Logger: ktLogger(), Consume: kavari.ConsumeConfig{GroupID: testenv.ID("kt-start-twice")}, Topics: kavari.TopicConfig{Create: true}})
	require.NoError(t, err)
	defer func() { _ = k.Stop(context.Background()) }()
	require.NoError(t, k.Start(context.Background()))
	assert.ErrorIs(t, k.Start(context.Background()), kavari.ErrStarted, "Start succeeds once")
}

type ktBatchErrMsg struct {
	kavari.Message `kavari:"topic=kt-batch-errors,key=ID"`
	ID             string `json:"id" validate:"required"`
}

func TestPublishBatchErrorIsTyped(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	reg := kavari.NewRegistry()
	require.NoError(t, reg.Declare(&ktBatchErrMsg{}))
	k := ktNew(t, brokers, reg)

	_, err := k.PublishBatch(context.Background(), &ktBatchErrMsg{ID: "a"}, &ktBatchErrMsg{}, &ktBatchErrMsg{ID: "c"})
	var be *kavari.BatchError
	require.ErrorAs(t, err, &be)
	assert.True(t, be.Refused, "an invalid message refuses the whole batch")
	require.Len(t, be.Failed, 3)
	for i, pe := range be.Failed {
		assert.Equal(t, i, pe.Index)
	}
	assert.ErrorIs(t, be.Failed[1], kavari.ErrInvalid)
	assert.ErrorIs(t, err, kavari.ErrInvalid)
	var pe *kavari.PublishError
	assert.ErrorAs(t, err, &pe, "errors.As still finds a *PublishError")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = k.PublishBatch(ctx, &ktBatchErrMsg{ID: "a"}, &ktBatchErrMsg{ID: "b"})
	require.ErrorAs(t, err, &be)
	assert.False(t, be.Refused, "valid messages: each was tried")
	assert.Len(t, be.Failed, 2)
	assert.ErrorIs(t, err, context.Canceled)
}
