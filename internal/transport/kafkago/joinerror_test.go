package kafkago

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/segmentio/kafka-go"
)

// A join error names the group and, for the two ways a mixed group fails,
// says why.
func TestJoinErrorLabels(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{kafka.InconsistentGroupProtocol, "no common assignor"},
		{fmt.Errorf("unable to read metadata for member, %v: %w", "rdkafka-1", nil), "only version-0 subscriptions"},
		{errors.New("boom"), `join group "billing": boom`},
	} {
		err := joinError("billing", c.err)
		if msg := err.Error(); !strings.Contains(msg, `kavari: kafka-go consumer: join group "billing": `) || !strings.Contains(msg, c.want) {
			t.Errorf("joinError(%v) = %q, want it to say %q", c.err, msg, c.want)
		}
		if c.err != nil && !errors.Is(err, c.err) {
			t.Errorf("joinError(%v) does not wrap it", c.err)
		}
	}
}
