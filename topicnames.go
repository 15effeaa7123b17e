package kavari

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// topicNames is Config.Topics.Name for one client: each tag topic's real
// name is computed once, on first use, and cached, so publishing looks it up
// without calling the function or allocating. A nil *topicNames, or one
// without a function, maps every topic to itself.
type topicNames struct {
	fn     func(topic string) string
	suffix string                               // Config.Topics.DeadLetterSuffix
	tier   string                               // the last retry tier's topic suffix (Consume.RetryTopics); "" without
	mu     sync.Mutex                           // serialises misses
	m      atomic.Pointer[map[string]topicName] // tag topic -> result; copied on write
}

// topicName is the cached result for one tag topic.
type topicName struct {
	real string
	err  *topicNameError
}

// topicNameError says that Config.Topics.Name gave a tag topic an unusable
// name.
type topicNameError struct {
	tag, real, reason string
}

func (e *topicNameError) Error() string {
	return fmt.Sprintf("kavari: Config.%s", e.detail())
}

func (e *topicNameError) detail() string {
	return fmt.Sprintf("Topics.Name(%q) = %q: %s", e.tag, e.real, e.reason)
}

func newTopicNames(fn func(string) string, suffix string) *topicNames {
	return &topicNames{fn: fn, suffix: suffix}
}

// of returns the real topic of tag topic t, or a *topicNameError when the
// mapping gave an empty or invalid name.
func (n *topicNames) of(t string) (string, error) {
	if n == nil || n.fn == nil {
		return t, nil
	}
	if m := n.m.Load(); m != nil {
		if r, ok := (*m)[t]; ok {
			if r.err != nil {
				return "", r.err
			}
			return r.real, nil
		}
	}
	return n.miss(t)
}

func (n *topicNames) miss(t string) (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	old := n.m.Load()
	if old == nil {
		old = &map[string]topicName{}
	}
	r, ok := (*old)[t]
	if !ok {
		r = topicName{real: n.fn(t)}
		switch {
		case r.real == "":
			r.err = &topicNameError{tag: t, reason: "an empty topic name"}
		case checkTopicName(r.real) != nil:
			r.err = &topicNameError{tag: t, real: r.real, reason: checkTopicName(r.real).Error()}
		case checkTopicName(r.real+n.suffix) != nil:
			r.err = &topicNameError{tag: t, real: r.real, reason: fmt.Sprintf("its dead-letter topic %q: %v", r.real+n.suffix, checkTopicName(r.real+n.suffix))}
		case n.tier != "" && checkTopicName(r.real+n.tier) != nil:
			r.err = &topicNameError{tag: t, real: r.real, reason: fmt.Sprintf("its retry topic %q: %v", r.real+n.tier, checkTopicName(r.real+n.tier))}
		}
		m := make(map[string]topicName, len(*old)+1)
		for k, v := range *old {
			m[k] = v
		}
		m[t] = r
		n.m.Store(&m)
	}
	if r.err != nil {
		return "", r.err
	}
	return r.real, nil
}

// checkConfig maps topics (those of the types registered at New) and
// reports every unusable result as an invalid Config.
func (n *topicNames) checkConfig(topics []string) error {
	var errs []error
	for _, t := range topics {
		if _, err := n.of(t); err != nil {
			errs = append(errs, errors.New(err.(*topicNameError).detail()))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("kavari: invalid Config: %w", errors.Join(errs...))
	}
	return nil
}

// route returns table keyed by real topics, as the consumer sees its
// records, with real set to the mapping. Two types with the same logical
// name that the mapping puts on one topic could not be told apart: that is
// ErrDuplicate.
func (n *topicNames) route(table *routeTable) (*routeTable, error) {
	out := &routeTable{byTopic: table.byTopic, topics: table.topics, real: make(map[string]string, len(table.topics))}
	if n == nil || n.fn == nil {
		for _, t := range table.topics {
			out.real[t] = t
		}
		return out, nil
	}
	out.byTopic, out.topics = map[string]map[string]*route{}, nil
	var errs []error
	for _, tag := range table.topics {
		real, err := n.of(tag)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out.real[tag] = real
		m := out.byTopic[real]
		if m == nil {
			m = map[string]*route{}
			out.byTopic[real] = m
			out.topics = append(out.topics, real)
		}
		names := make([]string, 0, len(table.byTopic[tag]))
		for name := range table.byTopic[tag] {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			rt := table.byTopic[tag][name]
			if other := m[name]; other != nil {
				errs = append(errs, fmt.Errorf("%w: %s and %s both use name %q on topic %q (Config.Topics.Name maps %q and %q onto it)",
					ErrDuplicate, other.info.typ, rt.info.typ, name, real, other.info.topic, tag))
				continue
			}
			m[name] = rt
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	sort.Strings(out.topics)
	return out, nil
}

// describe lists a mapping as "tag→real, ..." for the log.
func describeTopicNames(real map[string]string) string {
	tags := make([]string, 0, len(real))
	for t := range real {
		tags = append(tags, t)
	}
	sort.Strings(tags)
	var b strings.Builder
	for i, t := range tags {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(t + "→" + real[t])
	}
	return b.String()
}

// withNames makes e publish to the real topics n gives the tags' topics.
func (e *encoder) withNames(n *topicNames) *encoder {
	e.names = n
	return e
}
