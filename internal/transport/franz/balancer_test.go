package franz

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The assignors offered, in order of preference: cooperative-sticky (a
// franz-go group), then range (a group with kafka-go or librdkafka
// members, which offer range and roundrobin).
func TestBalancersPreferCooperativeThenRange(t *testing.T) {
	bs := balancers()
	var names []string
	for _, b := range bs {
		names = append(names, b.ProtocolName())
	}
	if strings.Join(names, ",") != "cooperative-sticky,range" || !bs[0].IsCooperative() || bs[1].IsCooperative() {
		t.Fatalf("balancers %v", names)
	}
}

// The range assignor joins with version-0 member metadata, which a kafka-go
// group leader reads to the last byte (it refuses metadata with bytes
// beyond the version-0 fields, such as kgo's version 3).
func TestRangeJoinMetadataIsVersion0(t *testing.T) {
	got := balancers()[1].JoinGroupMetadata([]string{"a", "bc"}, map[string][]int32{"a": {0, 1}}, 7)
	var want []byte
	want = binary.BigEndian.AppendUint16(want, 0) // version
	want = binary.BigEndian.AppendUint32(want, 2) // topics
	for _, topic := range []string{"a", "bc"} {
		want = binary.BigEndian.AppendUint16(want, uint16(len(topic)))
		want = append(want, topic...)
	}
	want = binary.BigEndian.AppendUint32(want, 0xffffffff) // user data: null
	if string(got) != string(want) {
		t.Fatalf("metadata %x, want %x", got, want)
	}
}

// kgo reports group session errors as a fetch error of topic "" partition
// 0: they are labelled as the group's.
func TestPollErrorLabelsGroupErrors(t *testing.T) {
	err := pollError("billing", "", 0, &kgo.ErrGroupSession{Err: kerr.InconsistentGroupProtocol})
	if msg := err.Error(); strings.Contains(msg, "fetch") || !strings.Contains(msg, `join group "billing"`) || !errors.Is(err, kerr.InconsistentGroupProtocol) {
		t.Errorf("group error labelled %q", msg)
	}
	err = pollError("billing", "orders", 3, errors.New("boom"))
	if msg := err.Error(); msg != "kavari: fetch orders/3: boom" {
		t.Errorf("fetch error labelled %q", msg)
	}
}
