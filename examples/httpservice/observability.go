package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	kavariotel "github.com/kavari-go/kavari/otel"
)

// telemetry is the service's OpenTelemetry setup: metrics for GET /metrics
// through the Prometheus exporter, traces to stdout or OTLP (-trace).
type telemetry struct {
	inst     *kavariotel.Instrumentation
	metrics  http.Handler
	shutdown func(context.Context) error
}

// newTelemetry sets up metrics and, per traceTo ("none", "stdout" or
// "otlp": OTEL_EXPORTER_OTLP_ENDPOINT, default localhost:4318), tracing.
func newTelemetry(ctx context.Context, traceTo, group string) (*telemetry, error) {
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, err
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	tpOpts := []sdktrace.TracerProviderOption{}
	switch traceTo {
	case "none", "":
	case "stdout":
		se, err := stdouttrace.New(stdouttrace.WithWriter(os.Stdout))
		if err != nil {
			return nil, err
		}
		tpOpts = append(tpOpts, sdktrace.WithBatcher(se))
	case "otlp":
		oe, err := otlptracehttp.New(ctx)
		if err != nil {
			return nil, err
		}
		tpOpts = append(tpOpts, sdktrace.WithBatcher(oe))
	default:
		return nil, fmt.Errorf("-trace %q: want none, stdout or otlp", traceTo)
	}
	tp := sdktrace.NewTracerProvider(tpOpts...)
	return &telemetry{
		inst:    kavariotel.New(kavariotel.Config{TracerProvider: tp, MeterProvider: mp, ConsumerGroup: group}),
		metrics: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
		shutdown: func(ctx context.Context) error {
			return errors.Join(tp.Shutdown(ctx), mp.Shutdown(ctx))
		},
	}, nil
}
