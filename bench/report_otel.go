package main

import "fmt"

// otelAdded is the CPU per record that the instrumented client of pair adds
// to the plain one, in ns, and the ratio of their CPU per record.
func (r *report) otelAdded(plain, instrumented string) (added, ratio float64, ok bool) {
	p, i := r.res[otelID(plain)], r.res[otelID(instrumented)]
	if p == nil || i == nil || p.CPUNsPerMsg <= 0 || i.CPUNsPerMsg <= 0 {
		return 0, 0, false
	}
	return i.CPUNsPerMsg - p.CPUNsPerMsg, i.CPUNsPerMsg / p.CPUNsPerMsg, true
}

// evaluateOtel adds the target: kavariotel's added CPU per record ≤ kotel's
// (its hooks alone), for kavari on each transport.
func (r *report) evaluateOtel(add func(name, measured, status string)) {
	kotelPair := otelPairs[2]
	for _, p := range otelPairs[:2] {
		name := fmt.Sprintf("kavariotel's added CPU per record on %s ≤ kotel's on raw franz-go", implName(p.plain))
		a, _, ok1 := r.otelAdded(p.plain, p.instrumented)
		k, _, ok2 := r.otelAdded(kotelPair.plain, kotelPair.instrumented)
		if !ok1 || !ok2 {
			add(name, "", notMeasured)
			continue
		}
		add(name, fmt.Sprintf("%.2f µs vs %.2f µs", a/1000, k/1000), status(a <= k))
	}
}

func (r *report) writeOtel(w func(string, ...any)) {
	seen := false
	for _, impl := range otelImpls {
		seen = seen || r.res[otelID(impl)] != nil
	}
	if !seen {
		return
	}
	w("## OpenTelemetry: kavariotel and franz-go's kotel (consume, 100 B, traced records)\n\n")
	w("| client | msg/s | CPU per record | without instrumentation | added CPU per record | CPU ratio | rate ratio | peak RSS |\n")
	w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, p := range otelPairs {
		x := r.res[otelID(p.instrumented)]
		base := r.res[otelID(p.plain)]
		if x == nil {
			continue
		}
		baseCPU, added, ratio := "–", "–", "–"
		if base != nil && base.CPUNsPerMsg > 0 {
			baseCPU = fmt.Sprintf("%.2f µs", base.CPUNsPerMsg/1000)
		}
		if a, q, ok := r.otelAdded(p.plain, p.instrumented); ok {
			added, ratio = fmt.Sprintf("%.2f µs", a/1000), fmt.Sprintf("%.2f×", q)
		}
		w("| %s | %s | %.2f µs | %s | %s | %s | %s | %.1f MiB |\n", otelName(p.instrumented), fmtRate(x.MsgsPerSec, x.Seconds > 0),
			x.CPUNsPerMsg/1000, baseCPU, added, ratio, fmtRatio(r.ratio(otelID(p.instrumented), otelID(p.plain))), x.PeakRSSMiB)
	}
	w("\n%s records of 100 B, each with a W3C `traceparent` header (random ids, one record in ten flagged sampled), read by\n", thousands(r.o.consumeN))
	w("each client with a new group, -reps times interleaved (fastest run shown). Both instrumentations get the same providers: an\n")
	w("SDK tracer provider with the sampler `ParentBased(TraceIDRatioBased(0.1))` (so the producer's flag decides) and spans\n")
	w("batched to an exporter that drops them, and an SDK meter provider with a manual reader. kavariotel: its hooks and its\n")
	w("middleware (a process span per handler attempt, parent and link the producer span; its metrics). kotel: `kotel.NewKotel`\n")
	w("with its tracer (W3C propagator; a receive span per record, from fetched to polled) and its meter, as kgo hooks; the\n")
	w("process-span row adds `Tracer.WithProcessSpan` around each record's decode and validation. The raw franz-go client decodes\n")
	w("and validates each record (as kavari does). CPU per record = the worker process's user + system CPU time from creating\n")
	w("the client to the last handled record ÷ records (a kotel receive span starts when a record is fetched, before any is\n")
	w("handled); added = instrumented − the same client without instrumentation, whose set-up and join cost the same.\n\n")
}

func otelName(impl string) string {
	switch impl {
	case "kavari+otel":
		return "kavari on kafka-go + kavariotel"
	case implKavariFranz + "+otel":
		return "kavari on franz-go + kavariotel"
	case "franz-go+json+validate+kotel":
		return "raw franz-go + JSON decode + validate + kotel"
	case "franz-go+json+validate+kotel-process":
		return "the same + a kotel process span per record"
	}
	return implName(impl)
}
