// Package relaytest gives the outbox's tests (the module outbox/test, which
// holds the database drivers) what package outbox keeps unexported. Package
// outbox sets its variables when it is initialised.
package relaytest

var (
	// SetBeforeMark installs f on r, a *outbox.Relay: f runs after a
	// batch was acknowledged and before its rows are deleted; returning
	// false abandons the batch as a crash would (the rows stay, Run
	// returns ErrCrashed).
	SetBeforeMark func(r any, f func(ids []int64) bool)
	// SetAfterMark installs f on r, a *outbox.Relay: f runs after a
	// batch's mark committed and before the relay counts it (Health).
	SetAfterMark func(r any, f func())
	// SetStartAt installs f on r, a *outbox.Relay: a claim searches for
	// shards from f() on (else from a random shard).
	SetStartAt func(r any, f func() int)
	// ErrCrashed is what Run returns after f abandoned a batch.
	ErrCrashed error
)
