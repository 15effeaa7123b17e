package kavari

import (
	"errors"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/kavari-go/kavari/internal/transport"
)

// HeaderDroppedHeaders names, comma-separated, the original headers left out
// of a dead letter so that it fits; "*" when all of them were.
const HeaderDroppedHeaders = "kavari_dropped_headers"

// MaxErrorText bounds the original_error header of a dead letter, in bytes.
// A longer error text (a validation error listing thousands of fields) keeps
// its start and ends with a marker saying how many bytes were clipped.
const MaxErrorText = 4 << 10

// Bounds of the smaller dead-letter forms and of log lines.
const (
	dlLargeHeader   = 1 << 10 // an original header this big (name and value) goes in dlNoLargeHeaders
	dlSmallestError = 256     // original_error in dlSmallest
	logErrorText    = 1 << 10 // error text in a log line
)

// dlForm is how much of the original record a dead letter carries. When the
// broker refuses a dead letter as too large, the next form is tried; the
// record is never resent unchanged.
type dlForm int

const (
	dlFull           dlForm = iota // key, value and headers as received
	dlNoValue                      // the value left out (kavari_truncated: its size)
	dlNoLargeHeaders               // and original headers over dlLargeHeader bytes (kavari_dropped_headers)
	dlSmallest                     // and every original header; original_error clipped to dlSmallestError
)

// deadLetter builds the dead-letter record for rec in its full form: same
// key, value and headers, plus headers saying what went wrong.
func deadLetter(rec *transport.Record, topic string, kind ErrorKind, handler string, attempts int, cause error) transport.Record {
	return deadLetterForm(rec, topic, kind, handler, attempts, cause, dlFull)
}

// deadLetterForm builds rec's dead letter in form f. Headers kavari adds
// replace any of the same name already on the record (a dead letter of a dead
// letter); kavari_handler, kavari_truncated and kavari_dropped_headers of an
// earlier failure are dropped. What kavari adds is bounded: original_error is
// clipped to MaxErrorText bytes, the list of dropped headers likewise.
func deadLetterForm(rec *transport.Record, topic string, kind ErrorKind, handler string, attempts int, cause error, f dlForm) transport.Record {
	limit := MaxErrorText
	if f >= dlSmallest {
		limit = dlSmallestError
	}
	add := []transport.Header{
		{Key: HeaderOriginalError, Value: []byte(clipText(cause.Error(), limit))},
		{Key: HeaderOriginalTopic, Value: []byte(rec.Topic)},
		{Key: HeaderOriginalPartition, Value: strconv.AppendInt(nil, int64(rec.Partition), 10)},
		{Key: HeaderOriginalOffset, Value: strconv.AppendInt(nil, rec.Offset, 10)},
		{Key: HeaderAttempts, Value: strconv.AppendInt(nil, int64(attempts), 10)},
		{Key: HeaderErrorKind, Value: []byte(kind)},
	}
	if handler != "" {
		add = append(add, transport.Header{Key: HeaderHandler, Value: []byte(handler)})
	}
	value := rec.Value
	if f >= dlNoValue && len(rec.Value) > 0 {
		value = nil
		add = append(add, transport.Header{Key: HeaderTruncated, Value: strconv.AppendInt(nil, int64(len(rec.Value)), 10)})
	}
	hs := make([]transport.Header, 0, len(rec.Headers)+len(add)+1)
	var dropped []string
outer:
	for _, h := range rec.Headers {
		switch h.Key {
		case HeaderHandler, HeaderTruncated, HeaderDroppedHeaders:
			continue // from an earlier dead letter; they describe that failure only
		}
		for _, a := range add {
			if a.Key == h.Key {
				continue outer
			}
		}
		if f >= dlSmallest || (f >= dlNoLargeHeaders && len(h.Key)+len(h.Value) > dlLargeHeader) {
			dropped = append(dropped, h.Key)
			continue
		}
		hs = append(hs, h)
	}
	hs = append(hs, add...)
	if len(dropped) > 0 {
		list := "*"
		if f < dlSmallest {
			list = clipText(strings.Join(dropped, ","), dlLargeHeader)
		}
		hs = append(hs, transport.Header{Key: HeaderDroppedHeaders, Value: []byte(list)})
	}
	return transport.Record{Topic: topic, Key: rec.Key, Value: value, Headers: hs}
}

// recordSize is about what rec weighs against a broker's size limit.
func recordSize(rec *transport.Record) int {
	n := len(rec.Key) + len(rec.Value) + 70 // the batch and record framing
	for _, h := range rec.Headers {
		n += len(h.Key) + len(h.Value) + 4
	}
	return n
}

// tooLarge reports whether a write failed because of the record's size.
func tooLarge(err error) bool {
	return errors.Is(err, ErrTooLarge) || transport.KindOf(err) == transport.TooLarge
}

// clipText returns s when it has at most limit bytes, else its start (cut on
// a rune boundary) and a marker saying how much was left out, limit bytes in
// all.
func clipText(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	// The marker is at most len(" … [kavari: ") + 20 digits + len(" bytes clipped]").
	keep := max(limit-48, 0)
	for keep > 0 && !utf8.RuneStart(s[keep]) {
		keep--
	}
	return s[:keep] + " … [kavari: " + strconv.Itoa(len(s)-keep) + " bytes clipped]"
}

// logErr is err's text for a log line, clipped to logErrorText bytes.
func logErr(err error) string {
	if err == nil {
		return ""
	}
	return clipText(err.Error(), logErrorText)
}
