package main

import (
	"fmt"
	"math"
	"strings"
)

// evaluateOutbox adds the outbox's targets: relay throughput ≥ 0.8× direct
// PublishBatch of the same messages, and Publish < 50 µs per message in
// the caller's transaction on PostgreSQL; the latency is reported.
func (r *report) evaluateOutbox(add func(name, measured, status string)) {
	if r.res[outboxRelayID] == nil && r.res[outboxDirectID] == nil && r.res[outboxInsertID] == nil && r.res[outboxLatencyID] == nil {
		return
	}
	name := fmt.Sprintf("outbox relay (PostgreSQL) ≥ %.1f× direct PublishBatch of the same messages", outboxTarget)
	if q, ok := r.ratio(outboxRelayID, outboxDirectID); ok {
		add(name, fmt.Sprintf("%.2f× (fastest of %d runs each, alternated; every run: relay %s, direct %s)", q, len(r.res[outboxRelayID].Runs),
			runList(r.res[outboxRelayID].Runs), runList(r.res[outboxDirectID].Runs)), status(q >= outboxTarget))
	} else {
		add(name, "", notMeasured)
	}
	name = fmt.Sprintf("outbox.Publish costs the caller's transaction < %.0f µs per message (PostgreSQL)", outboxInsertTarget)
	if x := r.res[outboxInsertID]; x != nil && x.Outbox != nil {
		add(name, fmt.Sprintf("%.1f µs (PublishBatch of 10: %.1f µs a message; a SELECT 1 round trip %.1f µs)", x.Outbox.InsertUs, x.Outbox.Insert10Us, x.Outbox.RoundTripUs),
			status(x.Outbox.InsertUs < outboxInsertTarget))
	} else {
		add(name, "", notMeasured)
	}
	name = fmt.Sprintf("outbox commit → acknowledged latency at %s orders/s (PostgreSQL), reported", thousands(outboxRate))
	if x := r.res[outboxLatencyID]; x != nil && x.Latency != nil && x.Latency.Received > 0 {
		add(name, fmt.Sprintf("p50 %.1f ms, p99 %.1f ms (%d/%d acknowledged)", x.Latency.P50, x.Latency.P99, x.Latency.Received, x.Latency.Sent), "reported")
	} else {
		add(name, "", notMeasured)
	}
}

func runList(runs []float64) string {
	var s []string
	for _, v := range runs {
		s = append(s, thousands(int(math.Round(v))))
	}
	return strings.Join(s, ", ")
}

func (r *report) writeOutbox(w func(string, ...any)) {
	direct, relay, lat, ins := r.res[outboxDirectID], r.res[outboxRelayID], r.res[outboxLatencyID], r.res[outboxInsertID]
	if direct == nil && relay == nil && lat == nil && ins == nil && r.res[outboxRelay2000ID] == nil {
		return
	}
	w("## Transactional outbox (PostgreSQL 17, kavari on franz-go)\n\n")
	w("| workload | msg/s | every run (msg/s) | relay ÷ direct | peak RSS |\n| --- | ---: | --- | ---: | ---: |\n")
	for _, x := range []*result{direct, relay, r.res[outboxRelay2000ID]} {
		if x == nil {
			continue
		}
		q := "–"
		if x != direct {
			q = fmtRatio(r.ratio(x.ID, outboxDirectID))
		}
		w("| %s | %s | %s | %s | %.1f MiB |\n", x.ID, fmtRate(x.MsgsPerSec, x.Seconds > 0), runList(x.Runs), q, x.PeakRSSMiB)
	}
	w("\n%s messages of 100 B (a key each) per run, -reps runs of each, alternated on fresh topics (the fastest counts). direct: `PublishBatch`\n", thousands(outboxN))
	w("in batches of %d from %d goroutines. relay: the same messages written to the outbox first (transactions of %d, not timed),\n", outboxBatch, outboxWorkers, outboxBatch)
	w("then a relay of %d workers and batches of %d, from `Run` to an empty table; the database's work (per batch a begin, the shard\n", outboxWorkers, outboxBatch)
	w("locks, a delete returning the rows and a commit) shares the machine with the broker and the client. relay-batch2000: the same relay with batches of 2,000\n")
	w("(the database's round trips per batch amortised over 4× the rows; not the target's configuration).\n\n")
	if x := lat; x != nil && x.Latency != nil {
		l := x.Latency
		w("Commit → acknowledged at %s orders/s for %s (one order a transaction, each in its own goroutine, the relay running\n", thousands(l.Rate), r.o.e2eDuration)
		w("with its defaults but %d workers and batches of %d): p50 %.1f ms, p99 %.1f ms, p99.9 %.1f ms, max %.1f ms; %d/%d acknowledged,\n", outboxWorkers, outboxBatch, l.P50, l.P99, l.P999, l.Max, l.Received, l.Sent)
		w("achieved rate %.0f/s. From the commit call to the broker's acknowledgement (`HookPublishAfter`), in the same process.\n\n", l.AchievedRate)
	}
	if x := ins; x != nil && x.Outbox != nil {
		o := x.Outbox
		w("Insert cost in the caller's transaction (one connection, transactions of 100 messages, %s messages a measure, each on a\n", thousands(o.Messages))
		w("fresh table): `Publish` %.1f µs a message, `PublishBatch` of 10 %.1f µs a message; a `SELECT 1` round trip %.1f µs.\n\n", o.InsertUs, o.Insert10Us, o.RoundTripUs)
	}
}
