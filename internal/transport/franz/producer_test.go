package franz

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kavari-go/kavari/internal/transport"
)

func TestClassify(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("partition 0: %w", err) }
	for _, c := range []struct {
		err        error
		autoCreate bool
		kind       transport.ErrorKind
		maybe      bool
	}{
		{kerr.NotLeaderForPartition, false, transport.Retriable, false},
		{kerr.RequestTimedOut, false, transport.Retriable, false},
		{kerr.MessageTooLarge, false, transport.TooLarge, false},
		{wrap(kerr.MessageTooLarge), false, transport.TooLarge, false},
		{kerr.RecordListTooLarge, false, transport.TooLarge, false},
		{kerr.UnknownTopicOrPartition, false, transport.UnknownTopic, false},
		{kerr.UnknownTopicOrPartition, true, transport.Retriable, false},
		{kerr.UnknownTopicID, false, transport.UnknownTopic, false},
		{kerr.TopicAuthorizationFailed, false, transport.Permanent, false},
		{kerr.ClusterAuthorizationFailed, false, transport.Permanent, false},
		{kerr.InvalidRecord, false, transport.Permanent, false},
		{kgo.ErrClientClosed, false, transport.Closed, true},
		{kgo.ErrRecordRetries, false, transport.Retriable, false},
		{kgo.ErrRecordTimeout, false, transport.Retriable, false},
		{context.DeadlineExceeded, false, transport.Retriable, false},
		{errors.New("dial tcp: connection refused"), false, transport.Retriable, false},
		{&tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}, false, transport.Permanent, false},
		{tls.AlertError(42), false, transport.Permanent, false},
	} {
		p := &producer{autoCreate: c.autoCreate}
		err := p.classify(c.err)
		var pe *transport.ProduceError
		if !errors.As(err, &pe) {
			t.Fatalf("classify(%v) = %T", c.err, err)
		}
		if pe.Kind != c.kind || pe.MayHaveBeenWritten != c.maybe || !errors.Is(err, c.err) {
			t.Errorf("classify(%v, autoCreate=%v) = kind %d maybe %v, want %d %v", c.err, c.autoCreate, pe.Kind, pe.MayHaveBeenWritten, c.kind, c.maybe)
		}
	}
}
