// Command retrytopics sends webhooks through a flaky endpoint with retry
// topics (Consume.RetryTopics): a notification whose webhook fails moves to a
// delay tier's topic and the others keep flowing; it is sent again when due,
// and dead-lettered, with its history, after the last tier.
//
//	go run ./examples/retrytopics            # embedded broker, nothing to install
//	go run ./examples/retrytopics -n 500
//	KAVARI_BROKERS=localhost:9092 go run ./examples/retrytopics
//
// Every 10th notification's endpoint fails once, every 25th's three times,
// and one endpoint is gone for good. It exits 0 when every other
// notification was delivered exactly once, the gone one dead-lettered after
// the last tier, and no retry ran before it was due; 1 otherwise.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/kavaritest"
)

// WebhookDue asks for one webhook call, keyed by the subscriber.
type WebhookDue struct {
	kavari.Message `kavari:"topic=retrytopics.webhooks,key=Subscriber"`
	Subscriber     string `json:"subscriber" validate:"required"`
	N              int    `json:"n"`
}

// endpoint stands for the subscribers' HTTP endpoints: some fail for a
// while, one is gone.
type endpoint struct {
	mu        sync.Mutex
	calls     map[int]int     // n -> calls so far
	delivered map[int]string  // n -> the topic it was delivered from
	early     int             // calls made before their record was due
	late      []time.Duration // per retried call: how long after its due time
	gone      int             // the n whose endpoint is gone
	failures  func(n int) int // how many calls of n fail
}

var errUnavailable = errors.New("503 Service Unavailable")

// Sender delivers webhooks.
type Sender struct{ ep *endpoint }

// Handle calls the endpoint; an error makes kavari retry it (in place
// once, then through the tiers).
func (s *Sender) Handle(ctx context.Context, m *WebhookDue) error {
	r, _ := kavari.RecordFromContext(ctx)
	ep := s.ep
	ep.mu.Lock()
	defer ep.mu.Unlock()
	for _, h := range r.Headers {
		if h.Key == kavari.HeaderRetryDue {
			due, err := time.Parse(time.RFC3339Nano, string(h.Value))
			if err == nil {
				if time.Now().Before(due) {
					ep.early++
				}
				ep.late = append(ep.late, time.Since(due))
			}
		}
	}
	ep.calls[m.N]++
	if m.N == ep.gone || ep.calls[m.N] <= ep.failures(m.N) {
		return errUnavailable
	}
	if _, dup := ep.delivered[m.N]; dup {
		return fmt.Errorf("notification %d delivered twice", m.N)
	}
	ep.delivered[m.N] = r.Topic
	return nil
}

// moves is a hook that counts the moves to retry tiers and the dead letters.
type moves struct {
	mu     sync.Mutex
	tiers  int
	dead   []string
	deadAt time.Time
}

var (
	_ kavari.HookRetryScheduled = (*moves)(nil)
	_ kavari.HookDeadLettered   = (*moves)(nil)
)

func (mv *moves) OnRetryScheduled(r *kavari.Record, wait time.Duration, err error) {
	if wait >= tiers[0] { // an in-place retry waits 20 ms, a tier at least tiers[0]
		mv.mu.Lock()
		mv.tiers++
		mv.mu.Unlock()
	}
}

func (mv *moves) OnDeadLettered(r *kavari.Record, kind kavari.ErrorKind, err error) {
	mv.mu.Lock()
	defer mv.mu.Unlock()
	hist := ""
	for _, h := range r.Headers {
		if h.Key == kavari.HeaderRetryHistory {
			hist = string(h.Value)
		}
	}
	mv.dead = append(mv.dead, fmt.Sprintf("key %s after %d attempts; failed in %s -> %s", r.Key, r.Attempt, shortHistory(hist), strings.TrimPrefix(r.Topic, mainTopic)))
	mv.deadAt = time.Now()
}

// mainTopic is the run's main topic; the output names its tiers by their
// suffix.
var mainTopic string

// shortHistory keeps the topics of a kavari_retry_history header, "main"
// for the main topic and a tier's suffix for a tier's.
func shortHistory(h string) string {
	var out []string
	for _, e := range strings.Split(h, ",") {
		if i := strings.IndexByte(e, '/'); i > 0 {
			t := strings.TrimPrefix(e[:i], mainTopic)
			if t == "" {
				t = "main"
			}
			out = append(out, t)
		}
	}
	return strings.Join(out, " -> ")
}

// tiers are the retry topics' delays: short, so the example ends quickly.
var tiers = []time.Duration{200 * time.Millisecond, 500 * time.Millisecond, time.Second}

func main() {
	os.Exit(run())
}

func run() int {
	n := flag.Int("n", 200, "notifications to publish")
	timeout := flag.Duration("timeout", 2*time.Minute, "how long to wait for every notification")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))

	brokers, where, closeBroker, err := kafka()
	if err != nil {
		return fail(err)
	}
	defer closeBroker()
	fmt.Println("kavari retry topics")
	fmt.Println("  broker:   ", where)
	fmt.Println("  tiers:    ", tiers, "after 2 in-place attempts")

	run := runID()
	mainTopic = "retrytopics.webhooks-" + run
	ep := &endpoint{calls: map[int]int{}, delivered: map[int]string{}, gone: *n / 2, failures: func(n int) int {
		switch {
		case n%25 == 0:
			return 2 + 3 - 1 // in place twice, tiers 1 and 2: delivered from tier 3
		case n%10 == 0:
			return 2 // in place twice: delivered from tier 1
		}
		return 0
	}}
	reg := kavari.NewRegistry()
	if err := kavari.RegisterOn(reg, &WebhookDue{}, func() *Sender { return &Sender{ep: ep} }); err != nil {
		return fail(err)
	}
	mv := &moves{}
	k, err := kavari.New(kavari.Config{
		Brokers:  brokers,
		Logger:   log,
		Registry: reg,
		Hooks:    []kavari.Hook{mv},
		Consume: kavari.ConsumeConfig{
			GroupID:     "kavari-retrytopics-" + run,
			Retry:       kavari.ConstantRetry(20*time.Millisecond, 2),
			RetryTopics: tiers,
		},
		// Each run its own topics: retrytopics.webhooks-<run>, and its
		// tiers retrytopics.webhooks-<run>.retry.1 to .3.
		Topics: kavari.TopicConfig{Create: true, Name: func(t string) string { return t + "-" + run }},
	})
	if err != nil {
		return fail(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := k.Start(ctx); err != nil {
		return fail(err)
	}

	start := time.Now()
	msgs := make([]kavari.Msg, *n)
	for i := range msgs {
		msgs[i] = &WebhookDue{Subscriber: fmt.Sprintf("sub-%d", i%17), N: i}
	}
	if _, err := k.PublishBatch(ctx, msgs...); err != nil {
		return fail(err)
	}
	fmt.Printf("published %d notifications\n", *n)

	var healthyDone time.Duration
	for ctx.Err() == nil {
		ep.mu.Lock()
		delivered := len(ep.delivered)
		healthy := 0
		for i := range *n {
			if ep.failures(i) == 0 && i != ep.gone {
				if _, ok := ep.delivered[i]; ok {
					healthy++
				}
			}
		}
		ep.mu.Unlock()
		if healthyDone == 0 && healthy == *n-countFailing(*n, ep) {
			healthyDone = time.Since(start)
		}
		mv.mu.Lock()
		dead := len(mv.dead)
		mv.mu.Unlock()
		if delivered == *n-1 && dead == 1 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	all := time.Since(start)
	stopCtx, stopCancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer stopCancel()
	if err := k.Stop(stopCtx); err != nil {
		return fail(err)
	}

	ep.mu.Lock()
	defer ep.mu.Unlock()
	from := map[string]int{}
	for _, topic := range ep.delivered {
		from[strings.TrimPrefix(topic, mainTopic)]++
	}
	fmt.Printf("delivered %d at once (the healthy ones all within %v, not waiting for the failing ones)\n", from[""], healthyDone.Round(10*time.Millisecond))
	for i := range tiers {
		fmt.Printf("delivered %d from tier %d (.retry.%d)\n", from[fmt.Sprintf(".retry.%d", i+1)], i+1, i+1)
	}
	fmt.Printf("retried calls: %d, none before due: %v\n", len(ep.late), ep.early == 0)
	mv.mu.Lock()
	defer mv.mu.Unlock()
	for _, d := range mv.dead {
		fmt.Println("dead-lettered", d)
	}
	fmt.Printf("moves to retry tiers: %d; all done in %v\n", mv.tiers, all.Round(100*time.Millisecond))
	if len(ep.delivered) != *n-1 || len(mv.dead) != 1 || ep.early != 0 {
		fmt.Printf("FAIL: want %d delivered once, one dead-lettered, no call before due\n", *n-1)
		return 1
	}
	fmt.Println("OK: every notification delivered once, the gone endpoint's dead-lettered after the last tier")
	return 0
}

// countFailing counts the notifications whose first call fails.
func countFailing(n int, ep *endpoint) int {
	c := 0
	for i := range n {
		if ep.failures(i) > 0 || i == ep.gone {
			c++
		}
	}
	return c
}

// kafka returns the brokers of KAVARI_BROKERS, or starts an embedded one.
func kafka() (brokers []string, where string, closeFn func(), err error) {
	if env := os.Getenv("KAVARI_BROKERS"); env != "" {
		return strings.Split(env, ","), env + " (KAVARI_BROKERS)", func() {}, nil
	}
	b, err := kavaritest.Start()
	if err != nil {
		return nil, "", nil, err
	}
	return b.Addrs(), "embedded, in this process (set KAVARI_BROKERS=host:9092 to use your Kafka)", b.Close, nil
}

func runID() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func fail(err error) int {
	fmt.Fprintln(os.Stderr, "retrytopics:", err)
	return 1
}
