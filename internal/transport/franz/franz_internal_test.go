package franz

import (
	"testing"

	"github.com/kavari-go/kavari/internal/transport"
)

func TestSASLMechanisms(t *testing.T) {
	for mech, name := range map[string]string{"PLAIN": "PLAIN", "scram-sha-256": "SCRAM-SHA-256", "SCRAM-SHA-512": "SCRAM-SHA-512"} {
		m, err := saslMechanism(transport.SASL{Mechanism: mech, Username: "u", Password: "p"})
		if err != nil || m.Name() != name {
			t.Errorf("saslMechanism(%q) = %v, %v; want %s", mech, m, err, name)
		}
	}
	if _, err := clientOpts(transport.Config{Brokers: []string{"b:9092"}, SASL: &transport.SASL{Mechanism: "GSSAPI"}}); err == nil {
		t.Error("an unsupported SASL mechanism was accepted")
	}
	if _, err := clientOpts(transport.Config{}); err == nil {
		t.Error("a config without brokers was accepted")
	}
}
