package fault

import (
	"context"
	"encoding/json"
	"fmt"
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
