// Command faultapp is a kavari consumer process for the fault suite
// (test/fault). The tests build it with "go build", start several of them,
// SIGKILL them, stop them with SIGTERM and start them again.
//
// It consumes the messages of one scenario (package faultmsg) as a member of
// -group and prints one JSON line per event on stdout, written with a single
// unbuffered write so that a line printed before a SIGKILL is never lost:
//
//	{"ev":"done","id":..,"key":..,"seq":..,"pid":..,"topic":..,"partition":..,"offset":..,"ts":<unix ns>,"attempt":..}
//	{"ev":"start",...}   with -trace-start: a handler began (same fields; a batch handler: one per record)
//	{"ev":"health","connected":true,"generation":3,"assigned":{"topic":[0,1]},"ts":..}
//	{"ev":"stopping","ts":..}  SIGTERM or SIGINT received
//	{"ev":"stopped","err":"..","ms":..,"ts":..}  k.Stop returned
//
// "done" is printed when the handler has finished its work (slept) and is
// about to return nil: the message was handled. A handler whose context ends
// first returns the context's error and prints nothing, so kavari leaves the
// record for redelivery. Records of other runs (-run) are committed silently.
//
// On SIGTERM it calls k.Stop with a -stop-timeout deadline and exits 0 when
// Stop returned nil, 3 when it returned an error.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testkit"
	"github.com/kavari-go/kavari/test/fault/faultmsg"
)

type event struct {
	Ev         string           `json:"ev"`
	ID         string           `json:"id,omitempty"`
	Key        string           `json:"key,omitempty"`
	Seq        int              `json:"seq"`
	Pid        int              `json:"pid"`
	Topic      string           `json:"topic,omitempty"`
	Partition  int              `json:"partition"`
	Offset     int64            `json:"offset"`
	Attempt    int              `json:"attempt,omitempty"`
	TS         int64            `json:"ts"`
	Connected  bool             `json:"connected,omitempty"`
	Generation int              `json:"generation,omitempty"`
	Assigned   map[string][]int `json:"assigned,omitempty"`
	Err        string           `json:"err,omitempty"`
	Ms         int64            `json:"ms,omitempty"`
}

var (
	outMu sync.Mutex
	pid   = os.Getpid()
)

// emit writes ev as one line with a single write(2): no buffer to lose.
func emit(ev event) {
	ev.Pid = pid
	if ev.TS == 0 {
		ev.TS = time.Now().UnixNano()
	}
	b, _ := json.Marshal(ev)
	b = append(b, '\n')
	outMu.Lock()
	_, _ = os.Stdout.Write(b)
	outMu.Unlock()
}

type app struct {
	// fails, when set, says whether attempt (Record.Attempt, which counts
	// the attempts of earlier retry tiers too) of a message fails: the
	// handler then returns an error after its "start" line.
	fails       func(b *faultmsg.Body, attempt int) bool
	run         string
	sleep       time.Duration
	traceStart  bool
	ignoreSleep bool // a message's sleep_ms does not apply
	// output, when set, publishes a message's output after it was handled
	// (scenario eo), with the handler's context.
	output func(ctx context.Context, b *faultmsg.Body) error
}

func (a *app) handle(ctx context.Context, b *faultmsg.Body) error {
	if b.Run != a.run {
		return nil
	}
	ev := event{ID: b.ID, Key: b.Key, Seq: b.Seq}
	if rec, ok := kavari.RecordFromContext(ctx); ok {
		ev.Topic, ev.Partition, ev.Offset, ev.Attempt = rec.Topic, rec.Partition, rec.Offset, rec.Attempt
	}
	if a.traceStart {
		ev.Ev = "start"
		emit(ev)
		ev.TS = 0
	}
	if a.fails != nil && a.fails(b, ev.Attempt) {
		return fmt.Errorf("faultapp: attempt %d of %s fails on purpose", ev.Attempt, b.ID)
	}
	d := a.sleep
	if b.SleepMs > 0 && !a.ignoreSleep {
		d = time.Duration(b.SleepMs) * time.Millisecond
	}
	if d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
	if a.output != nil {
		if err := a.output(ctx, b); err != nil {
			return err
		}
	}
	ev.Ev = "done"
	emit(ev)
	return nil
}

// handleBatch is handle for a batch handler: a "start" line per record of
// the run, one sleep for the batch (a bulk write), then a "done" line per
// record.
func (a *app) handleBatch(ctx context.Context, bodies []*faultmsg.Body) error {
	var evs []event
	for i, b := range bodies {
		if b.Run != a.run {
			continue
		}
		ev := event{ID: b.ID, Key: b.Key, Seq: b.Seq}
		if rec, ok := kavari.BatchRecordFromContext(ctx, i); ok {
			ev.Topic, ev.Partition, ev.Offset, ev.Attempt = rec.Topic, rec.Partition, rec.Offset, rec.Attempt
		}
		if a.traceStart {
			ev.Ev = "start"
			emit(ev)
			ev.TS = 0
		}
		evs = append(evs, ev)
	}
	if len(evs) == 0 {
		return nil
	}
	if a.sleep > 0 {
		t := time.NewTimer(a.sleep)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
	for _, ev := range evs {
		ev.Ev = "done"
		emit(ev)
	}
	return nil
}

func register[T any, PT kavari.MsgPtr[T]](reg *kavari.Registry, msg PT, body func(*T) *faultmsg.Body, a *app) error {
	return kavari.RegisterFuncOn(reg, msg, func(ctx context.Context, m *T) error { return a.handle(ctx, body(m)) })
}

func registerBatch[T any, PT kavari.MsgPtr[T]](reg *kavari.Registry, msg PT, body func(*T) *faultmsg.Body, a *app) error {
	return kavari.RegisterBatchFuncOn(reg, msg, func(ctx context.Context, ms []*T) error {
		bodies := make([]*faultmsg.Body, len(ms))
		for i, m := range ms {
			bodies[i] = body(m)
		}
		return a.handleBatch(ctx, bodies)
	})
}

func main() { os.Exit(realMain()) }

func realMain() int {
	var (
		brokers    = flag.String("brokers", os.Getenv("KAVARI_BROKERS"), "comma-separated brokers")
		group      = flag.String("group", "", "consumer group")
		run        = flag.String("run", "", "run id: records of other runs are ignored")
		scenario   = flag.String("scenario", "crash", "which messages to consume: crash, batch-crash (a batch handler, -sleep per batch), retry-crash (retry topics: 2 s and 4 s tiers, faultmsg.RetryFailures), head, stop, storm or static")
		topics     = flag.Int("topics", 1, "storm: how many storm topics to consume (1 or 2)")
		sleep      = flag.Duration("sleep", 0, "handler sleep per message (a message's sleep_ms wins)")
		inflight   = flag.Int("max-inflight", 64, "Config.Consume.MaxInFlight")
		buffered   = flag.Int("max-buffered", 0, "Config.Consume.MaxBuffered (0: its default)")
		noSleepMs  = flag.Bool("ignore-sleep-ms", false, "ignore the messages' sleep_ms")
		commit     = flag.Duration("commit-interval", time.Second, "Config.Consume.CommitInterval")
		drain      = flag.Duration("drain", 5*time.Second, "Config.Consume.DrainTimeout")
		session    = flag.Duration("session", 6*time.Second, "Config.Consume.SessionTimeout")
		rebalance  = flag.Duration("rebalance", 15*time.Second, "Config.Consume.RebalanceTimeout")
		heartbeat  = flag.Duration("heartbeat", 500*time.Millisecond, "Config.Consume.HeartbeatInterval")
		stopAfter  = flag.Duration("stop-timeout", 10*time.Second, "deadline of k.Stop on SIGTERM")
		traceStart = flag.Bool("trace-start", false, "also print a line when a handler starts")
		logLevel   = flag.String("log", "warn", "log level on stderr: debug, info, warn, error")
		trName     = flag.String("transport", "", "Config.Transport: kafka-go or franz-go (default: KAVARI_TRANSPORT, inherited from the test)")
		instance   = flag.String("instance-id", "", "Config.Consume.InstanceID (static membership; franz-go)")
		eosPrefix  = flag.String("exactly-once", "", "Config.Consume.ExactlyOnce.TransactionalIDPrefix (franz-go)")
	)
	flag.Parse()
	if *brokers == "" || *group == "" || *run == "" {
		fmt.Fprintln(os.Stderr, "faultapp: -brokers, -group and -run are required")
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintln(os.Stderr, "faultapp:", err)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("pid", pid)

	a := &app{run: *run, sleep: *sleep, traceStart: *traceStart, ignoreSleep: *noSleepMs}
	reg := kavari.NewRegistry()
	var err error
	switch *scenario {
	case "crash":
		err = register(reg, &faultmsg.Crash{}, func(m *faultmsg.Crash) *faultmsg.Body { return &m.Body }, a)
	case "batch-crash":
		err = registerBatch(reg, &faultmsg.BatchCrash{}, func(m *faultmsg.BatchCrash) *faultmsg.Body { return &m.Body }, a)
	case "head":
		err = register(reg, &faultmsg.Head{}, func(m *faultmsg.Head) *faultmsg.Body { return &m.Body }, a)
	case "stop":
		err = register(reg, &faultmsg.Stop{}, func(m *faultmsg.Stop) *faultmsg.Body { return &m.Body }, a)
	case "retry-crash":
		a.fails = func(b *faultmsg.Body, attempt int) bool { return attempt <= faultmsg.RetryFailures(b.Seq) }
		err = register(reg, &faultmsg.RetryCrash{}, func(m *faultmsg.RetryCrash) *faultmsg.Body { return &m.Body }, a)
	case "static":
		err = register(reg, &faultmsg.Static{}, func(m *faultmsg.Static) *faultmsg.Body { return &m.Body }, a)
	case "eo":
		err = register(reg, &faultmsg.EOIn{}, func(m *faultmsg.EOIn) *faultmsg.Body { return &m.Body }, a)
		if err == nil {
			err = reg.Declare(&faultmsg.EOOut{})
		}
	case "storm":
		err = register(reg, &faultmsg.Storm0{}, func(m *faultmsg.Storm0) *faultmsg.Body { return &m.Body }, a)
		if err == nil && *topics > 1 {
			err = register(reg, &faultmsg.Storm1{}, func(m *faultmsg.Storm1) *faultmsg.Body { return &m.Body }, a)
		}
	default:
		err = fmt.Errorf("unknown scenario %q", *scenario)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "faultapp:", err)
		return 2
	}

	tr := testkit.Transport() // KAVARI_TRANSPORT, inherited from the test
	switch *trName {
	case "":
	case "kafka-go":
		tr = kavari.KafkaGo
	case "franz-go":
		tr = kavari.FranzGo
	default:
		err = fmt.Errorf("unknown transport %q", *trName)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "faultapp:", err)
		return 2
	}

	retry := kavari.FibonacciRetry(50*time.Millisecond, 3)
	var tiers []time.Duration
	if *scenario == "retry-crash" {
		retry = kavari.ConstantRetry(20*time.Millisecond, 2)
		tiers = []time.Duration{2 * time.Second, 4 * time.Second}
	}
	k, err := kavari.New(kavari.Config{
		Brokers:   strings.Split(*brokers, ","),
		Transport: tr,
		ClientID:  fmt.Sprintf("faultapp-%d", pid),
		Registry:  reg,
		Logger:    logger,
		Consume: kavari.ConsumeConfig{
			GroupID:           *group,
			InstanceID:        *instance,
			MaxInFlight:       *inflight,
			MaxBuffered:       *buffered,
			CommitInterval:    *commit,
			DrainTimeout:      *drain,
			SessionTimeout:    *session,
			RebalanceTimeout:  *rebalance,
			HeartbeatInterval: *heartbeat,
			Retry:             retry,
			RetryTopics:       tiers,
			ExactlyOnce:       kavari.ExactlyOnceConfig{TransactionalIDPrefix: *eosPrefix},
		},
		Topics: kavari.TopicConfig{Create: tiers != nil}, // the tiers' topics
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "faultapp:", err)
		return 2
	}
	if *scenario == "eo" {
		a.output = func(ctx context.Context, b *faultmsg.Body) error {
			_, err := k.Publish(ctx, &faultmsg.EOOut{Body: *b})
			return err
		}
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	if err := k.Start(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "faultapp: start:", err)
		return 1
	}

	quit := make(chan struct{})
	go watchHealth(k, quit)

	<-sigs
	emit(event{Ev: "stopping"})
	begin := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), *stopAfter)
	err = k.Stop(ctx)
	cancel()
	close(quit)
	ev := event{Ev: "stopped", Ms: time.Since(begin).Milliseconds()}
	if err != nil {
		ev.Err = err.Error()
	}
	emit(ev)
	if err != nil {
		return 3
	}
	return 0
}

// watchHealth prints a health line whenever membership changes.
func watchHealth(k *kavari.Client, quit <-chan struct{}) {
	var last event
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-quit:
			return
		case <-t.C:
		}
		h := k.Health()
		ev := event{Ev: "health", Connected: h.Connected, Generation: h.Generation, Assigned: h.Assigned}
		if ev.Connected != last.Connected || ev.Generation != last.Generation || !reflect.DeepEqual(ev.Assigned, last.Assigned) {
			if h.LastError != "" && !h.Connected {
				ev.Err = h.LastError
			}
			emit(ev)
			last = ev
		}
	}
}
