// Package outbox is kavari's transactional outbox: Publish writes a message,
// validated and encoded as kavari.Client.Publish would send it, into an
// outbox table inside the caller's database transaction, and a Relay
// publishes the committed rows afterwards, in commit order per key, at least
// once and with the same ce_id.
package outbox
