package transport

import "context"

// Transactional is the side of a Consumer that produces and commits
// offsets in Kafka transactions (exactly-once consume → process →
// publish). A consumer built with Config.TransactionalID implements it
// (Capabilities.Transactions); its Commit then fails: offsets are committed
// only inside a transaction, by End.
//
// The caller runs one transaction at a time: Begin, Produce (concurrently,
// as often as it likes), then End once nothing is producing any more. A
// rebalance that revokes or loses partitions while a transaction is open
// makes End abort it.
type Transactional interface {
	// Begin opens a transaction.
	Begin() error
	// Produce writes recs inside the open transaction and returns when each
	// is acknowledged or failed, like Producer.Produce. The records become
	// visible to read_committed consumers only when End commits.
	Produce(ctx context.Context, recs []*Record) []error
	// Send writes recs inside the open transaction without waiting for
	// them: done runs once per record (i, its index in recs) when it is
	// acknowledged (err nil, with where it was stored) or failed, on a
	// goroutine of the client's; it must not block. Send does not modify
	// recs. The caller waits for every done before End.
	Send(ctx context.Context, recs []*Record, done func(i int, partition int32, offset int64, err error))
	// End ends the open transaction. With commit true it commits offsets
	// (fenced to gen: a member that is not gen's any more is refused, and
	// so is a transactional id another member took over) together with
	// every record Produce wrote since Begin, and reports committed true;
	// when the commit cannot happen (a rebalance revoked or lost partitions
	// since Begin, the offsets were refused, a record failed) it aborts
	// instead and reports why. With commit false it aborts.
	//
	// After an abort every partition the member owns is rewound to its
	// committed offset: before delivering any record again the consumer
	// calls Lost with them and then Assigned (same generation, committed
	// offsets), so the handler drops what it held and gets those records
	// again.
	End(ctx context.Context, gen Generation, offsets []Offset, commit bool) (committed bool, err error)
}
