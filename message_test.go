package kavari_test

import (
	"errors"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
)

// ---- tag parsing ----

type ktTagFull struct {
	kavari.Message `kavari:"topic=kt-tags,key=ID,name=tag.full,version=3"`
	ID             string
}

type ktTagDefaults struct {
	kavari.Message `kavari:"topic=kt-tags"`
	ID             string
}

type ktTagSpaces struct {
	kavari.Message `kavari:"  topic = kt-tags ,  key= ID ,name =tag.spaced,  version = 1.2 , "`
	ID             string
}

type ktTagUnknownKey struct {
	kavari.Message `kavari:"topic=kt-tags,partition=3"`
}

type ktTagDuplicateKey struct {
	kavari.Message `kavari:"topic=kt-tags,name=a,name=b"`
}

type ktTagDuplicateTopic struct {
	kavari.Message `kavari:"topic=kt-tags,topic=kt-other"`
}

type ktTagMissingTopic struct {
	kavari.Message `kavari:"key=ID,name=x"`
	ID             string
}

type ktTagEmpty struct {
	kavari.Message `kavari:""`
}

type ktTagNone struct {
	kavari.Message
}

type ktTagOtherTagOnly struct {
	kavari.Message `json:"-"`
}

type ktTagBadTopicChar struct {
	kavari.Message `kavari:"topic=kt/tags"`
}

type ktTagBadTopicSpace struct {
	kavari.Message `kavari:"topic=kt tags"`
}

type ktTagBadTopicUnicode struct {
	kavari.Message `kavari:"topic=kt-tägs"`
}

type ktTagBadTopicDot struct {
	kavari.Message `kavari:"topic=."`
}

type ktTagBadTopicDotDot struct {
	kavari.Message `kavari:"topic=.."`
}

type ktTagTopicTooLong struct {
	kavari.Message `kavari:"topic=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"`
}

type ktTagTopicMaxLen struct {
	kavari.Message `kavari:"topic=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"`
}

type ktTagAllTopicChars struct {
	kavari.Message `kavari:"topic=kt-Tags_0.9"`
}

type ktTagNoValue struct {
	kavari.Message `kavari:"topic=kt-tags,key="`
}

type ktTagNoEquals struct {
	kavari.Message `kavari:"topic"`
}

func TestTagParsing(t *testing.T) {
	for _, tc := range []struct {
		name string
		msg  any
		want kavari.MessageInfo
	}{
		{"all keys", &ktTagFull{ID: "k"}, kavari.MessageInfo{Topic: "kt-tags", Name: "tag.full", Version: "3", Key: []byte("k")}},
		{"defaults: name is the Go type name, no version, no key", &ktTagDefaults{ID: "k"}, kavari.MessageInfo{Topic: "kt-tags", Name: "ktTagDefaults"}},
		{"whitespace and a trailing comma", &ktTagSpaces{ID: "k"}, kavari.MessageInfo{Topic: "kt-tags", Name: "tag.spaced", Version: "1.2", Key: []byte("k")}},
		{"every allowed topic character", &ktTagAllTopicChars{}, kavari.MessageInfo{Topic: "kt-Tags_0.9", Name: "ktTagAllTopicChars"}},
		{"249-character topic", &ktTagTopicMaxLen{}, kavari.MessageInfo{Topic: string(repeatByte('a', 249)), Name: "ktTagTopicMaxLen"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := kavari.DescribeMessage(tc.msg)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func repeatByte(b byte, n int) []byte {
	out := make([]byte, n)
	for i := range out {
		out[i] = b
	}
	return out
}

func TestTagErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		msg    any
		tag    string
		reason string
	}{
		{"unknown key", &ktTagUnknownKey{}, "topic=kt-tags,partition=3", `unknown key "partition"`},
		{"duplicate key", &ktTagDuplicateKey{}, "topic=kt-tags,name=a,name=b", "name given twice"},
		{"duplicate topic", &ktTagDuplicateTopic{}, "topic=kt-tags,topic=kt-other", "topic given twice"},
		{"missing topic", &ktTagMissingTopic{}, "key=ID,name=x", "no topic"},
		{"empty tag", &ktTagEmpty{}, "", "no topic"},
		{"no tag", &ktTagNone{}, "", "no topic"},
		{"only another tag", &ktTagOtherTagOnly{}, "", "no topic"},
		{"slash in topic", &ktTagBadTopicChar{}, "topic=kt/tags", "not allowed"},
		{"space in topic", &ktTagBadTopicSpace{}, "topic=kt tags", "not allowed"},
		{"non-ASCII topic", &ktTagBadTopicUnicode{}, "topic=kt-tägs", "not allowed"},
		{"topic .", &ktTagBadTopicDot{}, "topic=.", "not allowed"},
		{"topic ..", &ktTagBadTopicDotDot{}, "topic=..", "not allowed"},
		{"250-character topic", &ktTagTopicTooLong{}, "topic=" + string(repeatByte('a', 250)), "longer than 249"},
		{"key without value", &ktTagNoValue{}, "topic=kt-tags,key=", "not key=value"},
		{"key without =", &ktTagNoEquals{}, "topic", "not key=value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := kavari.DescribeMessage(tc.msg)
			require.Error(t, err)
			var te *kavari.TagError
			require.ErrorAs(t, err, &te)
			assert.Equal(t, tc.tag, te.Tag)
			assert.Contains(t, te.Type, "kavari_test.ktTag")
			assert.Contains(t, te.Reason, tc.reason)
			assert.Contains(t, err.Error(), "kavari: ")
			assert.NotErrorIs(t, err, kavari.ErrNotMessage)

			// The same error at registration, never later.
			err = kavari.DeclareAny(kavari.NewRegistry(), tc.msg)
			require.ErrorAs(t, err, &te)
		})
	}
}

func TestAnonymousStructNeedsName(t *testing.T) {
	_, err := kavari.DescribeMessage(&struct {
		kavari.Message `kavari:"topic=kt-anon"`
	}{})
	var te *kavari.TagError
	require.ErrorAs(t, err, &te)
	assert.Contains(t, te.Reason, "name=")

	got, err := kavari.DescribeMessage(&struct {
		kavari.Message `kavari:"topic=kt-anon,name=anon.event"`
	}{})
	require.NoError(t, err)
	assert.Equal(t, "anon.event", got.Name)
}

// ---- key kinds ----

type ktCustomerID string

type ktStringerV struct{ A, B string }

func (s ktStringerV) String() string {
	if s.A == "" && s.B == "" {
		return ""
	}
	return s.A + "/" + s.B
}

type ktStringerP struct{ N int }

func (s *ktStringerP) String() string {
	if s.N == 0 {
		return ""
	}
	return "p" + string(rune('0'+s.N))
}

type ktAddress struct{ Zip string }

type ktCustomer struct {
	ID   string
	Addr *ktAddress
}

type KtTenant struct{ TenantID string }

type ktKeyString struct {
	kavari.Message `kavari:"topic=kt-keys,key=ID"`
	ID             string
}

type ktKeyNamedString struct {
	kavari.Message `kavari:"topic=kt-keys,key=ID"`
	ID             ktCustomerID
}

type ktKeyInt struct {
	kavari.Message `kavari:"topic=kt-keys,key=N"`
	N              int64
}

type ktKeyInt8 struct {
	kavari.Message `kavari:"topic=kt-keys,key=N"`
	N              int8
}

type ktKeyUint struct {
	kavari.Message `kavari:"topic=kt-keys,key=N"`
	N              uint64
}

type ktKeyUint16 struct {
	kavari.Message `kavari:"topic=kt-keys,key=N"`
	N              uint16
}

type ktKeyBytes struct {
	kavari.Message `kavari:"topic=kt-keys,key=B"`
	B              []byte
}

type ktKeyStringerValue struct {
	kavari.Message `kavari:"topic=kt-keys,key=K"`
	K              ktStringerV
}

type ktKeyStringerPtrField struct {
	kavari.Message `kavari:"topic=kt-keys,key=K"`
	K              *ktStringerV
}

type ktKeyStringerPtrMethod struct {
	kavari.Message `kavari:"topic=kt-keys,key=K"`
	K              ktStringerP // String has a pointer receiver
}

type ktKeyStringerPtrMethodPtr struct {
	kavari.Message `kavari:"topic=kt-keys,key=K"`
	K              *ktStringerP
}

type ktKeyDotted struct {
	kavari.Message `kavari:"topic=kt-keys,key=Customer.ID"`
	Customer       ktCustomer
}

type ktKeyDottedPtr struct {
	kavari.Message `kavari:"topic=kt-keys,key=Customer.Addr.Zip"`
	Customer       *ktCustomer
}

type ktKeyPromoted struct {
	kavari.Message `kavari:"topic=kt-keys,key=TenantID"`
	KtTenant
}

type ktKeyPromotedPtr struct {
	kavari.Message `kavari:"topic=kt-keys,key=TenantID"`
	*KtTenant
}

type ktKeyNone struct {
	kavari.Message `kavari:"topic=kt-keys"`
	ID             string
}

func TestKeyKinds(t *testing.T) {
	for _, tc := range []struct {
		name string
		msg  any
		want []byte
	}{
		{"string", &ktKeyString{ID: "order-1"}, []byte("order-1")},
		{"named string type", &ktKeyNamedString{ID: "c-9"}, []byte("c-9")},
		{"int64", &ktKeyInt{N: -42}, []byte("-42")},
		{"int64 zero is a key", &ktKeyInt{N: 0}, []byte("0")},
		{"int8", &ktKeyInt8{N: -128}, []byte("-128")},
		{"uint64 max", &ktKeyUint{N: 18446744073709551615}, []byte("18446744073709551615")},
		{"uint16", &ktKeyUint16{N: 65535}, []byte("65535")},
		{"[]byte", &ktKeyBytes{B: []byte{0, 1, 0xff}}, []byte{0, 1, 0xff}},
		{"fmt.Stringer value", &ktKeyStringerValue{K: ktStringerV{"a", "b"}}, []byte("a/b")},
		{"fmt.Stringer pointer field", &ktKeyStringerPtrField{K: &ktStringerV{"c", "d"}}, []byte("c/d")},
		{"fmt.Stringer with pointer receiver, value field", &ktKeyStringerPtrMethod{K: ktStringerP{N: 3}}, []byte("p3")},
		{"fmt.Stringer with pointer receiver, pointer field", &ktKeyStringerPtrMethodPtr{K: &ktStringerP{N: 4}}, []byte("p4")},
		{"dotted path", &ktKeyDotted{Customer: ktCustomer{ID: "cust-7"}}, []byte("cust-7")},
		{"dotted path through pointers", &ktKeyDottedPtr{Customer: &ktCustomer{Addr: &ktAddress{Zip: "75001"}}}, []byte("75001")},
		{"promoted from an embedded struct", &ktKeyPromoted{KtTenant: KtTenant{TenantID: "t-1"}}, []byte("t-1")},
		{"promoted from an embedded pointer", &ktKeyPromotedPtr{KtTenant: &KtTenant{TenantID: "t-2"}}, []byte("t-2")},
		{"no key", &ktKeyNone{ID: "x"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := kavari.DescribeMessage(tc.msg)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got.Key)
			// Twice: the cached path gives the same key.
			got, err = kavari.DescribeMessage(tc.msg)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got.Key)
		})
	}
}

func TestKeyEmpty(t *testing.T) {
	for _, tc := range []struct {
		name string
		msg  any
	}{
		{"empty string", &ktKeyString{}},
		{"empty named string", &ktKeyNamedString{}},
		{"nil []byte", &ktKeyBytes{}},
		{"empty []byte", &ktKeyBytes{B: []byte{}}},
		{"Stringer returning empty", &ktKeyStringerValue{K: ktStringerV{}}},
		{"pointer-receiver Stringer returning empty", &ktKeyStringerPtrMethod{}},
		{"nil Stringer pointer", &ktKeyStringerPtrField{}},
		{"nil pointer-receiver Stringer pointer", &ktKeyStringerPtrMethodPtr{}},
		{"empty dotted", &ktKeyDotted{}},
		{"nil pointer first in path", &ktKeyDottedPtr{}},
		{"nil pointer inside path", &ktKeyDottedPtr{Customer: &ktCustomer{ID: "c"}}},
		{"empty at the end of a pointer path", &ktKeyDottedPtr{Customer: &ktCustomer{Addr: &ktAddress{}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := kavari.DescribeMessage(tc.msg)
			require.ErrorIs(t, err, kavari.ErrEmptyKey)
			assert.Contains(t, err.Error(), "kavari: ")
		})
	}
}

// A key promoted from an embedded pointer that is nil is a nil pointer in the
// key's path: it must be ErrEmptyKey like any other, not a panic.
func TestKeyPromotedThroughNilEmbeddedPointer(t *testing.T) {
	var err error
	var panicked any
	func() {
		defer func() { panicked = recover() }()
		_, err = kavari.DescribeMessage(&ktKeyPromotedPtr{})
	}()
	if panicked != nil {
		t.Fatalf("regression: message.go typeInfo.key: reflect FieldByIndex panics stepping through a nil embedded pointer (key=TenantID promoted from *KtTenant): %v", panicked)
	}
	require.ErrorIs(t, err, kavari.ErrEmptyKey)
}

type ktKeyFloat struct {
	kavari.Message `kavari:"topic=kt-keys,key=F"`
	F              float64
}

type ktKeyBool struct {
	kavari.Message `kavari:"topic=kt-keys,key=B"`
	B              bool
}

type ktKeyStruct struct {
	kavari.Message `kavari:"topic=kt-keys,key=C"`
	C              ktCustomer
}

type ktKeyMap struct {
	kavari.Message `kavari:"topic=kt-keys,key=M"`
	M              map[string]string
}

type ktKeyStringPtr struct {
	kavari.Message `kavari:"topic=kt-keys,key=S"`
	S              *string
}

type ktKeyIntSlice struct {
	kavari.Message `kavari:"topic=kt-keys,key=S"`
	S              []int
}

type ktKeyUnknownField struct {
	kavari.Message `kavari:"topic=kt-keys,key=Nope"`
	ID             string
}

type ktKeyUnexported struct {
	kavari.Message `kavari:"topic=kt-keys,key=secret"`
	secret         string
}

type ktKeyUnknownNested struct {
	kavari.Message `kavari:"topic=kt-keys,key=Customer.Nope"`
	Customer       ktCustomer
}

type ktKeyThroughNonStruct struct {
	kavari.Message `kavari:"topic=kt-keys,key=ID.Len"`
	ID             string
}

func TestKeyDeclarationErrors(t *testing.T) {
	_ = ktKeyUnexported{}.secret
	for _, tc := range []struct {
		name   string
		msg    any
		reason string
	}{
		{"float64", &ktKeyFloat{F: 1}, "unsupported key type float64"},
		{"bool", &ktKeyBool{B: true}, "unsupported key type bool"},
		{"struct without String", &ktKeyStruct{}, "unsupported key type"},
		{"map", &ktKeyMap{}, "unsupported key type"},
		{"*string", &ktKeyStringPtr{}, "unsupported key type *string"},
		{"[]int", &ktKeyIntSlice{}, "unsupported key type []int"},
		{"unknown field", &ktKeyUnknownField{ID: "x"}, "no field Nope"},
		{"unexported field", &ktKeyUnexported{}, "not exported"},
		{"unknown nested field", &ktKeyUnknownNested{}, "no field Nope"},
		{"path through a non-struct", &ktKeyThroughNonStruct{ID: "x"}, "is not a struct"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := kavari.DescribeMessage(tc.msg)
			var te *kavari.TagError
			require.ErrorAs(t, err, &te)
			assert.Contains(t, te.Reason, tc.reason)
			assert.NotErrorIs(t, err, kavari.ErrEmptyKey)
			// Found at registration too.
			require.ErrorAs(t, kavari.DeclareAny(kavari.NewRegistry(), tc.msg), &te)
		})
	}
}

// ---- PartitionKey() ----

type ktPKValue struct {
	kavari.Message `kavari:"topic=kt-keys,key=ID"`
	ID             string
}

func (m ktPKValue) PartitionKey() string { return "pk-" + m.ID }

type ktPKPointer struct {
	kavari.Message `kavari:"topic=kt-keys,key=ID"`
	ID             string
}

func (m *ktPKPointer) PartitionKey() string { return "ptr-" + m.ID }

type ktPKNoKeyTag struct {
	kavari.Message `kavari:"topic=kt-keys"`
	A, B           string
}

func (m *ktPKNoKeyTag) PartitionKey() string { return m.A + m.B }

func TestPartitionKeyMethodWins(t *testing.T) {
	got, err := kavari.DescribeMessage(&ktPKValue{ID: "1"})
	require.NoError(t, err)
	assert.Equal(t, []byte("pk-1"), got.Key)

	got, err = kavari.DescribeMessage(&ktPKPointer{ID: "2"})
	require.NoError(t, err)
	assert.Equal(t, []byte("ptr-2"), got.Key)

	got, err = kavari.DescribeMessage(&ktPKNoKeyTag{A: "x", B: "y"})
	require.NoError(t, err)
	assert.Equal(t, []byte("xy"), got.Key)

	_, err = kavari.DescribeMessage(&ktPKNoKeyTag{})
	require.ErrorIs(t, err, kavari.ErrEmptyKey)
	assert.Contains(t, err.Error(), "PartitionKey()")
}

// ---- not a message ----

type ktNoMarker struct {
	ID string
}

type ktNamedMarker struct {
	M  kavari.Message `kavari:"topic=kt-keys"`
	ID string
}

type ktPointerMarker struct {
	*kavari.Message `kavari:"topic=kt-keys"`
	ID              string
}

type ktNotStruct int

func TestNotAMessage(t *testing.T) {
	n := ktNotStruct(1)
	s := "x"
	for _, tc := range []struct {
		name string
		msg  any
		want error
		text string
	}{
		{"nil", nil, kavari.ErrNilMessage, "nil message"},
		{"nil pointer", (*ktKeyString)(nil), kavari.ErrNilMessage, "*kavari_test.ktKeyString"},
		{"struct value, not a pointer", ktKeyString{ID: "x"}, kavari.ErrNotMessage, "pass &msg"},
		{"pointer to a non-struct", &n, kavari.ErrNotMessage, "not a struct"},
		{"pointer to a string", &s, kavari.ErrNotMessage, "not a struct"},
		{"pointer to a pointer", func() any { p := &ktKeyString{ID: "x"}; return &p }(), kavari.ErrNotMessage, "not a struct"},
		{"no kavari.Message", &ktNoMarker{ID: "x"}, kavari.ErrNotMessage, "does not embed kavari.Message"},
		{"kavari.Message as a named field", &ktNamedMarker{ID: "x"}, kavari.ErrNotMessage, "does not embed kavari.Message"},
		{"embedded *kavari.Message", &ktPointerMarker{ID: "x"}, kavari.ErrNotMessage, "does not embed kavari.Message"},
		{"anonymous struct without marker", &struct{ ID string }{"x"}, kavari.ErrNotMessage, "does not embed kavari.Message"},
		{"a map", map[string]any{}, kavari.ErrNotMessage, "not a pointer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := kavari.DescribeMessage(tc.msg)
			require.ErrorIs(t, err, tc.want)
			assert.Contains(t, err.Error(), tc.text)
			var te *kavari.TagError
			assert.False(t, errors.As(err, &te), "not a tag error: %v", err)
			// Registration says the same.
			require.ErrorIs(t, kavari.DeclareAny(kavari.NewRegistry(), tc.msg), tc.want)
		})
	}
}

// ---- per-type cache ----

type ktCacheOnce struct {
	kavari.Message `kavari:"topic=kt-cache,key=ID"`
	ID             string
}

type ktCacheConcurrent struct {
	kavari.Message `kavari:"topic=kt-cache,key=ID"`
	ID             string
}

type ktCacheConcurrentBad struct {
	kavari.Message `kavari:"topic=kt-cache,key=Missing"`
}

func TestTypeInfoCached(t *testing.T) {
	a, err := kavari.CachedTypeInfo(&ktCacheOnce{ID: "1"})
	require.NoError(t, err)
	b, err := kavari.CachedTypeInfo(&ktCacheOnce{ID: "2"})
	require.NoError(t, err)
	require.True(t, a == b, "the second lookup returns the cached description")

	_, err1 := kavari.DescribeMessage(&ktTagUnknownKey{})
	_, err2 := kavari.DescribeMessage(&ktTagUnknownKey{})
	require.Error(t, err1)
	require.True(t, err1 == err2, "a bad tag is parsed once too: the cached error comes back")
}

func TestTypeInfoConcurrentFirstUse(t *testing.T) {
	const n = 64
	for _, msg := range []func() any{
		func() any { return &ktCacheConcurrent{ID: "x"} },
		func() any { return &ktCacheConcurrentBad{} },
	} {
		start := make(chan struct{})
		infos := make([]any, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				infos[i], errs[i] = kavari.CachedTypeInfo(msg())
				if errs[i] == nil {
					_, errs[i] = kavari.DescribeMessage(msg())
				}
			}()
		}
		close(start)
		wg.Wait()
		for i := 1; i < n; i++ {
			require.True(t, infos[i] == infos[0], "goroutine %d got another description", i)
			require.True(t, errs[i] == errs[0] || errs[i].Error() == errs[0].Error(), "goroutine %d: %v vs %v", i, errs[i], errs[0])
		}
	}
}

type ktTenantBase struct {
	TenantKey ktStringerV
	TenantNum int
}

type ktKeyPromotedUnexportedStringer struct {
	kavari.Message `kavari:"topic=kt-keys,key=TenantKey"`
	ktTenantBase
}

type ktKeyPromotedUnexportedInt struct {
	kavari.Message `kavari:"topic=kt-keys,key=TenantNum"`
	ktTenantBase
}

// An exported field promoted from an unexported embedded struct is accepted
// by the tag check, so reading it must work too.
func TestKeyPromotedFromUnexportedEmbedded(t *testing.T) {
	got, err := kavari.DescribeMessage(&ktKeyPromotedUnexportedInt{ktTenantBase: ktTenantBase{TenantNum: 5}})
	require.NoError(t, err)
	assert.Equal(t, []byte("5"), got.Key)

	var panicked any
	func() {
		defer func() { panicked = recover() }()
		got, err = kavari.DescribeMessage(&ktKeyPromotedUnexportedStringer{ktTenantBase: ktTenantBase{TenantKey: ktStringerV{"a", "b"}}})
	}()
	if panicked != nil {
		t.Fatalf("regression: message.go typeInfo.key: reflect.Value.Interface panics on a fmt.Stringer key promoted from an unexported embedded struct: %v", panicked)
	}
	require.NoError(t, err)
	assert.Equal(t, []byte("a/b"), got.Key)
}
