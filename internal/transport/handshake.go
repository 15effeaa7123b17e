package transport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
)

// HandshakeFailed reports whether err is a failed TLS handshake: the broker's
// certificate was not verified (unknown CA, wrong host name, expired) or the
// broker refused the client's with an alert. No request was sent on that
// connection, and retrying with the same tls.Config fails the same way, so
// adapters classify it Permanent and not MayHaveBeenWritten.
func HandshakeFailed(err error) bool {
	var verify *tls.CertificateVerificationError
	var alert tls.AlertError
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	return errors.As(err, &verify) || errors.As(err, &alert) ||
		errors.As(err, &unknownCA) || errors.As(err, &hostname) || errors.As(err, &invalid)
}
