package kavari

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/kavari-go/kavari/validate"
)

// Sentinel errors. Callers branch on them with errors.Is.
var (
	// ErrNilMessage is returned for a nil message or a nil pointer.
	ErrNilMessage = errors.New("kavari: nil message")
	// ErrNotMessage is returned for a value whose type does not embed
	// kavari.Message (or is not a pointer to a struct).
	ErrNotMessage = errors.New("kavari: not a kavari message")
	// ErrEmptyKey is returned when a message declares a key but its value is empty.
	ErrEmptyKey = errors.New("kavari: empty partition key")
	// ErrTooLarge is returned when an encoded message is over Config.Publish.MaxMessageBytes
	// or the broker's limit. Nothing is sent.
	ErrTooLarge = errors.New("kavari: message too large")
	// ErrClosed is returned by calls made after Stop.
	ErrClosed = errors.New("kavari: closed")
	// ErrDuplicate is returned when the same handler is registered twice for a type,
	// or two types claim one logical name on one topic.
	ErrDuplicate = errors.New("kavari: duplicate registration")
	// ErrFrozen is returned by registrations made after the consumer started.
	ErrFrozen = errors.New("kavari: registry is read-only once the consumer has started")
	// ErrUnknownType is matched by decode errors for records whose msg_type is
	// missing or not registered on their topic.
	ErrUnknownType = errors.New("kavari: unknown message type")
	// ErrInvalid is matched by every validation failure; errors.As with
	// *validate.Error exposes the failing fields.
	ErrInvalid = validate.ErrInvalid
	// ErrQueueFull is returned by TryPublishAsync when the message's async
	// queue has no room. Nothing was queued and the callback is not called.
	ErrQueueFull = errors.New("kavari: PublishAsync queue is full")
	// ErrUnknownTopic is matched by a publish error for a topic the brokers
	// do not know (and do not auto-create): create it with EnsureTopics or
	// Config.Topics.Create.
	ErrUnknownTopic = errors.New("kavari: unknown topic")
)

// Misuse errors: a program that gets one has a bug to fix, not a condition
// to branch on, so they are not exported (as database/sql exports ErrNoRows
// and not its misuse errors).
var (
	// errNoGroupID is returned by Start when Config.Consume.GroupID is empty.
	errNoGroupID = errors.New("kavari: Config.Consume.GroupID is required to consume")
	// errNoHandlers is returned by Start when no handler is registered:
	// there is nothing to consume.
	errNoHandlers = errors.New("kavari: no handlers registered: nothing to consume")
	// errStarted is returned by a second call to Start.
	errStarted = errors.New("kavari: Start called twice")
)

// TagError reports a malformed `kavari:"..."` tag or message declaration.
// It is found at registration or at the first publish of the type, never later.
type TagError struct {
	Type   string // Go type name
	Tag    string // the tag as written
	Reason string
}

func (e *TagError) Error() string {
	return fmt.Sprintf("kavari: %s: bad tag `kavari:%q`: %s", e.Type, e.Tag, e.Reason)
}

// ErrorKind says why a record was dead-lettered. Its value is written in the
// kavari_error_kind header.
type ErrorKind string

// The kinds of dead letter.
const (
	KindDecode      ErrorKind = "decode"       // the registered type's codec cannot decode the value
	KindValidation  ErrorKind = "validation"   // decoded but failed the type's validate rules
	KindUnknownType ErrorKind = "unknown_type" // no msg_type header, or a type not registered on the topic
	KindHandler     ErrorKind = "handler"      // a handler kept failing (error, panic or timeout)
)

// DecodeError is a record that could not be turned into a registered message.
// It says where the record is and what kind of failure it was.
type DecodeError struct {
	Kind      ErrorKind
	Topic     string
	Partition int
	Offset    int64
	MsgType   string // the msg_type header, "" when absent
	Err       error
}

func (e *DecodeError) Error() string {
	where := e.Topic + "/" + strconv.Itoa(e.Partition) + "@" + strconv.FormatInt(e.Offset, 10)
	if e.MsgType != "" {
		return fmt.Sprintf("kavari: %s record %s (msg_type %q): %v", e.Kind, where, e.MsgType, e.Err)
	}
	return fmt.Sprintf("kavari: %s record %s: %v", e.Kind, where, e.Err)
}

func (e *DecodeError) Unwrap() error { return e.Err }

// PublishError is one message that was not published.
type PublishError struct {
	Index int    // position in the PublishBatch call (0 for Publish)
	Topic string // destination topic
	Key   string // partition key
	ID    string // the ce_id the message was sent with
	// MayHaveBeenWritten is true when the outcome is unknown: some attempt
	// failed after its request may have reached the broker (the context
	// ended while a write was in flight, the connection broke or timed out
	// mid-request, the broker's own request timed out), even when later
	// attempts failed otherwise. The broker may hold the message; a retry
	// with the same ID lets idempotent consumers drop the duplicate. False
	// means no attempt can have stored it.
	MayHaveBeenWritten bool
	Err                error
}

func (e *PublishError) Error() string {
	if e.Topic == "" { // never encoded: invalid, or refused before sending
		return fmt.Sprintf("kavari: message %d not published: %v", e.Index, e.Err)
	}
	s := fmt.Sprintf("kavari: publish to %s (key %q, id %s): %v", e.Topic, e.Key, e.ID, e.Err)
	if e.MayHaveBeenWritten {
		s += " (the message may have been written)"
	}
	return s
}

func (e *PublishError) Unwrap() error { return e.Err }

// BatchError is PublishBatch's error: every message that was not published,
// by index. errors.Is and errors.As see through it to each *PublishError.
type BatchError struct {
	// Failed lists the messages not published, in index order.
	Failed []*PublishError
	// Refused is true when the batch was refused whole because a message
	// was invalid (or could not be encoded): nothing was sent, and the
	// valid messages are in Failed too, with an error saying so.
	Refused bool
}

func (e *BatchError) Error() string {
	var b strings.Builder
	if e.Refused {
		fmt.Fprintf(&b, "kavari: batch refused, nothing sent: %d of its messages listed", len(e.Failed))
	} else {
		fmt.Fprintf(&b, "kavari: %d message(s) of the batch not published", len(e.Failed))
	}
	for _, pe := range e.Failed {
		b.WriteString("\n")
		b.WriteString(pe.Error())
	}
	return b.String()
}

// Unwrap returns the *PublishError of each failed message.
func (e *BatchError) Unwrap() []error {
	errs := make([]error, len(e.Failed))
	for i, pe := range e.Failed {
		errs[i] = pe
	}
	return errs
}

// PanicError is a handler panic, recovered and reported as an error.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("kavari: handler panicked: %v", e.Value) }

// Unwrap returns Value when the handler panicked with an error, so that
// errors.Is and errors.As see it; otherwise nil.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

// Permanent wraps err so that kavari does not retry the handler: the record
// goes straight to the dead-letter topic.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// BatchFailed is what a batch handler (BatchHandler) returns when the
// record at index of its batch failed with err: the records before index
// are handled, the record at index is retried alone with the consumer
// retry policy (BatchFailed(index, Permanent(err)) skips that) and then
// dead-lettered, and the records after index come again in a later batch.
// When several BatchFailed errors are joined (errors.Join), the lowest
// index counts; the later records come again anyway. An index outside the
// batch makes the error a failure of the whole batch, as any other error.
func BatchFailed(index int, err error) error {
	return &BatchFailure{Index: index, Err: err}
}

// BatchFailure is the error BatchFailed returns: record Index of the batch
// failed with Err.
type BatchFailure struct {
	Index int
	Err   error
}

func (e *BatchFailure) Error() string {
	return fmt.Sprintf("kavari: record %d of the batch failed: %v", e.Index, e.Err)
}

func (e *BatchFailure) Unwrap() error { return e.Err }

// HandlerError is a handler failure after its retries, as passed to the dead
// letter and to the log.
type HandlerError struct {
	Handler  string // handler type, e.g. "*main.OrderPlacedHandler"
	Attempts int
	Err      error
}

func (e *HandlerError) Error() string {
	return fmt.Sprintf("kavari: handler %s failed after %d attempt(s): %v", e.Handler, e.Attempts, e.Err)
}

func (e *HandlerError) Unwrap() error { return e.Err }

// Lifecycle errors: what Start refused and what Stop left undone.
var (
	// ErrCommitFailed is matched by the error of a Stop whose final offset
	// commit failed, or whose partitions were lost (the member's session
	// ended) before their completed records were committed: work that
	// completed was not committed and will be redelivered. errors.As with
	// *CommitError names the offsets.
	ErrCommitFailed = errors.New("kavari: offset commit failed")
	// ErrHandlersAbandoned is matched by the error of a Stop that left
	// handlers running because they ignored the cancellation of their
	// context; their records are redelivered.
	ErrHandlersAbandoned = errors.New("kavari: handlers ignored cancellation and were left running")
	// ErrMissingTopics is matched by the error of a Start that found topics
	// missing (dead-letter topics when Config.Topics.Create and
	// Config.Publish.AllowAutoCreate are off); errors.As with *MissingTopicsError
	// names them.
	ErrMissingTopics = errors.New("kavari: topics missing")
)

// CommitError is an offset commit the broker did not accept. The records it
// covered completed, but the partitions' next owner will handle them again.
// It matches ErrCommitFailed.
type CommitError struct {
	Offsets map[string]map[int]int64 // topic -> partition -> the offset that was to be committed
	// MayHaveBeenApplied is true when the outcome is unknown: the request
	// may have reached the broker (no answer by Stop's deadline, a
	// connection broken or cut mid-request), which may apply it. Then the
	// records it covers are redelivered only if it was not applied. False:
	// the broker refused it, or it was never sent; they are redelivered.
	MayHaveBeenApplied bool
	Err                error
}

func (e *CommitError) Error() string {
	var parts []string
	for t, ps := range e.Offsets {
		for p, o := range ps {
			parts = append(parts, fmt.Sprintf("%s/%d@%d", t, p, o))
		}
	}
	sort.Strings(parts)
	if e.MayHaveBeenApplied {
		return fmt.Sprintf("kavari: commit of %s not confirmed (the broker may still apply it; if not, its records are redelivered): %v", strings.Join(parts, ", "), e.Err)
	}
	return fmt.Sprintf("kavari: commit of %s failed (the records are redelivered): %v", strings.Join(parts, ", "), e.Err)
}

func (e *CommitError) Unwrap() error { return e.Err }

// Is makes a CommitError match ErrCommitFailed.
func (e *CommitError) Is(target error) bool { return target == ErrCommitFailed }

// MissingTopicsError names the topics Start needs and did not find. Create
// them (EnsureTopics does), or set Config.Topics.Create. It matches
// ErrMissingTopics.
type MissingTopicsError struct {
	Topics []string
}

func (e *MissingTopicsError) Error() string {
	return fmt.Sprintf("kavari: topics do not exist: %s (create them, call EnsureTopics or set Config.Topics.Create)", strings.Join(e.Topics, ", "))
}

// Is makes a MissingTopicsError match ErrMissingTopics.
func (e *MissingTopicsError) Is(target error) bool { return target == ErrMissingTopics }

// HandlerResolveError names the handler types that Start could not build
// through the Provider (or that need a Provider and none is set).
type HandlerResolveError struct {
	HandlerTypes []string
	Err          error // the failures, joined, one per handler type
}

func (e *HandlerResolveError) Error() string {
	return fmt.Sprintf("kavari: cannot build handlers %s: %v", strings.Join(e.HandlerTypes, ", "), e.Err)
}

func (e *HandlerResolveError) Unwrap() error { return e.Err }
