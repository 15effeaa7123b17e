package kavari

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A broker that cannot be authenticated or that refuses the client's
// credentials fails the same way on every attempt: Publish returns at once,
// and nothing can have been written (no request followed the failed
// handshake).
func TestPublishSecurityFailureIsPermanent(t *testing.T) {
	unknownCA := &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}
	cases := []struct {
		name string
		err  error
	}{
		{"untrusted CA", fmt.Errorf("dial: %w", unknownCA)},
		{"wrong host name", &tls.CertificateVerificationError{Err: x509.HostnameError{Certificate: &x509.Certificate{}, Host: "kafka.example"}}},
		{"alert from the broker", tls.AlertError(42)}, // bad_certificate
		{"SASL authentication failed", kafka.SASLAuthenticationFailed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := &fakeWriter{write: func(int, []kafka.Message) error { return tc.err }}
			p := newFakePublisher(t, Config{Publish: PublishConfig{Retry: ConstantRetry(time.Millisecond, 5)}}, w)
			_, errs := p.publish(context.Background(), []Msg{&internalMsg{ID: "a"}})
			require.Len(t, errs, 1)
			var pe *PublishError
			require.ErrorAs(t, errs[0], &pe)
			assert.ErrorIs(t, errs[0], tc.err)
			assert.Equal(t, 1, w.Calls(), "retried: %v", errs[0])
			assert.False(t, pe.MayHaveBeenWritten, "%v", errs[0])
		})
	}
}
