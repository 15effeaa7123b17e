// Package testlink lets package kavaritest run a kavari client on the
// in-memory transport and watch its engine, without package kavari exporting
// any of that: kavari fills these variables in its init, kavaritest calls
// them. Values of kavari's types travel as any (this package cannot import
// kavari, which imports it).
package testlink

import (
	"context"

	"github.com/kavari-go/kavari/internal/transport"
)

var (
	// NewClient is kavari.New on transport tr (cfg is a kavari.Config, the
	// result a *kavari.Client). finished, when not nil, is called once for
	// each record the consumer finished: handled, dead-lettered or skipped,
	// right after the record was marked complete.
	NewClient func(cfg any, tr transport.Adapter, finished func(rec *transport.Record)) (any, error)

	// ObserveBatches makes client (a *kavari.Client made by NewClient)
	// call attempt for each record of every attempt of a batch handler
	// (kavari.BatchHandler), before the handler runs.
	ObserveBatches func(client any, attempt func(rec *transport.Record))

	// Capabilities returns the capabilities of the transport cfg (a
	// kavari.Config) selects, or why it selects none: what kavari.New
	// checks cfg against.
	Capabilities func(cfg any) (transport.Capabilities, error)

	// Topics returns the topics EnsureTopics creates for client (a
	// *kavari.Client): the registered types' real topics, each followed by
	// its dead-letter topic, and their partition count
	// (Config.Topics.Partitions).
	Topics func(client any) (topics []string, partitions int, err error)

	// Encode returns the record client (a *kavari.Client) would publish for
	// msg, without validating msg: what another producer could have
	// written.
	Encode func(client any, ctx context.Context, msg any) (transport.Record, error)

	// Decode decodes value into msg (a pointer to a message struct) with
	// the codec client (a *kavari.Client, or nil for the tags' codecs) uses
	// for msg's type, and returns the logical type name msg is published
	// under (the msg_type header).
	Decode func(client any, value []byte, msg any) (name string, err error)
)
