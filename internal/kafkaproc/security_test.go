package kafkaproc

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// TestKafkaprocSecurity starts a node with secured listeners and checks
// each of them with kafka-go: TLS, the three SASL mechanisms in clear and
// over TLS, and that a wrong password and an untrusted CA are refused.
func TestKafkaprocSecurity(t *testing.T) {
	requireKafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	begin := time.Now()
	c, err := Start(ctx, Options{Dir: t.TempDir(), Logf: t.Logf, SkipWarmup: true,
		Security: &Security{Users: map[string]string{"alice": "alice-s3cret", "bob": "bob-s3cret"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	t.Logf("secured node ready in %s", time.Since(begin).Round(time.Millisecond))
	sec := c.Security()
	if sec == nil || len(sec.SSL) != 1 || len(sec.SASLPlaintext) != 1 || len(sec.SASLSSL) != 1 {
		t.Fatalf("Security() = %+v", sec)
	}
	if name, pass := sec.User(); name != "alice" || pass != "alice-s3cret" {
		t.Errorf("User() = %q, %q", name, pass)
	}

	// brokers dials addr and asks for metadata.
	brokers := func(addr string, tlsCfg *tls.Config, mech sasl.Mechanism) error {
		d := &kafka.Dialer{Timeout: 10 * time.Second, TLS: tlsCfg, SASLMechanism: mech}
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		bs, err := conn.Brokers()
		if err == nil && len(bs) != 1 {
			err = errors.New("no broker in metadata")
		}
		return err
	}
	mechanism := func(t *testing.T, name, user, pass string) sasl.Mechanism {
		switch name {
		case MechanismPlain:
			return plain.Mechanism{Username: user, Password: pass}
		case MechanismScramSHA256, MechanismScramSHA512:
			alg := scram.SHA256
			if name == MechanismScramSHA512 {
				alg = scram.SHA512
			}
			m, err := scram.Mechanism(alg, user, pass)
			if err != nil {
				t.Fatal(err)
			}
			return m
		}
		t.Fatalf("mechanism %s", name)
		return nil
	}

	if err := brokers(sec.SSL[0], sec.TLSConfig(), nil); err != nil {
		t.Errorf("SSL: %v", err)
	}
	for _, m := range sec.Mechanisms {
		for _, user := range []string{"alice", "bob"} {
			if err := brokers(sec.SASLPlaintext[0], nil, mechanism(t, m, user, sec.Users[user])); err != nil {
				t.Errorf("SASL_PLAINTEXT %s as %s: %v", m, user, err)
			}
			if err := brokers(sec.SASLSSL[0], sec.TLSConfig(), mechanism(t, m, user, sec.Users[user])); err != nil {
				t.Errorf("SASL_SSL %s as %s: %v", m, user, err)
			}
		}
		err := brokers(sec.SASLPlaintext[0], nil, mechanism(t, m, "alice", "wrong"))
		if !errors.Is(err, kafka.SASLAuthenticationFailed) {
			t.Errorf("SASL_PLAINTEXT %s with a wrong password: %v, want SASLAuthenticationFailed", m, err)
		}
	}
	err = brokers(sec.SSL[0], &tls.Config{MinVersion: tls.VersionTLS12}, nil) // the system roots only
	var unknown *tls.CertificateVerificationError
	if !errors.As(err, &unknown) {
		t.Errorf("SSL with an untrusted CA: %v, want a certificate verification error", err)
	}
}

func TestKafkaprocSecurityProps(t *testing.T) {
	s := &secState{dir: "/d/tls", storePass: "pw", users: map[string]string{"bob": "b", "alice": "a"}}
	c := &Cluster{sec: s, nodes: []*node{{id: 1, dir: "/d/node-1", brokerPort: 9000, controllerPort: 9001, sslPort: 9002, saslPort: 9003, saslSSLPort: 9004}}}
	props := c.serverProps(c.nodes[0], "1@127.0.0.1:9001")
	for _, want := range []string{
		"listeners=PLAINTEXT://127.0.0.1:9000,SSL://127.0.0.1:9002,SASL_PLAINTEXT://127.0.0.1:9003,SASL_SSL://127.0.0.1:9004,CONTROLLER://127.0.0.1:9001\n",
		"advertised.listeners=PLAINTEXT://127.0.0.1:9000,SSL://127.0.0.1:9002,SASL_PLAINTEXT://127.0.0.1:9003,SASL_SSL://127.0.0.1:9004\n",
		"listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL\n",
		"inter.broker.listener.name=PLAINTEXT\n",
		"ssl.keystore.location=/d/tls/broker.p12\n",
		"sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512\n",
		`listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_alice="a" user_bob="b";` + "\n",
		"listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;\n",
	} {
		if !strings.Contains(props, want) {
			t.Errorf("server.properties lacks %q:\n%s", want, props)
		}
	}
	if got := strings.Join(s.scramArgs(), " "); got != "--add-scram SCRAM-SHA-256=[name=alice,password=a] --add-scram SCRAM-SHA-512=[name=alice,password=a] "+
		"--add-scram SCRAM-SHA-256=[name=bob,password=b] --add-scram SCRAM-SHA-512=[name=bob,password=b]" {
		t.Errorf("scramArgs = %s", got)
	}
	for _, bad := range []string{"", "a b", `x"y`, "a,b", "p]"} {
		if validCredential(bad) {
			t.Errorf("validCredential(%q) = true", bad)
		}
	}
	bad := &Cluster{opts: Options{Security: &Security{Users: map[string]string{"u": "p w"}}}, dir: t.TempDir()}
	if err := bad.setupSecurity(context.Background()); err == nil || !strings.Contains(err.Error(), "Security.Users") {
		t.Errorf("setupSecurity accepted a password with a space: %v", err)
	}
}
