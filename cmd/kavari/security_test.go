package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kavari-go/kavari/kavaritest"
)

// The security flags against the embedded broker with SASL or TLS turned on
// (the real broker of the test command runs in plaintext).

func TestSASLFlags(t *testing.T) {
	b := kavaritest.NewBroker(t, kavaritest.Topics("sec"),
		kavaritest.SASLUser("PLAIN", "admin", "s3cret"),
		kavaritest.SASLUser("SCRAM-SHA-256", "admin", "s3cret"),
		kavaritest.SASLUser("SCRAM-SHA-512", "admin", "s3cret"),
	)
	brokers := strings.Join(b.Addrs(), ",")
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		code, _, errOut := exec(t, "tail", "sec", "--brokers", brokers, "--timeout", "10s", "--sasl-mechanism", mech, "--sasl-user", "admin", "--sasl-password", "s3cret")
		if code != 0 {
			t.Errorf("%s: exit %d: %s", mech, code, errOut)
		}
		code, _, errOut = exec(t, "tail", "sec", "--brokers", brokers, "--timeout", "10s", "--sasl-mechanism", mech, "--sasl-user", "admin", "--sasl-password", "wrong")
		if code != 1 || !strings.Contains(errOut, "check the SASL mechanism, user and password") {
			t.Errorf("%s with a wrong password: exit %d: %s", mech, code, errOut)
		}
	}
	t.Setenv("KAVARI_SASL_PASSWORD", "s3cret")
	if code, _, errOut := exec(t, "tail", "sec", "--brokers", brokers, "--sasl-mechanism", "PLAIN", "--sasl-user", "admin"); code != 0 {
		t.Errorf("password from KAVARI_SASL_PASSWORD: exit %d: %s", code, errOut)
	}
	if code, _, errOut := exec(t, "tail", "sec", "--brokers", brokers, "--timeout", "5s"); code != 1 || !strings.Contains(errOut, "does it need --tls or --sasl-mechanism?") {
		t.Errorf("no SASL against a SASL broker: exit %d, %s", code, errOut)
	}
}

func TestTLSFlags(t *testing.T) {
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kavari test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}
	b := kavaritest.NewBroker(t, kavaritest.Topics("sec"), kavaritest.TLS(cfg))
	brokers := strings.Join(b.Addrs(), ",")
	for _, c := range []struct {
		flags []string
		code  int
	}{
		{[]string{"--tls-ca", ca}, 0},
		{[]string{"--tls-insecure"}, 0},
		{[]string{"--tls"}, 1}, // the system pool does not trust the test CA
	} {
		args := append([]string{"tail", "sec", "--brokers", brokers, "--timeout", "5s"}, c.flags...)
		code, _, errOut := exec(t, args...)
		if code != c.code || c.code == 1 && !strings.Contains(errOut, "certificate") {
			t.Errorf("%v: exit %d, want %d: %s", c.flags, code, c.code, errOut)
		}
		t.Logf("%v: exit %d %s", c.flags, code, errOut)
	}
}
