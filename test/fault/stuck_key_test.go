package fault

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/test/fault/faultmsg"
	"github.com/kavari-go/kavari/test/fault/ledger"
)

// TestStuckKey hangs one key's handler (it waits for its context) while 100
// records of that key and 30 of others sit on partition 0, then writes 300
// records to partitions 1-3, with MaxInFlight 8 and MaxBuffered 32. Before,
// the records queued behind the hung key took every buffer slot and the other
// partitions stopped too. Now partition 0 holds only its share (8), so all
// 300 are handled while the key hangs, and Health shows partition 0 paused
// with the hung key as the one its commits wait for. Then the consumer stops
// (the hung handler is cancelled, its records stay uncommitted) and a second
// consumer in the same group handles everything left: nothing lost.
func TestStuckKey(t *testing.T) {
	brokers := testenv.RequireReal(t)
	led := ledger.ForTest(t, "one key's handler hangs: the other partitions keep flowing")
	led.CheckOrder()
	run, group := testenv.ID("run"), testenv.ID("stuck")
	const topic, partitions, stuckN, p0Others, others = "kavari-fault-hotkey", 4, 100, 30, 300
	createTopicWith(t, brokers, topic, partitions, nil)
	createTopicWith(t, brokers, topic+".dlq", 1, nil)
	led.Setup("shared broker; topic with %d partitions; %d records of one key and %d of other keys on partition 0, then %d on partitions 1-3; in-process Client, MaxInFlight 8, MaxBuffered 32, the key's handler hangs; then a second Client in the group",
		partitions, stuckN, p0Others, others)

	consumer := func(hang bool) *kavari.Client {
		reg := kavari.NewRegistry()
		if err := kavari.RegisterFuncOn(reg, &faultmsg.HotKey{}, func(ctx context.Context, m *faultmsg.HotKey) error {
			if hang && m.Key == "p0-stuck" {
				<-ctx.Done()
				return ctx.Err()
			}
			handle(ctx, led, run, &m.Body)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		cfg := baseConfig(brokers, reg)
		cfg.Consume.GroupID = group
		cfg.Consume.MaxInFlight, cfg.Consume.MaxBuffered = 8, 32
		return newKavari(t, cfg)
	}
	k := consumer(true)
	ctx := context.Background()
	if err := k.Start(ctx); err != nil {
		t.Fatal(err)
	}

	// The partition is the key's second character.
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond,
		MaxAttempts: 10, Transport: tr, Balancer: kafka.BalancerFunc(func(m kafka.Message, _ ...int) int { return int(m.Key[1] - '0') })}
	defer w.Close()
	seqs := map[string]int{}
	var n int
	write := func(key string, count int) {
		recs := make([]kafka.Message, 0, count)
		ids := make([]string, 0, count)
		for range count {
			id := msgID(n)
			n++
			b, _ := json.Marshal(faultmsg.HotKey{Body: faultmsg.Body{Run: run, ID: id, Key: key, Seq: seqs[key]}})
			led.Sent(id, key, seqs[key])
			seqs[key]++
			ids = append(ids, id)
			recs = append(recs, kafka.Message{Key: []byte(key), Value: b, Headers: []kafka.Header{{Key: kavari.HeaderMsgType, Value: []byte("HotKey")}}})
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		err := w.WriteMessages(wctx, recs...)
		for _, id := range ids {
			led.Published(id, err)
		}
		if err != nil {
			t.Fatalf("writing %s: %v", key, err)
		}
	}
	write("p0-stuck", stuckN)
	for i := range p0Others {
		write(fmt.Sprintf("p0-k%02d", i%10), 1)
	}
	// Partition 0 is full of the stuck key's records before the others come.
	waitFor(t, time.Minute, func() bool {
		for _, p := range k.Health().Partitions {
			if p.Topic == topic && p.Partition == 0 && p.Paused {
				return true
			}
		}
		return false
	}, "partition 0 never paused at its share: %+v", k.Health().Partitions)
	hung := time.Now()
	for i := range others {
		write(fmt.Sprintf("p%d-k%02d", 1+i%3, i%30), 1)
	}
	elsewhere := func() int {
		c := 0
		for _, h := range led.Handles() {
			if h.Partition != 0 {
				c++
			}
		}
		return c
	}
	waitFor(t, 2*time.Minute, func() bool { return elsewhere() >= others }, "only %d of %d records on partitions 1-3 handled while one key hangs (Health %+v)", elsewhere(), others, k.Health())
	flowed := time.Since(hung)
	var p0 kavari.PartitionHealth
	for _, p := range k.Health().Partitions {
		if p.Topic == topic && p.Partition == 0 {
			p0 = p
		}
	}
	if p0.OldestKey != "p0-stuck" || !p0.Paused || p0.Open != 8 {
		t.Errorf("Health of partition 0: %+v; want paused, 8 open, oldest key p0-stuck", p0)
	}

	// Stop: the hung handler is cancelled and its records stay uncommitted;
	// a second consumer handles whatever was not handled.
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_ = k.Stop(sctx)
	cancel()
	k2 := consumer(false)
	if err := k2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Minute)
	defer wcancel()
	if !led.WaitAllHandled(wctx) {
		_, _, h, _ := led.Counts()
		t.Errorf("after restart only %d of %d handled", h, n)
	}
	led.Assert(t)
	led.Set("other_partitions_handled_while_stuck", others)
	led.Set("partition0_open_while_stuck", p0.Open)
	led.Note("%d records on partitions 1-3 handled in %s while key p0-stuck hung with %d records queued on partition 0 (which stayed at its share of %d open, paused); after Stop a second consumer handled the rest",
		others, flowed.Round(time.Millisecond), stuckN, p0.Open)
}

// TestStuckKeysManyPartitions hangs the handlers of 4 keys, each on its own
// partition of a 16-partition topic, with 50 records queued behind each,
// then writes 240 records to the 12 other partitions, with MaxInFlight 8 and
// MaxBuffered 32. Before, each partition's share was raised to MaxInFlight
// (8), so the 4 stuck partitions held all 32 buffer slots and the other 12
// handled nothing (0 of 60 in 5 minutes in the issue). Now each partition
// has a reserved part of the buffer the others cannot take: all 240 are
// handled while the keys hang. Then the consumer stops and a second one in
// the group handles what is left: nothing lost.
func TestStuckKeysManyPartitions(t *testing.T) {
	brokers := testenv.RequireReal(t)
	led := ledger.ForTest(t, "four keys hang on a 16-partition topic: the other partitions keep flowing")
	led.CheckOrder()
	run, group := testenv.ID("run"), testenv.ID("stuck-many")
	const topic, partitions, stuckKeys, perStuck, others = "kavari-fault-hotkeys", 16, 4, 50, 240
	createTopicWith(t, brokers, topic, partitions, nil)
	createTopicWith(t, brokers, topic+".dlq", 1, nil)
	if n := partitionsOf(t, brokers, topic); n != partitions {
		t.Fatalf("topic %s has %d partitions, want %d", topic, n, partitions)
	}
	led.Setup("shared broker; topic with %d partitions; %d records of each of %d keys on partitions 0-%d, whose handlers hang, then %d records of other keys on partitions %d-%d; in-process Client, MaxInFlight 8, MaxBuffered 32; then a second Client in the group",
		partitions, perStuck, stuckKeys, stuckKeys-1, others, stuckKeys, partitions-1)

	var hung atomic.Int64
	consumer := func(hang bool) *kavari.Client {
		reg := kavari.NewRegistry()
		if err := kavari.RegisterFuncOn(reg, &faultmsg.HotKeys{}, func(ctx context.Context, m *faultmsg.HotKeys) error {
			if hang && m.Run == run && strings.HasSuffix(m.Key, "-stuck") {
				hung.Add(1)
				<-ctx.Done()
				return ctx.Err()
			}
			handle(ctx, led, run, &m.Body)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		cfg := baseConfig(brokers, reg)
		cfg.Consume.GroupID = group
		cfg.Consume.MaxInFlight, cfg.Consume.MaxBuffered = 8, 32
		return newKavari(t, cfg)
	}
	k := consumer(true)
	ctx := context.Background()
	if err := k.Start(ctx); err != nil {
		t.Fatal(err)
	}

	// The partition is the key's digits after "p".
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond,
		MaxAttempts: 10, Transport: tr, Balancer: kafka.BalancerFunc(func(m kafka.Message, _ ...int) int {
			p, _ := strconv.Atoi(string(m.Key[1:3]))
			return p
		})}
	defer w.Close()
	seqs := map[string]int{}
	var n int
	write := func(keys []string) {
		recs := make([]kafka.Message, 0, len(keys))
		ids := make([]string, 0, len(keys))
		for _, key := range keys {
			id := msgID(n)
			n++
			b, _ := json.Marshal(faultmsg.HotKeys{Body: faultmsg.Body{Run: run, ID: id, Key: key, Seq: seqs[key]}})
			led.Sent(id, key, seqs[key])
			seqs[key]++
			ids = append(ids, id)
			recs = append(recs, kafka.Message{Key: []byte(key), Value: b, Headers: []kafka.Header{{Key: kavari.HeaderMsgType, Value: []byte("HotKeys")}}})
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		err := w.WriteMessages(wctx, recs...)
		for _, id := range ids {
			led.Published(id, err)
		}
		if err != nil {
			t.Fatalf("writing: %v", err)
		}
	}
	var stuck []string
	for i := range perStuck * stuckKeys {
		stuck = append(stuck, fmt.Sprintf("p%02d-stuck", i%stuckKeys))
	}
	write(stuck)
	// Every stuck key's handler runs, and the records behind them fill what
	// their partitions may take, before the others come.
	waitFor(t, time.Minute, func() bool { return hung.Load() == stuckKeys }, "%d of %d stuck handlers started", hung.Load(), stuckKeys)
	// They may take their reserved part of the buffer (1 record each of 16
	// partitions: 4) and the shared rest (32 − 16); before, they took all 32.
	waitFor(t, time.Minute, func() bool { return k.Health().InFlight >= stuckKeys+16 },
		"the stuck partitions hold only %d buffer slots", k.Health().InFlight)
	time.Sleep(time.Second) // and nothing more comes
	held := k.Health().InFlight
	hangAt := time.Now()
	var rest []string
	for i := range others {
		rest = append(rest, fmt.Sprintf("p%02d-k%03d", stuckKeys+i%(partitions-stuckKeys), i))
	}
	write(rest)
	elsewhere := func() int {
		c := 0
		for _, h := range led.Handles() {
			if h.Partition >= stuckKeys {
				c++
			}
		}
		return c
	}
	// Generous: on a loaded machine 240 records take well under a minute.
	waitFor(t, 3*time.Minute, func() bool { return elsewhere() >= others }, "only %d of %d records on the healthy partitions handled while %d keys hang (Health %+v)", elsewhere(), others, stuckKeys, k.Health())
	flowed := time.Since(hangAt)

	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_ = k.Stop(sctx) // the hung handlers are cancelled, their records stay uncommitted
	cancel()
	k2 := consumer(false)
	if err := k2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Minute)
	defer wcancel()
	if !led.WaitAllHandled(wctx) {
		_, _, h, _ := led.Counts()
		t.Errorf("after restart only %d of %d handled", h, n)
	}
	led.Assert(t)
	led.Set("healthy_partitions_handled_while_stuck", others)
	led.Set("buffer_held_by_stuck_partitions", held)
	led.Note("%d records on the %d healthy partitions handled in %s while %d keys hung with %d records each queued on their partitions (holding %d of MaxBuffered 32); after Stop a second consumer handled the rest",
		others, partitions-stuckKeys, flowed.Round(time.Millisecond), stuckKeys, perStuck, held)
}
