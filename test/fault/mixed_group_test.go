package fault

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol/describegroups"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/test/fault/faultmsg"
	"github.com/kavari-go/kavari/test/fault/ledger"
)

// Mixed is consumed by a group whose members run on different transports.
type Mixed struct {
	kavari.Message `kavari:"topic=kavari-fault-mixed,key=Key"`
	faultmsg.Body
}

// TestMixedTransportGroup (issue 16, item 7): one kafka-go member and one
// franz-go member in one consumer group, as during a rolling change of
// Config.Transport. "kafka-go-first": the kafka-go member founded the group
// and leads it (the switch to franz-go); "franz-go-first": a franz-go group
// consuming cooperatively is joined by a kafka-go member (a rollback, or a
// member of another client). Records flow while the second member joins:
// none may be lost. The members must agree on a protocol (eager range, which
// DescribeGroups shows; a franz-go member alone runs cooperative-sticky),
// both must get partitions, and every record published once both consume
// must be handled exactly once in total. Then the rolling deploy ends: the
// first member stops (Stop returns nil) while more records flow, the second
// takes every partition, none is lost, and the group runs the second
// member's own assignor. Records handled twice on the join and on the leave
// are reported, not asserted (at-least-once).
func TestMixedTransportGroup(t *testing.T) {
	testenv.RequireReal(t)
	ownTransports(t)
	for _, order := range [][2]kavari.Transport{{kavari.KafkaGo, kavari.FranzGo}, {kavari.FranzGo, kavari.KafkaGo}} {
		t.Run(transportName(order[0])+"-first", func(t *testing.T) { mixedGroup(t, order[0], order[1]) })
	}
}

func mixedGroup(t *testing.T, first, second kavari.Transport) {
	brokers := testenv.RequireReal(t)
	led := ledger.ForTest(t, fmt.Sprintf("one consumer group, a %s member joined by a %s member", transportName(first), transportName(second)))
	led.SetTransport("kafka-go+franz-go")
	led.CheckOrder()
	run, group := testenv.ID("run"), testenv.ID("mixed")
	const n, keys, parts = 600, 24, 6
	led.Setup("shared broker; 1 topic × %d partitions, %d keys; %s member first, then a %s member in the same group (in-process, session 6 s); %d messages published while the second joins, %d once both hold partitions, %d while the first stops",
		parts, keys, transportName(first), transportName(second), n, n, n)
	pub := publisher(t, brokers, parts, &Mixed{})

	member := func(tr kavari.Transport) *kavari.Client {
		proc := transportName(tr)
		reg := kavari.NewRegistry()
		if err := kavari.RegisterFuncOn(reg, &Mixed{}, func(ctx context.Context, m *Mixed) error {
			recordHandled(ctx, led, run, proc, &m.Body)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		cfg := baseConfig(brokers, reg)
		cfg.Transport = tr
		cfg.Consume.GroupID = group
		// Earliest: records of earlier runs are skipped by their run id.
		// With Latest, a kafka-go member reported its partitions assigned
		// before its readers had resolved the log end, and records
		// published in that moment were skipped (2 lost in 1 of 4 runs):
		// a defect of Latest, not of mixed groups, left for its own test.
		cfg.Consume.AutoOffsetReset = kavari.Earliest
		k := newKavari(t, cfg)
		if err := k.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		return k
	}
	owns := func(k *kavari.Client) int {
		n := 0
		for _, ps := range k.Health().Assigned {
			n += len(ps)
		}
		return n
	}
	groupErrs := func(ks ...*kavari.Client) string {
		var out []string
		for _, k := range ks {
			if h := k.Health(); h.LastError != "" {
				out = append(out, h.LastError)
			}
		}
		return strings.Join(out, "; ")
	}

	// until waits for cond, then fails t with the members' state now.
	until := func(cond func() bool, what string, ks ...*kavari.Client) {
		t.Helper()
		for deadline := time.Now().Add(time.Minute); !cond(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				var state []string
				for _, k := range ks {
					state = append(state, fmt.Sprintf("%v", k.Health().Assigned))
				}
				t.Fatalf("after 1m: %s: assigned %s; errors: %s", what, strings.Join(state, ", "), groupErrs(ks...))
			}
		}
	}
	// phase returns, for messages [from, to), the ids handled more than once
	// and the handlings per member.
	phase := func(from, to int) (dups int, byProc map[string]int) {
		byProc = map[string]int{}
		count := map[string]int{}
		for _, h := range led.Handles() {
			var i int
			if _, err := fmt.Sscanf(h.ID, "m%d", &i); err != nil || i < from || i >= to {
				continue
			}
			count[h.ID]++
			byProc[h.Proc]++
		}
		for _, c := range count {
			if c > 1 {
				dups++
			}
		}
		return dups, byProc
	}
	s := &stream{k: pub, led: led, run: run, mk: func(b faultmsg.Body) kavari.Msg { return &Mixed{Body: b} }}
	ctx := context.Background()

	// The second member joins while records flow: none lost.
	a := member(first)
	until(func() bool { return owns(a) == parts }, fmt.Sprintf("the %s member did not get the %d partitions", transportName(first), parts), a)
	if got, want := groupProtocol(t, brokers, group), assignorAlone(first); got != want {
		t.Errorf("a group of one %s member chose %q, want %q", transportName(first), got, want)
	}
	s.startPublishing(ctx, plan{to: n, keys: keys, workers: 2, pace: 5 * time.Millisecond})
	b := member(second)
	until(func() bool { return owns(a) > 0 && owns(b) > 0 && owns(a)+owns(b) == parts },
		fmt.Sprintf("the %s and %s members did not share the partitions", transportName(first), transportName(second)), a, b)
	led.Set("partitions", fmt.Sprintf("%s %d, %s %d", transportName(first), owns(a), transportName(second), owns(b)))
	if got := groupProtocol(t, brokers, group); got != "range" {
		t.Errorf("the mixed group chose %q, want range", got)
	}
	s.waitPublished(t, 2*time.Minute)
	s.finish(t, 2*time.Minute)
	dups, _ := phase(0, n)
	led.Set("handled_twice_on_join", dups)
	t.Logf("%s member joined while records flowed: %d handled twice", transportName(second), dups)

	// A stable mixed group: each record handled once, by one of the two.
	s.startPublishing(ctx, plan{from: n, to: 2 * n, keys: keys, workers: 2})
	s.waitPublished(t, 2*time.Minute)
	s.finish(t, 2*time.Minute)
	dups, perProc := phase(n, 2*n)
	led.Set("stable_handled_by", fmt.Sprintf("%s %d, %s %d", transportName(first), perProc[transportName(first)], transportName(second), perProc[transportName(second)]))
	if perProc[transportName(first)] == 0 || perProc[transportName(second)] == 0 {
		t.Errorf("handled per member: %v; want records handled by both", perProc)
	}
	if dups > 0 {
		t.Errorf("%d record(s) handled more than once in a stable group", dups)
	}
	if e := groupErrs(a, b); strings.Contains(e, "INCONSISTENT_GROUP_PROTOCOL") || strings.Contains(strings.ToLower(e), "inconsistent group protocol") {
		t.Errorf("group errors: %s", e)
	}

	// The rolling deploy ends: the first member stops while records flow;
	// the second takes every partition, none lost.
	s.startPublishing(ctx, plan{from: 2 * n, to: 3 * n, keys: keys, workers: 2, pace: 5 * time.Millisecond})
	stopCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := a.Stop(stopCtx); err != nil {
		t.Errorf("%s member: Stop: %v", transportName(first), err)
	}
	s.waitPublished(t, 2*time.Minute)
	until(func() bool { return owns(b) == parts }, fmt.Sprintf("the %s member did not take every partition", transportName(second)), b)
	s.finish(t, 2*time.Minute)
	dups, _ = phase(2*n, 3*n)
	led.Set("handled_twice_on_leave", dups)
	t.Logf("%s member stopped while records flowed: %d handled twice", transportName(first), dups)
	if got, want := groupProtocol(t, brokers, group), assignorAlone(second); got != want {
		t.Errorf("the group left to its %s member chose %q, want %q", transportName(second), got, want)
	}
}

// assignorAlone is the assignor a group of tr's members alone agrees on.
func assignorAlone(tr kavari.Transport) string {
	if tr == kavari.FranzGo {
		return "cooperative-sticky"
	}
	return "range"
}

// groupProtocol returns the assignor group's generation runs with
// (DescribeGroups' protocol).
func groupProtocol(t *testing.T, brokers []string, group string) string {
	t.Helper()
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		m, err := tr.RoundTrip(ctx, kafka.TCP(brokers...), &describegroups.Request{Groups: []string{group}})
		if err == nil {
			resp := m.(*describegroups.Response)
			if len(resp.Groups) == 1 && resp.Groups[0].ErrorCode == 0 && resp.Groups[0].GroupState == "Stable" {
				return resp.Groups[0].ProtocolData
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("describe group %s: %v (%+v)", group, err, m)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestGroupJoinRefusedIsLabelled (issue 16, item 7): a franz-go member
// joining a group whose other member offers no assignor it offers (a bare
// kafka-go consumer with roundrobin only) is refused by the broker with
// INCONSISTENT_GROUP_PROTOCOL. The member's Health must report it as the
// group join error it is, naming the group, not as a fetch of partition 0
// of topic "".
func TestGroupJoinRefusedIsLabelled(t *testing.T) {
	brokers := testenv.RequireReal(t)
	ownTransports(t)
	group := testenv.ID("refused")
	publisher(t, brokers, 6, &Mixed{}) // creates the topic
	other, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID: group, Brokers: brokers, Topics: []string{"kavari-fault-mixed"},
		GroupBalancers:    []kafka.GroupBalancer{kafka.RoundRobinGroupBalancer{}},
		HeartbeatInterval: 500 * time.Millisecond, SessionTimeout: 6 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := other.Next(ctx); err != nil {
		t.Fatalf("the roundrobin-only member did not join: %v", err)
	}

	reg := kavari.NewRegistry()
	if err := kavari.RegisterFuncOn(reg, &Mixed{}, func(ctx context.Context, m *Mixed) error { return nil }); err != nil {
		t.Fatal(err)
	}
	cfg := baseConfig(brokers, reg)
	cfg.Transport = kavari.FranzGo
	cfg.Consume.GroupID = group
	k := newKavari(t, cfg)
	if err := k.Start(ctx); err != nil {
		t.Fatal(err)
	}
	var last string
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		if last = k.Health().LastError; strings.Contains(last, "INCONSISTENT_GROUP_PROTOCOL") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 1m no INCONSISTENT_GROUP_PROTOCOL in Health().LastError (%q)", last)
		}
	}
	t.Logf("Health().LastError: %s", last)
	if strings.Contains(last, "fetch /0") || !strings.Contains(last, fmt.Sprintf("group %q", group)) {
		t.Errorf("Health().LastError %q: want the join error of group %q, not a fetch error", last, group)
	}
}
