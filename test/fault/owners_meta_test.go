package fault

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/test/fault/faultmsg"
	"github.com/kavari-go/kavari/test/fault/ledger"
)

// TestMetadataSurvivesThreeOwners: three successive owners of one
// partition. A completes every record but the first four (their handlers
// hang until A stops), so its commit is the first record's offset with the
// 1,996 records completed after it listed in the commit metadata. B
// completes the first record and hangs on the next two (MaxBuffered 2: its
// feeder never reaches the records A completed) and commits the second
// record's offset. C handles what is left. On franz-go B's commit carries the
// list it inherited, and C handles only the 3 records nobody completed;
// before, B's commit wrote only what its own feeder had reached, the list
// was erased, and C handled 1,999 records again. kafka-go commits no
// metadata: C handles everything after the first unfinished record again
// (the row shows how many). Nothing is lost on either.
func TestMetadataSurvivesThreeOwners(t *testing.T) {
	brokers := testenv.RequireReal(t)
	led := ledger.ForTest(t, "three successive owners of a partition, each leaving records unfinished ("+testenv.Transport()+")")
	run, group := testenv.ID("run"), testenv.ID("owners")
	const n, topic = 2000, "kavari-fault-owners"
	led.Setup("shared broker; 1 partition, %d records (distinct keys); owner A (MaxBuffered 4096) completes all but the first 4, whose handlers hang until it stops; owner B (MaxInFlight 2, MaxBuffered 2) completes the first and hangs on the next 2; owner C handles the rest; in-process Clients, CommitInterval 200ms", n)

	pub := publisher(t, brokers, 1, &faultmsg.Owners{})
	if p := partitionsOf(t, brokers, topic); p != 1 {
		t.Fatalf("topic %s has %d partitions, want 1", topic, p)
	}
	ctx := context.Background()
	mk := func(b faultmsg.Body) kavari.Msg { return &faultmsg.Owners{Body: b} }
	publishAll(ctx, pub, led, run, mk, plan{from: 0, to: n, keys: n, batch: 500}, nil)

	var mu sync.Mutex
	handled := map[string]map[string]int{} // owner -> id -> times
	running := map[string]int{}            // owner -> hanging handlers
	owner := func(name string, hang func(id string) bool, mutate func(*kavari.Config)) *kavari.Client {
		handled[name] = map[string]int{}
		reg := kavari.NewRegistry()
		if err := kavari.RegisterFuncOn(reg, &faultmsg.Owners{}, func(ctx context.Context, m *faultmsg.Owners) error {
			if m.Run != run {
				return nil
			}
			if hang(m.ID) {
				mu.Lock()
				running[name]++
				mu.Unlock()
				<-ctx.Done()
				return ctx.Err()
			}
			handle(ctx, led, run, &m.Body)
			mu.Lock()
			handled[name][m.ID]++
			mu.Unlock()
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		cfg := baseConfig(brokers, reg)
		cfg.Consume.GroupID = group
		cfg.Consume.Ordering = kavari.Unordered
		if mutate != nil {
			mutate(&cfg)
		}
		k := newKavari(t, cfg)
		if err := k.Start(ctx); err != nil {
			t.Fatal(err)
		}
		return k
	}
	count := func(name string) (done, hung int) {
		mu.Lock()
		defer mu.Unlock()
		return len(handled[name]), running[name]
	}
	stop := func(k *kavari.Client) {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_ = k.Stop(sctx) // the hanging handlers are cancelled, their records stay uncommitted
	}
	committed := func() int64 { return committedNow(t, brokers, group, topic, 1)[0] }

	a := owner("A", func(id string) bool { return id < msgID(4) }, func(c *kavari.Config) { c.Consume.MaxBuffered = 4096 })
	waitFor(t, 3*time.Minute, func() bool { d, h := count("A"); return d == n-4 && h == 4 }, "owner A did not complete %d records and hang on 4", n-4)
	time.Sleep(2 * time.Second) // a few commit intervals
	stop(a)
	afterA := committed()
	// The offset of this run's first record: A commits it, unless nothing
	// before it was committable (a new topic on kafka-go, which commits no
	// metadata: nothing then).
	base := max(afterA, 0)

	b := owner("B", func(id string) bool { return id == msgID(1) || id == msgID(2) }, func(c *kavari.Config) {
		c.Consume.MaxInFlight, c.Consume.MaxBuffered = 2, 2
	})
	waitFor(t, 2*time.Minute, func() bool { d, h := count("B"); return d >= 1 && h == 2 }, "owner B did not complete the first record and hang on the next two")
	waitFor(t, time.Minute, func() bool { return committed() >= base+1 }, "owner B committed nothing")
	time.Sleep(time.Second)
	stop(b)
	afterB := committed()

	c := owner("C", func(string) bool { return false }, nil)
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if !led.WaitAllHandled(wctx) {
		_, _, h, _ := led.Counts()
		t.Errorf("after owner C only %d of %d handled", h, n)
	}
	for end := time.Now().Add(time.Minute); committed() != base+n; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("owner C did not commit everything: committed %d, want %d", committed(), base+n)
		}
	}
	stop(c)
	row := led.Assert(t)

	again, _ := count("C")
	dB, _ := count("B")
	led.Set("owner_b_handled", dB)
	led.Set("owner_c_handled", again)
	led.Set("committed_after_a", afterA)
	led.Set("committed_after_b", afterB)
	led.Note("%s: A completed %d of %d records (the first 4 hung), B completed %d and hung on 2, C handled %d (nobody had completed 3); duplicates %d",
		testenv.Transport(), n-4, n, dB, again, row.Duplicates)
	t.Logf("%s: owner C handled %d records (3 were never completed); committed after A %d, after B %d", testenv.Transport(), again, afterA, afterB)
	if testenv.Transport() == "franz-go" && (again != 3 || row.Duplicates > 0) {
		t.Errorf("franz-go: owner C handled %d records, %d handled twice; want 3 and 0: B's commit should carry the list A wrote", again, row.Duplicates)
	}
}
