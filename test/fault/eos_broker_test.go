package fault

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/kafkaproc"
	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/test/fault/faultmsg"
	"github.com/kavari-go/kavari/test/fault/ledger"
)

// Exactly-once against broker faults: the consume → publish pipeline of
// TestExactlyOnceConsumerKilled (faultapp processes in exactly-once mode on
// FranzGo, one output per input published with the handler's context) on a
// cluster of the test's own, with a broker killed mid-run. The committed
// output, read read_committed from the log, must hold every input's output
// exactly once.

// TestExactlyOnceBrokerRestart: the only broker of a 1-node cluster is
// SIGKILLed while two exactly-once members handle, kept down 3 s and
// restarted: the open transactions are lost with it, the members abort and
// handle their records again.
func TestExactlyOnceBrokerRestart(t *testing.T) {
	inPassOf(t, "franz-go")
	parallelOwnCluster(t)
	c := ownCluster(t, 1)
	led := ledger.ForTest(t, "exactly-once: the broker SIGKILLed mid-run and restarted")
	outage := 3 * time.Second
	eoBrokerFault(t, c, led, 1, "own 1-node cluster", func([]string) string {
		if err := c.Kill(0); err != nil {
			t.Fatal(err)
		}
		time.Sleep(outage)
		if err := c.Restart(0); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("the broker SIGKILLed, restarted after %s", outage)
	})
}

// TestExactlyOnceTxnCoordinatorKilled: on a 3-node cluster (every topic RF
// 3, min ISR 2, the transaction log too), the broker coordinating the
// transactions of one member is SIGKILLed mid-run and left down: the
// coordinator moves to another broker and the members go on.
func TestExactlyOnceTxnCoordinatorKilled(t *testing.T) {
	inPassOf(t, "franz-go")
	parallelOwnCluster(t)
	c := ownCluster(t, 3)
	led := ledger.ForTest(t, "exactly-once, 3-node cluster: the transaction coordinator's broker SIGKILLed mid-run")
	eoBrokerFault(t, c, led, 3, "own 3-node cluster, topics RF 3, min ISR 2", func(txnIDs []string) string {
		txnID := txnIDs[0]
		node := txnCoordinator(t, c.Brokers(), txnID)
		if err := c.Kill(c.Index(node)); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("node %d, coordinator of consumer-1's transactions (%s), SIGKILLed and left down", node, txnID)
	})
}

// eoBrokerFault runs the pipeline on c: two exactly-once members, n inputs
// over 6 partitions (replication rf); fault, given the members'
// transactional ids, runs once a fifth of the inputs was handled and says
// what it did. Then it waits until the group committed
// every input, stops the members and counts the committed output.
func eoBrokerFault(t *testing.T, c *kafkaproc.Cluster, led *ledger.Ledger, rf int, where string, fault func(txnIDs []string) string) {
	brokers := c.Brokers()
	led.KafkaVersion(c.Version())
	led.SetTransport("franz-go")
	led.Mode("exactly-once")
	bin := buildFaultApp(t)
	run, group := testenv.ID("run"), testenv.ID("eob")
	const partitions, keys = 6, 60
	n := 3000
	if long() {
		n = 20000
	}
	led.Setup("%s; FranzGo; 2 faultapp processes in exactly-once mode, handler 5 ms then Publish of one output with its ctx; %d inputs, %d partitions, %d keys", where, n, partitions, keys)
	reg := kavari.NewRegistry()
	for _, m := range []kavari.Msg{&faultmsg.EOIn{}, &faultmsg.EOOut{}} {
		if err := reg.Declare(m); err != nil {
			t.Fatal(err)
		}
	}
	cfg := baseConfig(brokers, reg)
	cfg.Topics.Partitions, cfg.Topics.ReplicationFactor = partitions, rf
	cfg.Publish.Retry = outagePolicy
	pub := newKavari(t, cfg)
	ensureTopic(t, brokers, "kavari-fault-eo-in.dlq", rf)

	prefix := "fault-" + run
	var apps []*app
	var txnIDs []string
	for i := range 2 {
		inst := fmt.Sprintf("m%d-%s", i+1, run)
		a := startApp(t, bin, fmt.Sprintf("consumer-%d", i+1), led,
			appArgs(brokers, group, run, "eo", "-sleep", "5ms", "-transport", "franz-go", "-exactly-once", prefix, "-instance-id", inst)...)
		txnIDs = append(txnIDs, prefix+"-"+inst)
		apps = append(apps, a)
	}
	waitFor(t, time.Minute, func() bool { return apps[0].joined() && apps[1].joined() }, "the consumers did not join")
	ends := publishEOInputs(t, pub, led, run, n, keys)
	handled := func() int { return handledByAny(apps) }
	waitFor(t, 2*time.Minute, func() bool { return handled() >= n/5 }, "a fifth of the inputs was not handled")
	atFault := handled()
	faultAt := time.Now()
	what := fault(txnIDs)
	t.Logf("%s after %d inputs handled", what, atFault)
	committedAll := func() bool { return inputsCommitted(t, brokers, group, ends, partitions) }
	for deadline := time.Now().Add(4 * time.Minute); !committedAll(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			// Whose is it: what the live brokers say of the cluster.
			logClusterView(t, brokers, txnIDs, "kavari-fault-eo-in", "__transaction_state")
			t.Fatalf("after 4m0s: the group did not commit every input")
		}
	}
	led.Recovered(time.Since(faultAt), "fault → every input committed")
	for _, a := range apps {
		if _, err := a.term(30 * time.Second); err != nil {
			t.Errorf("%s: stop: %v", a.name, err)
		}
	}
	outs := committedOutputs(t, brokers, run, "kavari-fault-eo-out", partitions)
	per := map[string]int{}
	for _, id := range outs {
		per[id]++
	}
	dups, lost := 0, 0
	for i := range n {
		switch c := per[msgID(i)]; {
		case c == 0:
			lost++
		case c > 1:
			dups += c - 1
		}
	}
	t.Logf("committed output: %d records for %d inputs, %d duplicates, %d lost", len(outs), n, dups, lost)
	led.Set("handled_at_fault", atFault)
	led.Set("output_duplicates", dups)
	led.Set("output_lost", lost)
	led.Note("%s after %d inputs handled; the members were not restarted", what, atFault)
	if dups > 0 || lost > 0 {
		t.Errorf("the committed output has %d duplicates and %d inputs without output", dups, lost)
	}
}

// ensureTopic creates topic with one partition and replication rf unless it
// exists.
func ensureTopic(t *testing.T, brokers []string, topic string, rf int) {
	t.Helper()
	client, closeClient := newClient(brokers, 30*time.Second)
	defer closeClient()
	resp, err := client.CreateTopics(context.Background(), &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{Topic: topic, NumPartitions: 1, ReplicationFactor: rf}}})
	if err == nil {
		err = resp.Errors[topic]
	}
	if err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		t.Fatalf("create %s: %v", topic, err)
	}
}

// txnCoordinator returns the node id coordinating the transactions of
// txnID, asking brokers until one answers.
func txnCoordinator(t *testing.T, brokers []string, txnID string) int {
	t.Helper()
	client, closeClient := newClient(brokers, 10*time.Second)
	defer closeClient()
	var lastErr error
	for range 50 {
		resp, err := client.FindCoordinator(context.Background(), &kafka.FindCoordinatorRequest{Key: txnID, KeyType: kafka.CoordinatorKeyTypeTransaction})
		if err == nil {
			err = resp.Error
		}
		if err == nil {
			return resp.Coordinator.NodeID
		}
		lastErr = err
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("FindCoordinator %s: %v", txnID, lastErr)
	return 0
}

// logClusterView logs, as each broker that answers sees it, the cluster's
// brokers, the leader and ISR of topics' partitions, and the coordinator of
// each transactional id: a test that waited in vain says whether the
// cluster moved on from a killed node.
func logClusterView(t *testing.T, brokers, txnIDs []string, topics ...string) {
	t.Helper()
	for _, addr := range brokers {
		client, closeClient := newClient([]string{addr}, 5*time.Second)
		meta, err := client.Metadata(context.Background(), &kafka.MetadataRequest{Topics: topics})
		if err != nil {
			t.Logf("cluster view from %s: %v", addr, err)
			closeClient()
			continue
		}
		var ids []int
		for _, b := range meta.Brokers {
			ids = append(ids, b.ID)
		}
		t.Logf("cluster view from %s: brokers %v, controller %d", addr, ids, meta.Controller.ID)
		for _, tp := range meta.Topics {
			var parts []string
			for _, p := range tp.Partitions {
				var isr []int
				for _, b := range p.Isr {
					isr = append(isr, b.ID)
				}
				parts = append(parts, fmt.Sprintf("%d: leader %d isr %v", p.ID, p.Leader.ID, isr))
			}
			t.Logf("  %s (err %v): %s", tp.Name, tp.Error, strings.Join(parts, "; "))
		}
		for _, id := range txnIDs {
			resp, err := client.FindCoordinator(context.Background(), &kafka.FindCoordinatorRequest{Key: id, KeyType: kafka.CoordinatorKeyTypeTransaction})
			if err == nil {
				err = resp.Error
			}
			if err != nil {
				t.Logf("  coordinator of %s: %v", id, err)
				continue
			}
			t.Logf("  coordinator of %s: node %d", id, resp.Coordinator.NodeID)
		}
		closeClient()
	}
}
