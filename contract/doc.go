// Package contract makes a kavari service's message contract visible: a
// JSON Schema per message type, an AsyncAPI 3.0 document of a registry, and
// a breaking-change check between two documents.
//
// It is its own module, so users of the core library do not inherit the
// schema libraries.
//
// TODO(package doc): filled in below.
package contract
