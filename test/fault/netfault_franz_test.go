package fault

import (
	"testing"

	"github.com/kavari-go/kavari"
)

// TestNetFaultFranzConsumerProtocol is TestNetFault's faults inside the
// session on franz-go with the KIP-848 group protocol (ConsumerProtocol),
// where kgo retries a failed heartbeat itself and reports a lost partition
// only when the broker fenced or forgot the member. The session timeout is
// the broker's (45 s by default), so the cut beyond it is not run.
func TestNetFaultFranzConsumerProtocol(t *testing.T) {
	inPassOf(t, "franz-go")
	parallelOwnCluster(t)
	c := ownProxiedCluster(t, 1)
	for _, tc := range netFaultCases() {
		if !tc.withinSession {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			led := netFault(t, c, tc, func(cfg *kavari.Config) {
				cfg.Transport = kavari.FranzGo
				cfg.Consume.GroupProtocol = kavari.ConsumerProtocol
				cfg.Consume.SessionTimeout, cfg.Consume.HeartbeatInterval = 0, 0 // the broker's
			})
			led.SetTransport("franz-go")
			led.Note("KIP-848 group protocol (ConsumerProtocol); session timeout and heartbeat interval are the broker's")
		})
	}
}
