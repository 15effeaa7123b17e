package kavari_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/kavari-go/kavari"
)

// A Config or its SASL printed with fmt or logged through slog never shows
// the password (as database/sql drivers redact a DSN's), but still shows
// the mechanism and user name.
func TestSASLPasswordRedacted(t *testing.T) {
	const secret = "hunter2-s3cret"
	sasl := &kavari.SASL{Mechanism: "SCRAM-SHA-512", Username: "alice", Password: secret}
	cfg := kavari.Config{Brokers: []string{"b:9092"}, SASL: sasl}
	var outs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
		for _, v := range []any{*sasl, sasl, cfg, &cfg} {
			outs = append(outs, fmt.Sprintf(verb, v))
		}
	}
	outs = append(outs, fmt.Sprint(sasl), fmt.Sprintln(cfg))
	var text, js bytes.Buffer
	slog.New(slog.NewTextHandler(&text, nil)).Info("config", "sasl", sasl, "sasl_value", *sasl, "cfg", cfg)
	slog.New(slog.NewJSONHandler(&js, nil)).Info("config", "sasl", sasl, "sasl_value", *sasl)
	outs = append(outs, text.String(), js.String())
	for _, out := range outs {
		assert.NotContains(t, out, secret)
		assert.NotContains(t, out, fmt.Sprintf("%x", secret))
	}
	assert.Contains(t, fmt.Sprintf("%+v", sasl), "alice")
	assert.Contains(t, fmt.Sprintf("%+v", cfg), "SCRAM-SHA-512")
	assert.Contains(t, js.String(), "alice")
	// The value itself is untouched: kavari still authenticates with it.
	assert.Equal(t, secret, sasl.Password)
}
