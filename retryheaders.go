package kavari

// Headers of a record in a retry topic (Consume.RetryTopics). A retried
// record keeps its key, value and headers, and carries besides the dead
// letter's HeaderOriginalTopic, HeaderOriginalPartition and
// HeaderOriginalOffset (where it was first consumed: the main topic, also
// in later tiers), HeaderAttempts (handler attempts so far, all tiers) and
// HeaderOriginalError (the last error). Its dead letter after the last tier
// keeps these headers: original_* then name the main topic's record.
const (
	// HeaderRetryTier is the tier the record is in: 1 for the first.
	HeaderRetryTier = "kavari_retry_tier"
	// HeaderRetryDue is when the record is due, RFC 3339 UTC with
	// milliseconds: the consumer holds the tier partition until then.
	HeaderRetryDue = "kavari_retry_due"
	// HeaderRetryHandlers names, comma-separated, the handlers that failed
	// it: only they run again (the others already handled it).
	HeaderRetryHandlers = "kavari_retry_handlers"
	// HeaderRetryHistory lists where the record failed, oldest first,
	// comma-separated, each "topic/partition/offset@time" (time RFC 3339
	// UTC with milliseconds): the main topic's record, then each tier's.
	HeaderRetryHistory = "kavari_retry_history"
)
