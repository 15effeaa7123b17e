package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/kafkaproc"
	"github.com/kavari-go/kavari/internal/testenv"
)

// securityTransports are the transports the security tests run on: each
// entry sets Config.Transport (the zero value is the default, kafka-go).
// Adding a transport is one line here; KAVARI_TRANSPORT=<name> runs only
// that one.
var securityTransports = []struct {
	name string
	set  func(*kavari.Config)
}{
	{"kafka-go", func(*kavari.Config) {}},
	{"franz-go", func(c *kavari.Config) { c.Transport = kavari.FranzGo }},
}

type secEvent struct {
	kavari.Message `kavari:"topic=it-sec,key=Run"`
	Run            string `json:"run"`
	Fail           bool   `json:"fail,omitempty"`
}

// TestSecurity starts its own Kafka node with TLS and SASL listeners
// (kafkaproc.Options.Security) and, for every transport, proves a publish
// and consume round trip over each of them, and that a wrong password and
// an untrusted CA are clear errors that are not retried.
func TestSecurity(t *testing.T) {
	testenv.RequireReal(t)
	requireKafkaLib(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	begin := time.Now()
	cluster, err := kafkaproc.Start(ctx, kafkaproc.Options{Dir: t.TempDir(), Logf: t.Logf,
		Security: &kafkaproc.Security{Users: map[string]string{"alice": "alice-s3cret"}}})
	require.NoError(t, err)
	t.Cleanup(func() {
		if err := cluster.Stop(); err != nil {
			t.Logf("stopping the secured node: %v", err)
		}
	})
	sec := cluster.Security()
	t.Logf("secured Kafka %s ready in %s: SSL %v, SASL_PLAINTEXT %v, SASL_SSL %v", cluster.Version(),
		time.Since(begin).Round(time.Millisecond), sec.SSL, sec.SASLPlaintext, sec.SASLSSL)
	user, pass := sec.User()
	saslAs := func(mech, password string) *kavari.SASL {
		return &kavari.SASL{Mechanism: mech, Username: user, Password: password}
	}

	type secured struct {
		brokers []string
		tls     *tls.Config
		sasl    *kavari.SASL
	}
	good := []struct {
		name string
		secured
	}{
		{"TLS", secured{sec.SSL, sec.TLSConfig(), nil}},
		{"SASL_PLAIN", secured{sec.SASLPlaintext, nil, saslAs(kafkaproc.MechanismPlain, pass)}},
		{"SASL_SCRAM-SHA-256", secured{sec.SASLPlaintext, nil, saslAs(kafkaproc.MechanismScramSHA256, pass)}},
		{"SASL_SCRAM-SHA-512", secured{sec.SASLPlaintext, nil, saslAs(kafkaproc.MechanismScramSHA512, pass)}},
		{"SASL_SSL_PLAIN", secured{sec.SASLSSL, sec.TLSConfig(), saslAs(kafkaproc.MechanismPlain, pass)}},
		{"SASL_SSL_SCRAM-SHA-512", secured{sec.SASLSSL, sec.TLSConfig(), saslAs(kafkaproc.MechanismScramSHA512, pass)}},
	}
	untrusted := &tls.Config{RootCAs: x509.NewCertPool(), MinVersion: tls.VersionTLS12}
	bad := []struct {
		name string
		secured
		want failure
	}{
		{"WrongPassword_PLAIN", secured{sec.SASLPlaintext, nil, saslAs(kafkaproc.MechanismPlain, "wrong")}, authFailure},
		{"WrongPassword_SCRAM-SHA-256", secured{sec.SASLPlaintext, nil, saslAs(kafkaproc.MechanismScramSHA256, "wrong")}, authFailure},
		{"WrongPassword_SASL_SSL", secured{sec.SASLSSL, sec.TLSConfig(), saslAs(kafkaproc.MechanismScramSHA512, "wrong")}, authFailure},
		{"UntrustedCA", secured{sec.SSL, untrusted, nil}, certFailure},
		{"UntrustedCA_SASL_SSL", secured{sec.SASLSSL, untrusted, saslAs(kafkaproc.MechanismPlain, pass)}, certFailure},
	}

	for _, tr := range securityTransports {
		t.Run(tr.name, func(t *testing.T) {
			if only := os.Getenv("KAVARI_TRANSPORT"); only != "" && only != tr.name {
				t.Skipf("KAVARI_TRANSPORT=%s", only)
			}
			for _, c := range good {
				t.Run(c.name, func(t *testing.T) {
					secureRoundTrip(t, c.brokers, cluster.Brokers(), func(cfg *kavari.Config) {
						tr.set(cfg)
						cfg.TLS, cfg.SASL = c.tls, c.sasl
					})
				})
			}
			for _, c := range bad {
				t.Run(c.name, func(t *testing.T) {
					refused(t, c.brokers, func(cfg *kavari.Config) {
						tr.set(cfg)
						cfg.TLS, cfg.SASL = c.tls, c.sasl
					}, c.want)
				})
			}
		})
	}
}

// secureRoundTrip creates the topics, starts a consumer and publishes two
// messages with the same key through the connection settings mutate
// applies: the first fails in its handler and is dead-lettered, the second
// is handled; then offsets are committed and Stop succeeds, with no warning
// logged on the way. plain (the PLAINTEXT listener) is only for checking
// the dead letter.
func secureRoundTrip(t *testing.T, brokers, plain []string, mutate func(*kavari.Config)) {
	run := testenv.ID("sec")
	got := make(chan struct{}, 1)
	reg := kavari.NewRegistry()
	require.NoError(t, kavari.RegisterFuncOn(reg, &secEvent{}, func(ctx context.Context, m *secEvent) error {
		if m.Run != run {
			return nil
		}
		if m.Fail {
			return errors.New("failed on purpose")
		}
		select {
		case got <- struct{}{}:
		default:
		}
		return nil
	}))
	logs := &warnings{}
	k := newKavari(t, reg, brokers, func(cfg *kavari.Config) { // EnsureTopics: the admin calls
		mutate(cfg)
		cfg.Logger = slog.New(logs)
		cfg.Consume.Retry = kavari.ConstantRetry(10*time.Millisecond, 1)
		cfg.Topics.Partitions = 3
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	require.NoError(t, k.Start(ctx))
	_, err := k.Publish(ctx, &secEvent{Run: run, Fail: true})
	require.NoError(t, err)
	_, err = k.Publish(ctx, &secEvent{Run: run})
	require.NoError(t, err)
	select {
	case <-got: // after the first was dead-lettered: same key, in order
	case <-ctx.Done():
		t.Fatalf("the handler did not receive the message; health: %+v", k.Health())
	}
	waitUntil(t, time.Minute, func() bool { return k.Health().Commits > 0 }, "an offset commit")
	// A fetch timing out on a loaded machine is noted in Health and retried;
	// nothing about the secured connection may be.
	if e := strings.ToLower(k.Health().LastError); strings.Contains(e, "sasl") || strings.Contains(e, "certificate") ||
		strings.Contains(e, "authentication") || strings.Contains(e, "tls") {
		t.Fatalf("Health().LastError: %s", k.Health().LastError)
	}
	stopCtx, stopCancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer stopCancel()
	require.NoError(t, k.Stop(stopCtx))
	require.Empty(t, logs.get(), "warnings logged")
	require.Equal(t, 1, countRecords(t, plain, "it-sec.dlq", 3, run), "dead letters of this run")
}

// warnings is a slog.Handler keeping the messages of warnings and errors,
// except the dead-lettering secureRoundTrip causes.
type warnings struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warnings) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (w *warnings) Handle(_ context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, "kavari: handler gave up, dead-lettering") {
		return nil // the failure the test makes
	}
	msg := r.Message
	r.Attrs(func(a slog.Attr) bool { msg += " " + a.String(); return true })
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, msg)
	return nil
}
func (w *warnings) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *warnings) WithGroup(string) slog.Handler      { return w }
func (w *warnings) get() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.msgs...)
}

// countRecords counts the records of topic's partitions (0 to
// partitions-1) whose key is key.
func countRecords(t *testing.T, brokers []string, topic string, partitions int, key string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n := 0
	for p := 0; p < partitions; p++ {
		conn, err := kafka.DialLeader(ctx, "tcp", brokers[0], topic, p)
		require.NoError(t, err)
		first, last, err := conn.ReadOffsets()
		require.NoError(t, err)
		_, err = conn.Seek(first, kafka.SeekAbsolute)
		require.NoError(t, err)
		for off := first; off < last; off++ {
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			m, err := conn.ReadMessage(10 << 20)
			require.NoError(t, err)
			if string(m.Key) == key {
				n++
			}
		}
		conn.Close()
	}
	return n
}

// refused checks that the settings mutate applies are refused clearly:
// Publish fails at once with an error want accepts, although the retry
// policy would wait an hour between unlimited attempts, saying that nothing
// was written; and a started consumer shows such an error in
// Health.LastError and still stops.
func refused(t *testing.T, brokers []string, mutate func(*kavari.Config), want failure) {
	reg := kavari.NewRegistry()
	require.NoError(t, kavari.RegisterFuncOn(reg, &secEvent{}, func(context.Context, *secEvent) error { return nil }))
	cfg := kavari.Config{
		Brokers:  brokers,
		Registry: reg,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		Publish: kavari.PublishConfig{
			Retry: kavari.ConstantRetry(time.Hour, -1),
		},
		Consume: kavari.ConsumeConfig{
			GroupID: testenv.ID("it-sec-refused"),
		},
	}
	mutate(&cfg)
	k, err := kavari.New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	_, err = k.Publish(ctx, &secEvent{Run: "refused"})
	require.Error(t, err)
	require.NotErrorIs(t, err, context.DeadlineExceeded, "Publish retried a permanent failure until its context ended")
	require.Truef(t, want.is(err), "Publish: unexpected error %v", err)
	var pe *kavari.PublishError
	require.ErrorAs(t, err, &pe)
	require.False(t, pe.MayHaveBeenWritten, "a refused connection sent nothing: %v", err)
	t.Logf("Publish: %v", err)

	// The consumer: Start does not fail on a broker it cannot reach (it
	// keeps trying), but Health says why.
	if err := k.Start(ctx); err != nil {
		require.Truef(t, want.is(err), "Start: unexpected error %v", err)
	} else {
		waitUntil(t, time.Minute, func() bool {
			h := k.Health().LastError
			return h != "" && strings.Contains(strings.ToLower(h), want.text)
		}, "Health.LastError shows the failure")
		t.Logf("Health.LastError: %s", k.Health().LastError)
	}
	stopCtx, stopCancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer stopCancel()
	require.NoError(t, k.Stop(stopCtx))
}

// failure is an expected refusal: is checks an error, text is what a
// Health.LastError showing it contains (lower case).
type failure struct {
	is   func(error) bool
	text string
}

var (
	// authFailure: SASL authentication failed. It looks at the message
	// only, so that it holds for every transport.
	authFailure = failure{
		is:   func(err error) bool { return strings.Contains(strings.ToLower(err.Error()), "authentication failed") },
		text: "authentication failed",
	}
	// certFailure: the broker's certificate was not verified.
	certFailure = failure{
		is: func(err error) bool {
			var cv *tls.CertificateVerificationError
			return errors.As(err, &cv)
		},
		text: "certificate",
	}
)
