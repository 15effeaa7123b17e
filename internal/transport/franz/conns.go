package franz

import (
	"crypto/tls"
	"errors"
	"time"

	"github.com/kavari-go/kavari/internal/transport/conntrack"
)

// errCut is what reads and writes on a connection the consumer cut return,
// and what a dial returns once the consumer refuses new connections. kgo
// does not retry it (it is neither a network nor a Kafka error), so a
// request on a cut connection fails at once instead of being sent again.
var errCut = errors.New("kavari: franz consumer: connection cut by Close")

// dialTimeout is kgo's default dial timeout (TLS handshake included), kept
// with our own dialer.
const dialTimeout = 10 * time.Second

// newConnSet returns the set a consumer's kgo client dials through (its
// Dialer, TLS included), so that Close can cut its connections: kgo waits
// for a JoinGroup or SyncGroup under way before it leaves (the coordinator
// may hold a JoinGroup up to the rebalance timeout), and a request to a
// broker that does not answer ends only with its own timeout; cutting the
// connections ends both at once.
func newConnSet(tlsCfg *tls.Config) *conntrack.Set {
	return conntrack.New(conntrack.Options{TLS: tlsCfg, DialTimeout: dialTimeout, Refused: errCut, CutErr: errCut})
}
