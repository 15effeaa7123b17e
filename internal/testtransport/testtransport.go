// Package testtransport applies testenv.Transport (KAVARI_TRANSPORT) to the
// kavari Configs broker tests build. It is apart from testenv because
// testenv is imported by the transport adapters' tests, which kavari imports.
package testtransport

import (
	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
)

// Get returns the kavari.Transport testenv.Transport names.
func Get() kavari.Transport {
	if testenv.Transport() == "franz-go" {
		return kavari.FranzGo
	}
	return kavari.KafkaGo
}

// Use sets cfg.Transport to Get().
func Use(cfg *kavari.Config) { cfg.Transport = Get() }
