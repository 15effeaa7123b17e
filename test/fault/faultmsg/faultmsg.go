// Package faultmsg declares the messages of the fault suite (test/fault). The
// tests publish them and the faultapp consumer process handles them, so both
// sides share one declaration.
//
// Topics are fixed by the kavari tag, one set per scenario; every message
// carries the Run that published it, and consumers ignore (and commit) the
// records of other runs, so repeated runs against one cluster do not mix.
package faultmsg

import "github.com/kavari-go/kavari"

// Body is the payload of every fault-suite message.
type Body struct {
	Run string `json:"run" validate:"required"`
	ID  string `json:"id" validate:"required"`
	Key string `json:"key" validate:"required"`
	Seq int    `json:"seq" validate:"gte=0"` // position of the message among those with its key
	// SleepMs, when positive, replaces the consumer's handler sleep for
	// this message.
	SleepMs int    `json:"sleep_ms,omitempty"`
	Pad     string `json:"pad,omitempty"`
}

// Crash is consumed by a process that gets SIGKILLed (consumer crash test).
type Crash struct {
	kavari.Message `kavari:"topic=kavari-fault-crash,key=Key"`
	Body
}

// BatchCrash is consumed by a batch handler in a process that gets
// SIGKILLed during a batch (batch consumer crash test).
type BatchCrash struct {
	kavari.Message `kavari:"topic=kavari-fault-batch-crash,key=Key"`
	Body
}

// Stop is consumed by a process stopped gracefully mid-processing.
type Stop struct {
	kavari.Message `kavari:"topic=kavari-fault-stop,key=Key"`
	Body
}

// Storm0 and Storm1 are the two topics of the rebalance storm.
type Storm0 struct {
	kavari.Message `kavari:"topic=kavari-fault-storm-0,key=Key"`
	Body
}

// Storm1 is the storm's second topic.
type Storm1 struct {
	kavari.Message `kavari:"topic=kavari-fault-storm-1,key=Key"`
	Body
}

// Static is consumed by static group members (InstanceID) that are
// restarted.
type Static struct {
	kavari.Message `kavari:"topic=kavari-fault-static,key=Key"`
	Body
}

// Head is consumed by a process whose first record is slow while the ones
// after it complete, then gets SIGKILLed (commit metadata test).
type Head struct {
	kavari.Message `kavari:"topic=kavari-fault-head,key=Key"`
	Body
}

// Restart is published and consumed in-process around a broker restart.
type Restart struct {
	kavari.Message `kavari:"topic=kavari-fault-restart,key=Key"`
	Body
}

// Failover is published and consumed in-process while a 3-node cluster loses
// a partition leader.
type Failover struct {
	kavari.Message `kavari:"topic=kavari-fault-failover,key=Key"`
	Body
}

// Down is consumed in-process by a Client stopped while its broker is down.
type Down struct {
	kavari.Message `kavari:"topic=kavari-fault-down,key=Key"`
	Body
}

// Storm returns a new message of storm topic i (0 or 1).
func Storm(i int, b Body) kavari.Msg {
	if i%2 == 0 {
		return &Storm0{Body: b}
	}
	return &Storm1{Body: b}
}

// StormTopics lists the storm's topics.
var StormTopics = []string{"kavari-fault-storm-0", "kavari-fault-storm-1"}

// Poison is the subscribed type of the poison-record test; raw records of
// every malformed kind are written next to valid ones on its topic.
type Poison struct {
	kavari.Message `kavari:"topic=kavari-fault-poison,key=Key"`
	Body
	Amount int64  `json:"amount" validate:"gt=0"`
	Note   string `json:"note" validate:"max=1000"`
}

// Async is published with PublishAsync and consumed in-process (per-key
// order of asynchronous publishing).
type Async struct {
	kavari.Message `kavari:"topic=kavari-fault-async,key=Key"`
	Body
}

// RetryCrash is consumed with retry topics (Consume.RetryTopics) by a
// process that gets SIGKILLed while records wait in the tiers.
type RetryCrash struct {
	kavari.Message `kavari:"topic=kavari-fault-retry-crash,key=Key"`
	Body
}

// RetryFailures is how many attempts of a RetryCrash message fail: those
// of seq%10 == 0 fail their 2 in-place attempts (handled in tier 1), those
// of seq%10 == 1 also tier 1's (handled in tier 2); the others none.
func RetryFailures(seq int) int {
	switch seq % 10 {
	case 0:
		return 2
	case 1:
		return 3
	}
	return 0
}

// EOIn is consumed by a handler that publishes one EOOut per message, in
// exactly-once or at-least-once mode (exactly-once crash test).
type EOIn struct {
	kavari.Message `kavari:"topic=kavari-fault-eo-in,key=Key"`
	Body
}

// EOOut is what the EOIn handler publishes: its output.
type EOOut struct {
	kavari.Message `kavari:"topic=kavari-fault-eo-out,key=Key"`
	Body
}
