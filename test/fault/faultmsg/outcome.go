package faultmsg

import "github.com/kavari-go/kavari"

// BigDeadLetter is consumed in-process while some of its records make dead
// letters too large for their topic (oversized dead-letter test).
type BigDeadLetter struct {
	kavari.Message `kavari:"topic=kavari-fault-bigdlq,key=Key"`
	Body
	Items []Item `json:"items" validate:"dive"`
}

// Item is one element of BigDeadLetter; a record with thousands of invalid
// ones fails validation on each.
type Item struct {
	N int `json:"n" validate:"gt=0"`
}

// HotKey is consumed in-process while one key's handler hangs (stuck-key
// test).
type HotKey struct {
	kavari.Message `kavari:"topic=kavari-fault-hotkey,key=Key"`
	Body
}

// HotKeys is consumed in-process while a few keys' handlers hang, on a
// topic with many partitions (stuck keys on many partitions).
type HotKeys struct {
	kavari.Message `kavari:"topic=kavari-fault-hotkeys,key=Key"`
	Body
}

// Owners is consumed by three successive owners of one partition, each
// leaving records unfinished (commit metadata carried across owners).
type Owners struct {
	kavari.Message `kavari:"topic=kavari-fault-owners,key=Key"`
	Body
}
