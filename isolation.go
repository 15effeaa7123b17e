package kavari

import "fmt"

// Isolation says which records of Kafka transactions a consumer reads
// (Config.Consume.Isolation).
type Isolation int

const (
	// ReadUncommitted hands every record to the handlers, also those of
	// transactions still open or aborted (Kafka's read_uncommitted, the
	// default of its clients). The default.
	ReadUncommitted Isolation = iota
	// ReadCommitted hands over only records of committed transactions (and
	// non-transactional ones): a partition is read up to its last stable
	// offset, so an open transaction holds back the records after it, and
	// the records of an aborted transaction are never handed to a handler
	// (Kafka's read_committed). FranzGo only: New rejects it on KafkaGo,
	// whose reader does not filter out aborted transactions.
	ReadCommitted
)

func (i Isolation) String() string {
	switch i {
	case ReadUncommitted:
		return "ReadUncommitted"
	case ReadCommitted:
		return "ReadCommitted"
	}
	return fmt.Sprintf("Isolation(%d)", int(i))
}
