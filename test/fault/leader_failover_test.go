package fault

import (
	"context"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/test/fault/faultmsg"
	"github.com/kavari-go/kavari/test/fault/ledger"
)

// TestLeaderKilledInThreeNodeCluster runs an in-process Client (Brokers = all
// three nodes) against its own 3-node cluster (replication factor 3,
// min.insync.replicas 2), publishing and consuming, and SIGKILLs the node
// leading partition 0 mid-stream. The node stays down: the application is
// not restarted and must carry on with the two survivors. No acknowledged
// message may be lost (acks=all with min ISR 2). Time to recover: from the
// kill to the first handled record of partition 0 that was published after
// the kill (so written to the new leader and fetched from it).
func TestLeaderKilledInThreeNodeCluster(t *testing.T) {
	parallelOwnCluster(t)
	leaderKilled(t, nil)
}

// leaderKilled is TestLeaderKilledInThreeNodeCluster with the Client's
// configuration changed by mutate (nil: none); it returns the ledger's row.
func leaderKilled(t *testing.T, mutate func(*kavari.Config)) ledger.Row {
	c := ownCluster(t, 3)
	brokers := c.Brokers()
	led := ledger.ForTest(t, "3-node cluster (RF 3, min ISR 2): partition leader SIGKILLed mid-stream")
	led.KafkaVersion(c.Version())
	led.CheckOrder()
	run := testenv.ID("run")

	n := 4000
	if long() {
		n = 15000
	}
	const keys, workers, partitions = 24, 8, 3

	reg := kavari.NewRegistry()
	if err := kavari.RegisterFuncOn(reg, &faultmsg.Failover{}, func(ctx context.Context, m *faultmsg.Failover) error {
		time.Sleep(5 * time.Millisecond)
		handle(ctx, led, run, &m.Body)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	cfg := baseConfig(brokers, reg)
	cfg.Topics.Partitions = partitions
	cfg.Topics.ReplicationFactor = 3
	cfg.Publish.Retry = outagePolicy
	if mutate != nil {
		mutate(&cfg)
	}
	led.Set("transport", cfg.Transport.String())
	led.SetTransport(transportName(cfg.Transport))
	k := newKavari(t, cfg)
	ctx := context.Background()
	if err := k.Start(ctx); err != nil {
		t.Fatal(err)
	}
	led.Setup("own 3-node cluster, topic RF 3, min.insync.replicas 2; one in-process Client (Brokers = the 3 nodes) publishing (%d goroutines, sync Publish, %d keys) and consuming (%d partitions)",
		workers, keys, partitions)

	s := &stream{k: k, led: led, run: run, mk: func(b faultmsg.Body) kavari.Msg { return &faultmsg.Failover{Body: b} }}
	s.startPublishing(ctx, plan{to: n, keys: keys, workers: workers, pace: 10 * time.Millisecond})
	waitFor(t, 2*time.Minute, func() bool { return s.acked() >= n/3 }, "a third of the messages was not acknowledged")

	leader := leaderOf(t, brokers, "kavari-fault-failover", 0)
	victim := c.Index(leader)
	_, ackedAtKill, handledAtKill, _ := led.Counts()
	killAt := time.Now()
	if err := c.Kill(victim); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed node %d, leader of partition 0; %d acknowledged, %d handled", leader, ackedAtKill, handledAtKill)
	led.Set("acked_at_kill", ackedAtKill)
	led.Set("handled_at_kill", handledAtKill)

	var resumed ledger.Handle
	waitFor(t, 2*time.Minute, func() bool {
		var ok bool
		resumed, ok = led.FirstHandleAfter(killAt, func(h ledger.Handle) bool { return h.Partition == 0 && led.SentAt(h.ID).After(killAt) })
		return ok
	}, "partition 0 was not consumed again after its leader died")
	led.Recovered(resumed.At.Sub(killAt), "leader killed → first record published after the kill to its partition handled")
	var alive []string
	for i, b := range brokers {
		if i != victim {
			alive = append(alive, b)
		}
	}
	after := leaderOf(t, alive, "kavari-fault-failover", 0)
	if a, ok := s.firstAckAfter(killAt.Add(time.Millisecond)); ok {
		led.Set("first_ack_after_kill", a.Sub(killAt))
	}

	s.waitPublished(t, 3*time.Minute)
	row := s.finish(t, 2*time.Minute)
	if row.Acked != n {
		t.Errorf("acknowledged %d of %d: with 2 of 3 replicas in sync every publish should succeed", row.Acked, n)
	}
	if h := k.Health(); !h.Connected {
		t.Errorf("consumer not connected at the end: %+v", h)
	}
	led.Note("%s: node %d (leader of partition 0) SIGKILLed after %d acks and left down; new leader node %d; the app was not restarted; %d ids stored at more than one offset (producer duplicates)",
		cfg.Transport, leader, ackedAtKill, after, row.ProducerDuplicates)
	return row
}

// leaderOf returns the node id leading partition of topic, asking brokers.
func leaderOf(t *testing.T, brokers []string, topic string, partition int) int {
	t.Helper()
	client, closeClient := newClient(brokers, 5*time.Second)
	defer closeClient()
	var last error
	for i := 0; i < 100; i++ {
		md, err := client.Metadata(context.Background(), &kafka.MetadataRequest{Topics: []string{topic}})
		if err == nil {
			for _, tp := range md.Topics {
				for _, p := range tp.Partitions {
					if tp.Name == topic && p.ID == partition && p.Leader.ID > 0 {
						return p.Leader.ID
					}
				}
			}
		} else {
			last = err
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no leader for %s/%d: %v", topic, partition, last)
	return 0
}
