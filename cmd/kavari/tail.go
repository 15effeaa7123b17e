package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/kavari-go/kavari"
)

type tailFlags struct {
	connFlags
	follow    bool
	beginning bool
	offset    int64
	since     string
	last      int64
	partition int
	max       int
	types     string
}

// errEnough stops reading once --max records were printed.
var errEnough = errors.New("enough records")

func runTail(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var f tailFlags
	fs := newFlagSet("tail", "kavari tail TOPIC [flags]\n\n"+
		"Prints records of TOPIC with their headers and pretty-printed value. Without\n"+
		"-f it reads a range and exits (default: the last 10 records of each\n"+
		"partition); with -f it follows new records until interrupted.")
	f.register(fs.FlagSet)
	fs.BoolVar(&f.follow, "f", false, "follow: keep printing new records (default start: the end)")
	fs.BoolVar(&f.beginning, "from-beginning", false, "start at the first record")
	fs.Int64Var(&f.offset, "offset", -1, "start at this offset in each partition")
	fs.StringVar(&f.since, "since", "", "start at the first record at or after this time (RFC 3339, or a duration ago: 15m)")
	fs.Int64Var(&f.last, "last", 0, "start N records before the end of each partition")
	fs.IntVar(&f.partition, "partition", -1, "read only this partition; -1 means all")
	fs.IntVar(&f.max, "max", 0, "stop after printing N records (default no limit)")
	fs.StringVar(&f.types, "type", "", "print only records whose msg_type is one of these (comma-separated)")
	pos, err := fs.parse(args, 1, stdout)
	if err != nil {
		return exitCode(err, stderr)
	}
	return exitCode(tail(ctx, pos[0], &f, stdout, stderr), stderr)
}

func tail(ctx context.Context, topic string, f *tailFlags, stdout, stderr io.Writer) error {
	starts := 0
	for _, set := range []bool{f.beginning, f.offset >= 0, f.since != "", f.last > 0} {
		if set {
			starts++
		}
	}
	if starts > 1 {
		return usagef("tail: choose one of --from-beginning, --offset, --since, --last")
	}
	if f.last < 0 {
		return usagef("tail: --last %d: want a positive count", f.last)
	}
	var since time.Time
	if f.since != "" {
		var err error
		if since, err = parseTime(f.since, time.Now()); err != nil {
			return usagef("tail: --since %v", err)
		}
	}
	if starts == 0 && !f.follow {
		f.last = 10
	}
	c, err := f.connect()
	if err != nil {
		return err
	}
	parts, first, end, err := c.span(ctx, "tail", topic, f.partition)
	if err != nil {
		return err
	}
	var at map[int]int64
	if !since.IsZero() {
		if at, err = c.offsets(ctx, topic, parts, since.UnixMilli()); err != nil {
			return err
		}
	}
	start := make(map[int]int64, len(parts))
	for _, p := range parts {
		s := end[p] // follow: from the end
		switch {
		case f.beginning:
			s = first[p]
		case f.offset >= 0:
			s = f.offset
		case !since.IsZero():
			if at[p] >= 0 {
				s = at[p]
			}
		case f.last > 0:
			s = end[p] - f.last
		}
		start[p] = min(max(s, first[p]), end[p])
	}

	p := &printer{json: f.json(), w: stdout, types: splitList(f.types), max: f.max}
	if !f.follow {
		for _, part := range parts {
			err := c.read(ctx, topic, part, start[part], end[part], p.print)
			if errors.Is(err, errEnough) {
				return nil
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(parts))
	var wg sync.WaitGroup
	for _, part := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := c.read(ctx, topic, part, start[part], -1, p.print)
			if err != nil {
				cancel()
				if !errors.Is(err, errEnough) {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// printer writes records, one at a time, as text or JSON lines.
type printer struct {
	mu    sync.Mutex
	json  bool
	w     io.Writer
	types map[string]bool
	max   int
	n     int
}

func (p *printer) print(r *record) error {
	if p.types != nil {
		t, _ := r.header(kavari.HeaderMsgType)
		if !p.types[t] {
			return nil
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.max > 0 && p.n >= p.max {
		return errEnough
	}
	p.n++
	var err error
	if p.json {
		err = json.NewEncoder(p.w).Encode(jsonRecord(r))
	} else {
		_, err = p.w.Write(textRecord(r))
	}
	if err == nil && p.max > 0 && p.n >= p.max {
		return errEnough
	}
	return err
}

// recordJSON is the -o json form of a record.
type recordJSON struct {
	Topic     string            `json:"topic"`
	Partition int               `json:"partition"`
	Offset    int64             `json:"offset"`
	Time      time.Time         `json:"time"`
	Key       *string           `json:"key"`
	Headers   map[string]string `json:"headers"`
	Value     json.RawMessage   `json:"value"`
}

func jsonRecord(r *record) recordJSON {
	out := recordJSON{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Time: r.Time.UTC(), Headers: map[string]string{}}
	if r.Key != nil {
		k := string(r.Key)
		out.Key = &k
	}
	for _, h := range r.Headers {
		out.Headers[h.Key] = string(h.Value)
	}
	switch {
	case r.Value == nil:
		out.Value = json.RawMessage("null")
	case json.Valid(r.Value):
		var b bytes.Buffer
		if json.Compact(&b, r.Value) == nil {
			out.Value = b.Bytes()
		}
	default:
		s, _ := json.Marshal(string(r.Value))
		out.Value = s
	}
	return out
}

// textRecord formats r for people:
//
//	orders[1]@42  2026-12-01T21:30:00.123Z  key=o-1
//	  msg_type: OrderPlaced
//	  {
//	    "order_id": "o-1"
//	  }
func textRecord(r *record) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s[%d]@%d  %s", r.Topic, r.Partition, r.Offset, r.Time.UTC().Format(time.RFC3339Nano))
	if r.Key != nil {
		fmt.Fprintf(&b, "  key=%s", printable(r.Key))
	}
	b.WriteByte('\n')
	for _, h := range r.Headers {
		fmt.Fprintf(&b, "  %s: %s\n", h.Key, printable(h.Value))
	}
	if line := retryLine(r, time.Now()); line != "" {
		b.WriteString(line)
	}
	switch {
	case r.Value == nil:
		b.WriteString("  (null value)\n")
	case json.Valid(r.Value):
		var v bytes.Buffer
		if json.Indent(&v, r.Value, "  ", "  ") == nil {
			b.WriteString("  ")
			b.Write(v.Bytes())
			b.WriteByte('\n')
		}
	default:
		fmt.Fprintf(&b, "  %s\n", printable(r.Value))
	}
	return b.Bytes()
}

// retryLine sums up the retry-topic headers (Consume.RetryTopics) of r, a
// record in a retry topic or a dead letter that went through one:
//
//	(retry tier 2 of orders: due in 8.1s; failed in orders[0]@17, orders.retry.1[0]@3)
//
// "" when r has none.
func retryLine(r *record, now time.Time) string {
	tier, ok := r.header(kavari.HeaderRetryTier)
	if !ok {
		return ""
	}
	main, _ := r.header(kavari.HeaderOriginalTopic)
	var b strings.Builder
	fmt.Fprintf(&b, "  (retry tier %s of %s", tier, dash(main))
	if v, ok := r.header(kavari.HeaderRetryDue); ok {
		if due, err := time.Parse(time.RFC3339Nano, v); err == nil {
			if d := due.Sub(now).Round(100 * time.Millisecond); d > 0 {
				fmt.Fprintf(&b, ": due in %v", d)
			} else {
				fmt.Fprintf(&b, ": due %v ago", -d)
			}
		}
	}
	if v, ok := r.header(kavari.HeaderRetryHistory); ok && v != "" {
		var places []string
		for _, e := range strings.Split(v, ",") {
			place, _, _ := strings.Cut(e, "@")
			if i := strings.LastIndexByte(place, '/'); i > 0 {
				if j := strings.LastIndexByte(place[:i], '/'); j > 0 {
					place = place[:j] + "[" + place[j+1:i] + "]@" + place[i+1:]
				}
			}
			places = append(places, place)
		}
		fmt.Fprintf(&b, "; failed in %s", strings.Join(places, ", "))
	}
	b.WriteString(")\n")
	return b.String()
}

// printable returns b as text, quoted when it is not printable UTF-8.
func printable(b []byte) string {
	s := string(b)
	if !utf8.ValidString(s) || strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) && r != ' ' }) >= 0 {
		return strconv.Quote(s)
	}
	return s
}
