package engine

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/kavaritest"
)

type secMsg struct {
	kavari.Message `kavari:"topic=kavari-test-sec,key=ID"`
	ID             string `json:"id"`
}

// roundTripOn publishes and consumes one message through cfg, proving the
// connection settings work for the writer, the group and the readers.
func roundTripOn(t *testing.T, brokers []string, mutate func(*kavari.Config)) {
	t.Helper()
	reg := kavari.NewRegistry()
	var handled atomic.Int64
	require.NoError(t, kavari.RegisterFuncOn(reg, &secMsg{}, func(ctx context.Context, m *secMsg) error {
		handled.Add(1)
		return nil
	}))
	k := newKavari(t, reg, brokers, mutate)
	ctx := context.Background()
	require.NoError(t, k.Start(ctx))
	_, err := k.Publish(ctx, &secMsg{ID: "a"})
	require.NoError(t, err)
	eventually(t, 30*time.Second, func() bool { return handled.Load() == 1 }, "handled over the secured connection")
}

func TestSASLMechanisms(t *testing.T) {
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		t.Run(mech, func(t *testing.T) {
			b := kavaritest.NewBroker(t, kavaritest.SASLUser(mech, "app", "s3cret"),
				kavaritest.Topics("kavari-test-sec", "kavari-test-sec.dlq"))
			roundTripOn(t, b.Addrs(), func(c *kavari.Config) {
				c.SASL = &kavari.SASL{Mechanism: mech, Username: "app", Password: "s3cret"}
			})
		})
	}
}

func TestSASLWrongPasswordIsAnError(t *testing.T) {
	b := kavaritest.NewBroker(t, kavaritest.SASLUser("PLAIN", "app", "s3cret"),
		kavaritest.Topics("kavari-test-sec"))
	reg := kavari.NewRegistry()
	require.NoError(t, reg.Declare(&secMsg{}))
	k, err := kavari.New(kavari.Config{
		Brokers:  b.Addrs(),
		Registry: reg,
		Logger:   testLogger(),
		SASL:     &kavari.SASL{Mechanism: "PLAIN", Username: "app", Password: "wrong"},
		Publish: kavari.PublishConfig{
			Retry: kavari.FibonacciRetry(time.Millisecond, 3),
		},
	})
	require.NoError(t, err)
	defer k.Stop(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = k.Publish(ctx, &secMsg{ID: "a"})
	require.Error(t, err)
}

func TestTLS(t *testing.T) {
	serverCfg, pool := selfSignedTLS(t)
	b := kavaritest.NewBroker(t, kavaritest.TLS(serverCfg), kavaritest.Topics("kavari-test-sec", "kavari-test-sec.dlq"))
	roundTripOn(t, b.Addrs(), func(c *kavari.Config) {
		c.TLS = &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	})
}

func selfSignedTLS(t *testing.T) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kavari test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}, pool
}
