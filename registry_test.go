package kavari_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
)

type ktRegOrder struct {
	kavari.Message `kavari:"topic=kt-reg-orders,key=ID"`
	Run            string `json:"run"`
	ID             string `json:"id" validate:"required"`
}

type ktRegRefund struct {
	kavari.Message `kavari:"topic=kt-reg-orders,key=ID"`
	ID             string `json:"id"`
}

type ktRegAudit struct {
	kavari.Message `kavari:"topic=kt-reg-audit"`
}

type ktRegHandlerA struct{}

func (*ktRegHandlerA) Handle(context.Context, *ktRegOrder) error { return nil }

type ktRegHandlerB struct{}

func (*ktRegHandlerB) Handle(context.Context, *ktRegOrder) error { return nil }

// A value handler type: H is ktRegHandlerV, not a pointer.
type ktRegHandlerV struct{}

func (ktRegHandlerV) Handle(context.Context, *ktRegOrder) error { return nil }

func TestNewRegistry(t *testing.T) {
	r := kavari.NewRegistry()
	assert.Empty(t, r.Topics())
	assert.NotSame(t, r, kavari.NewRegistry())
	assert.NotSame(t, r, kavari.DefaultRegistry)
}

func TestRegisterVariants(t *testing.T) {
	r := kavari.NewRegistry()
	require.NoError(t, kavari.RegisterOn(r, &ktRegOrder{}, func() *ktRegHandlerA { return &ktRegHandlerA{} }))
	// Several handlers per message type.
	require.NoError(t, kavari.RegisterOn(r, &ktRegOrder{}, func() *ktRegHandlerB { return &ktRegHandlerB{} }))
	require.NoError(t, kavari.RegisterOn(r, &ktRegOrder{}, func() ktRegHandlerV { return ktRegHandlerV{} }))
	require.NoError(t, kavari.RegisterFuncOn(r, &ktRegOrder{}, func(context.Context, *ktRegOrder) error { return nil }))
	require.NoError(t, kavari.RegisterFuncOn(r, &ktRegOrder{}, func(context.Context, *ktRegOrder) error { return nil }),
		"functions have no type to compare: two are two handlers")
	require.NoError(t, kavari.RegisterProvidedOn(r, &ktRegRefund{}, kavari.Handler[ktRegRefund](nil)))
	require.NoError(t, r.Declare(&ktRegAudit{}))
	require.NoError(t, r.Declare(&ktRegAudit{}), "declaring again is harmless")
	require.NoError(t, r.Declare(&ktRegOrder{}), "declaring a type with handlers is harmless")
	assert.Equal(t, []string{"kt-reg-audit", "kt-reg-orders"}, r.Topics(), "sorted, each once")

	// Topics returns a copy.
	topics := r.Topics()
	topics[0] = "changed"
	assert.Equal(t, []string{"kt-reg-audit", "kt-reg-orders"}, r.Topics())
}

func TestRegisterNilFactoryOrFunc(t *testing.T) {
	r := kavari.NewRegistry()
	err := kavari.RegisterOn[ktRegOrder, *ktRegOrder, *ktRegHandlerA](r, &ktRegOrder{}, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "nil factory")
	err = kavari.RegisterFuncOn(r, &ktRegOrder{}, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "nil function")
	assert.Empty(t, r.Topics(), "a failed registration leaves nothing behind")
}

func TestRegisterBadMessages(t *testing.T) {
	r := kavari.NewRegistry()
	fn := func(context.Context, *ktRegOrder) error { return nil }
	require.ErrorIs(t, kavari.RegisterFuncOn(r, (*ktRegOrder)(nil), fn), kavari.ErrNilMessage)
	var te *kavari.TagError
	require.ErrorAs(t, kavari.RegisterFuncOn(r, &ktTagMissingTopic{}, func(context.Context, *ktTagMissingTopic) error { return nil }), &te)
	require.ErrorAs(t, kavari.RegisterOn(r, &ktKeyFloat{}, func() *ktKeyFloatHandler { return nil }), &te)
	require.ErrorIs(t, r.Declare(nil), kavari.ErrNilMessage)
	require.ErrorIs(t, r.Declare((*ktRegAudit)(nil)), kavari.ErrNilMessage)
	assert.Empty(t, r.Topics())
}

func TestRegisterDuplicateHandler(t *testing.T) {
	r := kavari.NewRegistry()
	require.NoError(t, kavari.RegisterOn(r, &ktRegOrder{}, func() *ktRegHandlerA { return &ktRegHandlerA{} }))
	err := kavari.RegisterOn(r, &ktRegOrder{}, func() *ktRegHandlerA { return &ktRegHandlerA{} })
	require.ErrorIs(t, err, kavari.ErrDuplicate)
	assert.Contains(t, err.Error(), "ktRegHandlerA")
	// A provided registration of the same handler type is the same handler.
	require.ErrorIs(t, kavari.RegisterProvidedOn(r, &ktRegOrder{}, (*ktRegHandlerA)(nil)), kavari.ErrDuplicate)

	require.NoError(t, kavari.RegisterProvidedOn(r, &ktRegOrder{}, (*ktRegHandlerB)(nil)))
	require.ErrorIs(t, kavari.RegisterProvidedOn(r, &ktRegOrder{}, (*ktRegHandlerB)(nil)), kavari.ErrDuplicate)
	require.ErrorIs(t, kavari.RegisterOn(r, &ktRegOrder{}, func() *ktRegHandlerB { return nil }), kavari.ErrDuplicate)

	// A value type and its pointer type are different handlers.
	require.NoError(t, kavari.RegisterOn(r, &ktRegOrder{}, func() ktRegHandlerV { return ktRegHandlerV{} }))
	require.ErrorIs(t, kavari.RegisterOn(r, &ktRegOrder{}, func() ktRegHandlerV { return ktRegHandlerV{} }), kavari.ErrDuplicate)
}

type ktRegSameNameA struct {
	kavari.Message `kavari:"topic=kt-reg-names,name=kt.same"`
}

type ktRegSameNameB struct {
	kavari.Message `kavari:"topic=kt-reg-names,name=kt.same,version=2"`
}

type ktRegSameNameOtherTopic struct {
	kavari.Message `kavari:"topic=kt-reg-names-2,name=kt.same"`
}

// ktRegDefaultName's default logical name, "ktRegSameNameA", collides with
// ktRegSameNameA's Go name but not its logical name.
type ktRegDefaultName struct {
	kavari.Message `kavari:"topic=kt-reg-names,name=ktRegSameNameA"`
}

func TestRegisterDuplicateLogicalName(t *testing.T) {
	r := kavari.NewRegistry()
	require.NoError(t, r.Declare(&ktRegSameNameA{}))
	err := r.Declare(&ktRegSameNameB{})
	require.ErrorIs(t, err, kavari.ErrDuplicate)
	assert.Contains(t, err.Error(), `"kt.same"`)
	assert.Contains(t, err.Error(), "kt-reg-names")
	require.ErrorIs(t, kavari.RegisterFuncOn(r, &ktRegSameNameB{}, func(context.Context, *ktRegSameNameB) error { return nil }), kavari.ErrDuplicate)

	require.NoError(t, r.Declare(&ktRegSameNameOtherTopic{}), "the same name on another topic is another route")
	require.NoError(t, r.Declare(&ktRegDefaultName{}))
	assert.Equal(t, []string{"kt-reg-names", "kt-reg-names-2"}, r.Topics())
}

type ktRegBadRule struct {
	kavari.Message `kavari:"topic=kt-reg-bad-rule"`
	ID             string `json:"id" validate:"required,no_such_rule"`
}

type ktRegBadRuleNested struct {
	kavari.Message `kavari:"topic=kt-reg-bad-rule"`
	Inner          struct {
		N int `json:"n" validate:"gt="`
	} `json:"inner"`
}

type ktRegRequiredFields struct {
	kavari.Message `kavari:"topic=kt-reg-required"`
	ID             string    `json:"id" validate:"required"`
	When           time.Time `json:"when" validate:"required"`
	N              int       `json:"n" validate:"gt=0"`
}

func TestRegisterFindsMalformedValidateTag(t *testing.T) {
	r := kavari.NewRegistry()
	for _, msg := range []kavari.Msg{&ktRegBadRule{}, &ktRegBadRuleNested{}} {
		err := r.Declare(msg)
		require.Error(t, err, "%T", msg)
		assert.NotErrorIs(t, err, kavari.ErrInvalid, "a bad rule is a programming error, not an invalid message")
		assert.Contains(t, err.Error(), "kavari: validate")
	}
	err := kavari.RegisterFuncOn(r, &ktRegBadRule{}, func(context.Context, *ktRegBadRule) error { return nil })
	require.Error(t, err)
	assert.Empty(t, r.Topics())

	// The zero value failing "required" does not make the type unregistrable.
	require.NoError(t, r.Declare(&ktRegRequiredFields{}))

	// Publishing a type with a bad rule is an error too, never a panic.
	_, err = kavari.EncodeRecord(context.Background(), "src", 0, nil, &ktRegBadRule{ID: "x"})
	require.Error(t, err)
	assert.NotErrorIs(t, err, kavari.ErrInvalid)
}

func TestRegistryConcurrentRegistration(t *testing.T) {
	r := kavari.NewRegistry()
	var wg sync.WaitGroup
	errs := make([]error, 32)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%2 == 0 {
				errs[i] = kavari.RegisterOn(r, &ktRegOrder{}, func() *ktRegHandlerA { return &ktRegHandlerA{} })
			} else {
				errs[i] = r.Declare(&ktRegAudit{})
				_ = r.Topics()
			}
		}()
	}
	wg.Wait()
	ok, dup := 0, 0
	for i, err := range errs {
		switch {
		case err == nil && i%2 == 0:
			ok++
		case errors.Is(err, kavari.ErrDuplicate):
			dup++
		case err != nil:
			t.Fatalf("goroutine %d: %v", i, err)
		}
	}
	assert.Equal(t, 1, ok, "exactly one registration of handler A won")
	assert.Equal(t, 15, dup)
	assert.Equal(t, []string{"kt-reg-audit", "kt-reg-orders"}, r.Topics())
}

type ktFrozenMsg struct {
	kavari.Message `kavari:"topic=kt-reg-frozen,key=ID"`
	Run            string `json:"run"`
	ID             string `json:"id"`
}

type ktFrozenLate struct {
	kavari.Message `kavari:"topic=kt-reg-frozen-late"`
}

type ktFrozenHandler struct {
	seen func(h string, m *ktFrozenMsg)
}

func (h *ktFrozenHandler) Handle(_ context.Context, m *ktFrozenMsg) error {
	h.seen("struct", m)
	return nil
}

// Every handler registered for a type runs for each message; once a
// consumer started, the registry refuses registrations.
func TestRegistryFrozenAfterStart(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	run := testenv.ID("run")
	reg := kavari.NewRegistry()
	var mu sync.Mutex
	seen := map[string]int{}
	record := func(h string, m *ktFrozenMsg) {
		if m.Run != run {
			return
		}
		mu.Lock()
		seen[h]++
		mu.Unlock()
	}
	require.NoError(t, kavari.RegisterOn(reg, &ktFrozenMsg{}, func() *ktFrozenHandler { return &ktFrozenHandler{seen: record} }))
	require.NoError(t, kavari.RegisterFuncOn(reg, &ktFrozenMsg{}, func(_ context.Context, m *ktFrozenMsg) error {
		record("func-1", m)
		return nil
	}))
	require.NoError(t, kavari.RegisterFuncOn(reg, &ktFrozenMsg{}, func(_ context.Context, m *ktFrozenMsg) error {
		record("func-2", m)
		return nil
	}))
	k := ktNew(t, brokers, reg)
	require.NoError(t, k.Start(context.Background()))

	fn := func(context.Context, *ktFrozenMsg) error { return nil }
	require.ErrorIs(t, kavari.RegisterFuncOn(reg, &ktFrozenMsg{}, fn), kavari.ErrFrozen)
	require.ErrorIs(t, kavari.RegisterOn(reg, &ktFrozenMsg{}, func() *ktRegHandlerFrozen { return nil }), kavari.ErrFrozen)
	require.ErrorIs(t, kavari.RegisterProvidedOn(reg, &ktFrozenMsg{}, (*ktRegHandlerFrozen)(nil)), kavari.ErrFrozen)
	require.ErrorIs(t, reg.Declare(&ktFrozenLate{}), kavari.ErrFrozen)
	require.ErrorIs(t, reg.Declare(&ktFrozenMsg{}), kavari.ErrFrozen)
	assert.Equal(t, []string{"kt-reg-frozen"}, reg.Topics(), "a frozen registry still answers")

	// A second Client on the same registry sees it frozen as well.
	k2, err := kavari.New(kavari.Config{Brokers: brokers, Registry: reg, Logger: ktLogger()})
	require.NoError(t, err)
	defer func() { _ = k2.Stop(context.Background()) }()
	require.ErrorIs(t, kavari.RegisterFuncOn(reg, &ktFrozenLate{}, func(context.Context, *ktFrozenLate) error { return nil }), kavari.ErrFrozen)

	const n = 5
	for i := 0; i < n; i++ {
		_, err := k.Publish(context.Background(), &ktFrozenMsg{Run: run, ID: "k"})
		require.NoError(t, err)
	}
	ktWait(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return seen["struct"] >= n && seen["func-1"] >= n && seen["func-2"] >= n
	}, "every handler of the type runs for each message: %v", seen)
}

type ktRegHandlerFrozen struct{}

func (*ktRegHandlerFrozen) Handle(context.Context, *ktFrozenMsg) error { return nil }

// ---- package-level functions on DefaultRegistry ----
// DefaultRegistry is global: these types are used nowhere else, and no test
// starts a Client on it.

type ktDefaultMsg struct {
	kavari.Message `kavari:"topic=kt-default-registry,key=ID"`
	ID             string `json:"id"`
}

type ktDefaultDeclared struct {
	kavari.Message `kavari:"topic=kt-default-registry-declared"`
}

type ktDefaultHandler struct{}

func (*ktDefaultHandler) Handle(context.Context, *ktDefaultMsg) error { return nil }

type ktDefaultProvided struct{}

func (*ktDefaultProvided) Handle(context.Context, *ktDefaultMsg) error { return nil }

// ktDefaultRegistered is set once this process registered the types above on
// the global DefaultRegistry (go test -count=N runs the test N times).
var ktDefaultRegistered atomic.Bool

func TestPackageLevelRegisterUsesDefaultRegistry(t *testing.T) {
	err := kavari.Register(&ktDefaultMsg{}, func() *ktDefaultHandler { return &ktDefaultHandler{} })
	if errors.Is(err, kavari.ErrFrozen) {
		t.Skip("DefaultRegistry was frozen by another test that started a Client without Config.Registry")
	}
	if ktDefaultRegistered.Load() {
		require.ErrorIs(t, err, kavari.ErrDuplicate, "registered by an earlier run of this test")
	} else {
		require.NoError(t, err)
		require.NoError(t, kavari.RegisterFunc(&ktDefaultMsg{}, func(context.Context, *ktDefaultMsg) error { return nil }))
		require.NoError(t, kavari.RegisterProvided(&ktDefaultMsg{}, (*ktDefaultProvided)(nil)))
		require.NoError(t, kavari.Declare(&ktDefaultDeclared{}))
		ktDefaultRegistered.Store(true)
	}

	require.ErrorIs(t, kavari.Register(&ktDefaultMsg{}, func() *ktDefaultHandler { return nil }), kavari.ErrDuplicate)
	require.ErrorIs(t, kavari.RegisterProvided(&ktDefaultMsg{}, (*ktDefaultProvided)(nil)), kavari.ErrDuplicate)
	require.ErrorIs(t, kavari.DeclareAny(kavari.DefaultRegistry, &ktNoMarker{}), kavari.ErrNotMessage)

	topics := kavari.DefaultRegistry.Topics()
	assert.Contains(t, topics, "kt-default-registry")
	assert.Contains(t, topics, "kt-default-registry-declared")

	// A Config without a Registry uses DefaultRegistry: its EnsureTopics
	// would create these topics (checked without a broker via the defaults).
	cfg, err := kavari.ConfigWithDefaults(kavari.Config{Brokers: []string{"127.0.0.1:1"}})
	require.NoError(t, err)
	assert.Same(t, kavari.DefaultRegistry, cfg.Registry)
}

type ktKeyFloatHandler struct{}

func (*ktKeyFloatHandler) Handle(context.Context, *ktKeyFloat) error { return nil }
