package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kavari-go/kavari"
	"github.com/segmentio/kafka-go"
)

// notKavari is the kind shown for records of a dead-letter topic that
// kavari did not write (no kavari_original_topic header).
const notKavari = "(not kavari)"

// maxErrorLine bounds the error text a group is keyed and shown by.
const maxErrorLine = 300

// durations matches Go durations ("4µs", "1.5s", "1m30s") in error texts:
// kavari's retry errors say how long they took, which would otherwise split
// one cause into as many groups as there are timings.
var durations = regexp.MustCompile(`\b\d+(\.\d+)?(ns|µs|us|ms|s|m|h)(\d+(\.\d+)?(ns|µs|us|ms|s|m|h))*\b`)

// positions matches the "topic/partition@offset" of a record in kavari's
// poison-record errors.
var positions = regexp.MustCompile(`/\d+@\d+\b`)

// dlqKey is what dead letters are grouped by.
type dlqKey struct {
	OriginalTopic string `json:"original_topic"`
	Kind          string `json:"kind"`
	Handler       string `json:"handler"`
	Type          string `json:"type"`
	Error         string `json:"error"`
	// RetryTier is the last retry tier (Consume.RetryTopics) a dead letter
	// went through before it was dead-lettered; "" when none.
	RetryTier string `json:"retry_tier,omitempty"`
}

// dlqGroup is one line of "dlq ls".
type dlqGroup struct {
	dlqKey
	Count  int       `json:"count"`
	Oldest time.Time `json:"oldest"`
	Newest time.Time `json:"newest"`
	// Replayed counts records of the group that were replayed before
	// (kavari_replay_count > 0): they failed again after a replay.
	Replayed int `json:"replayed"`
}

// keyOf returns the group of a dead letter: its first error line has
// durations and record positions replaced by placeholders.
func keyOf(r *record) dlqKey {
	var k dlqKey
	var ok bool
	if k.OriginalTopic, ok = r.header(kavari.HeaderOriginalTopic); !ok {
		k.Kind = notKavari
	} else {
		k.Kind, _ = r.header(kavari.HeaderErrorKind)
	}
	k.Handler, _ = r.header(kavari.HeaderHandler)
	k.Type, _ = r.header(kavari.HeaderMsgType)
	k.RetryTier, _ = r.header(kavari.HeaderRetryTier)
	k.Error, _ = r.header(kavari.HeaderOriginalError)
	k.Error = durations.ReplaceAllString(k.Error, "<duration>")
	k.Error = positions.ReplaceAllString(k.Error, "/<partition>@<offset>")
	k.Error = firstLine(k.Error, maxErrorLine)
	return k
}

// firstLine returns the first line of s, cut to n runes.
func firstLine(s string, n int) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if r := []rune(s); len(r) > n {
		s = string(r[:n-1]) + "…"
	}
	return s
}

// dlqStats groups dead letters.
type dlqStats struct {
	groups map[dlqKey]*dlqGroup
	total  int
}

func (s *dlqStats) add(r *record) {
	k := keyOf(r)
	g := s.groups[k]
	if g == nil {
		if s.groups == nil {
			s.groups = map[dlqKey]*dlqGroup{}
		}
		g = &dlqGroup{dlqKey: k, Oldest: r.Time, Newest: r.Time}
		s.groups[k] = g
	}
	g.Count++
	s.total++
	if r.Time.Before(g.Oldest) {
		g.Oldest = r.Time
	}
	if r.Time.After(g.Newest) {
		g.Newest = r.Time
	}
	if n, _ := replayCount(r.Headers); n > 0 {
		g.Replayed++
	}
}

// sorted returns the groups, largest first.
func (s *dlqStats) sorted() []*dlqGroup {
	out := make([]*dlqGroup, 0, len(s.groups))
	for _, g := range s.groups {
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return out[i].Oldest.Before(out[j].Oldest)
	})
	return out
}

func runDLQList(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var f connFlags
	fs := newFlagSet("dlq ls", "kavari dlq ls TOPIC.dlq [flags]\n\n"+
		"Reads the whole dead-letter topic and counts its records grouped by original\n"+
		"topic, error kind, handler, message type and first line of the error, with\n"+
		"the oldest and newest record of each group. Records without kavari's\n"+
		"dead-letter headers are counted as "+notKavari+".")
	f.register(fs.FlagSet)
	pos, err := fs.parse(args, 1, stdout)
	if err != nil {
		return exitCode(err, stderr)
	}
	return exitCode(dlqList(ctx, pos[0], &f, stdout), stderr)
}

func dlqList(ctx context.Context, topic string, f *connFlags, stdout io.Writer) error {
	c, err := f.connect()
	if err != nil {
		return err
	}
	parts, err := c.partitions(ctx, topic)
	if err != nil {
		return err
	}
	first, err := c.offsets(ctx, topic, parts, kafka.FirstOffset)
	if err != nil {
		return err
	}
	end, err := c.offsets(ctx, topic, parts, kafka.LastOffset)
	if err != nil {
		return err
	}
	var s dlqStats
	for _, p := range parts {
		if err := c.read(ctx, topic, p, first[p], end[p], func(r *record) error { s.add(r); return nil }); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	groups := s.sorted()
	if f.json() {
		enc := json.NewEncoder(stdout)
		for _, g := range groups {
			if err := enc.Encode(g); err != nil {
				return err
			}
		}
		return enc.Encode(map[string]any{"topic": topic, "total": s.total, "groups": len(groups)})
	}
	return writeGroups(stdout, topic, s.total, groups)
}

func writeGroups(w io.Writer, topic string, total int, groups []*dlqGroup) error {
	if total == 0 {
		_, err := fmt.Fprintf(w, "%s: no dead letters\n", topic)
		return err
	}
	// A TIER column (the last retry tier, Consume.RetryTopics) only when
	// some dead letter went through retry topics.
	tiers := false
	for _, g := range groups {
		tiers = tiers || g.RetryTier != ""
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if tiers {
		fmt.Fprintln(tw, "COUNT\tTOPIC\tKIND\tTIER\tHANDLER\tTYPE\tOLDEST\tNEWEST\tREPLAYED\tERROR")
	} else {
		fmt.Fprintln(tw, "COUNT\tTOPIC\tKIND\tHANDLER\tTYPE\tOLDEST\tNEWEST\tREPLAYED\tERROR")
	}
	for _, g := range groups {
		kind := dash(g.Kind)
		if tiers {
			kind += "\t" + dash(g.RetryTier)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", g.Count, dash(g.OriginalTopic), kind,
			dash(g.Handler), dash(g.Type), g.Oldest.UTC().Format(time.RFC3339), g.Newest.UTC().Format(time.RFC3339),
			g.Replayed, dash(g.Error))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%d dead letters in %d groups\n", total, len(groups))
	return err
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
