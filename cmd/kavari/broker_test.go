package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/internal/testkit"
	"github.com/segmentio/kafka-go"
)

// The broker tests run against KAVARI_BROKERS (scripts/test.sh starts a real
// Apache Kafka), else the embedded kfake broker; CI=true requires the real
// one. Topics are shared between runs, so every test selects its own
// records by time (--since the test's start) and by a run id in the value.

// cli runs the command against brokers and returns its exit status, stdout
// and stderr.
func cli(t *testing.T, brokers []string, args ...string) (int, string, string) {
	t.Helper()
	code, out, errOut := exec(t, append(args, "--brokers", strings.Join(brokers, ","), "--timeout", "30s")...)
	t.Logf("kavari %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	return code, out, errOut
}

// jsonLines decodes every JSON line of s.
func jsonLines(t *testing.T, s string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("not a JSON line: %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// last returns the last line of lines, the summary of a command.
func last(t *testing.T, lines []map[string]any) map[string]any {
	t.Helper()
	if len(lines) == 0 {
		t.Fatal("no JSON output")
	}
	return lines[len(lines)-1]
}

func num(m map[string]any, k string) int {
	f, _ := m[k].(float64)
	return int(f)
}

func waitFor(t *testing.T, d time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func createTopics(t *testing.T, brokers []string, names ...string) {
	t.Helper()
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 30 * time.Second}
	req := &kafka.CreateTopicsRequest{}
	for _, n := range names {
		req.Topics = append(req.Topics, kafka.TopicConfig{Topic: n, NumPartitions: 2, ReplicationFactor: 1})
	}
	resp, err := c.CreateTopics(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	for n, err := range resp.Errors {
		if err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
			t.Fatalf("create %s: %v", n, err)
		}
	}
	// Wait until the topics have leaders.
	waitFor(t, time.Minute, func() bool {
		md, err := c.Metadata(context.Background(), &kafka.MetadataRequest{Topics: names})
		if err != nil {
			return false
		}
		for _, tp := range md.Topics {
			if tp.Error != nil || len(tp.Partitions) == 0 {
				return false
			}
		}
		return true
	}, "topics have no leaders")
}

// produceRaw writes records as a non-kavari producer would.
func produceRaw(t *testing.T, brokers []string, msgs ...kafka.Message) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
}

type tailMsg struct {
	kavari.Message `kavari:"topic=kavari-cli-tail,key=ID,name=CliTail"`
	Run            string `json:"run"`
	ID             string `json:"id" validate:"required"`
	Amount         int    `json:"amount"`
}

// TestTailGoAndPythonRecords: tail reads what the Go kavari publishes and a
// record written as the Python kavari writes it (only a msg_type header, the
// payload dataclass as flat JSON; written raw here), in a range and
// following, filtered by msg_type.
func TestTailGoAndPythonRecords(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	const topic = "kavari-cli-tail"
	createTopics(t, brokers, topic)
	run := testenv.ID("tail")
	since := time.Now().Add(-time.Millisecond).UTC().Format(time.RFC3339Nano)

	reg := kavari.NewRegistry()
	if err := reg.Declare(&tailMsg{}); err != nil {
		t.Fatal(err)
	}
	k, err := kavari.New(kavari.Config{Brokers: brokers, Transport: testkit.Transport(), Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Stop(context.Background())
	ctx := kavari.WithHeaders(context.Background(), kavari.Header{Key: "traceparent", Value: []byte("00-" + run + "-01")})
	for i := range 2 {
		if _, err := k.Publish(ctx, &tailMsg{Run: run, ID: fmt.Sprintf("go-%d", i), Amount: 10 + i}); err != nil {
			t.Fatal(err)
		}
	}
	produceRaw(t, brokers,
		kafka.Message{Topic: topic, Key: []byte("py-0"), Value: []byte(`{"run": "` + run + `", "id": "py-0", "seq": 0}`),
			Headers: []kafka.Header{{Key: kavari.HeaderMsgType, Value: []byte("InteropMessage")}}},
		kafka.Message{Topic: topic, Value: []byte("not json " + run)},
	)

	mine := func(lines []map[string]any) []map[string]any {
		var out []map[string]any
		for _, l := range lines {
			if v, _ := json.Marshal(l["value"]); strings.Contains(string(v), run) {
				out = append(out, l)
			}
		}
		return out
	}
	code, out, _ := cli(t, brokers, "tail", topic, "--since", since, "-o", "json")
	got := mine(jsonLines(t, out))
	if code != 0 || len(got) != 4 {
		t.Fatalf("tail --since: exit %d, %d records of this run, want 4", code, len(got))
	}
	byID := map[string]map[string]any{}
	for _, l := range got {
		if v, ok := l["value"].(map[string]any); ok {
			byID[v["id"].(string)] = l
		} else {
			byID["raw"] = l
		}
	}
	g := byID["go-1"]
	if h := g["headers"].(map[string]any); h["msg_type"] != "CliTail" || h["ce_id"] == "" || h["traceparent"] != "00-"+run+"-01" || g["key"] != "go-1" {
		t.Errorf("Go record: %v", g)
	}
	if p := byID["py-0"]; p == nil || len(p["headers"].(map[string]any)) != 1 || p["headers"].(map[string]any)["msg_type"] != "InteropMessage" {
		t.Errorf("Python-style record: %v", p)
	}
	if r := byID["raw"]; r == nil || r["value"] != "not json "+run || r["key"] != nil {
		t.Errorf("raw record: %v", r)
	}

	// Filter by type; the human format pretty-prints the value.
	code, out, _ = cli(t, brokers, "tail", topic, "--since", since, "--type", "InteropMessage")
	if code != 0 || !strings.Contains(out, "  msg_type: InteropMessage\n") || !strings.Contains(out, "\"id\": \"py-0\",\n") || strings.Contains(out, "CliTail") {
		t.Errorf("tail --type InteropMessage: exit %d", code)
	}
	// --last 1 on the partition of go-0 prints exactly that partition's last record.
	part := int(byID["go-0"]["partition"].(float64))
	code, out, _ = cli(t, brokers, "tail", topic, "--partition", fmt.Sprint(part), "--last", "1", "-o", "json")
	if lines := jsonLines(t, out); code != 0 || len(lines) != 1 || int(lines[0]["partition"].(float64)) != part {
		t.Errorf("tail --last 1 --partition %d: exit %d, %d lines", part, code, len(lines))
	}
	// Follow: -f from --since stops after --max records.
	code, out, _ = cli(t, brokers, "tail", topic, "-f", "--since", since, "--max", "4", "-o", "json")
	if code != 0 || len(mine(jsonLines(t, out))) != 4 {
		t.Errorf("tail -f --max 4: exit %d, want 4 records of this run", code)
	}
	// A topic that does not exist is a clear failure.
	code, _, errOut := cli(t, brokers, "tail", "kavari-cli-no-such-topic-"+run)
	if code != 1 || !strings.Contains(errOut, "kavari-cli-no-such-topic") || !strings.Contains(errOut, "Unknown Topic") || strings.Contains(errOut, "cannot reach") {
		t.Errorf("tail of a missing topic: exit %d, %q", code, errOut)
	}
}

type cliJob struct {
	kavari.Message `kavari:"topic=kavari-cli-jobs,key=ID,name=CliJob"`
	Run            string `json:"run"`
	ID             string `json:"id" validate:"required"`
}

// delivery is one handler call the round-trip test saw.
type delivery struct {
	ID, CEID, ReplayCount, ReplayedFrom string
	OK                                  bool
}

// TestReplayRoundTrip: a handler fails, every message is dead-lettered; the
// handler is fixed and "dlq replay" republishes them: every message is then
// handled once, with its original ce_id and kavari_replay_count 1. One
// message keeps failing: dead-lettered again, the loop guard refuses its
// next replay. Replaying the same dead letters twice by mistake shows on the
// consumer side: same ce_id, same kavari_replayed_from.
func TestReplayRoundTrip(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	const topic, dlq = "kavari-cli-jobs", "kavari-cli-jobs.dlq"
	run := testenv.ID("replay")
	t0 := time.Now().Add(-time.Millisecond).UTC().Format(time.RFC3339Nano)
	const n = 20
	const stubborn = "j-stubborn"

	var mu sync.Mutex
	fixed := false
	var seen []delivery
	reg := kavari.NewRegistry()
	err := kavari.RegisterFuncOn(reg, &cliJob{}, func(ctx context.Context, m *cliJob) error {
		if m.Run != run {
			return nil // an earlier run's record
		}
		rec, _ := kavari.RecordFromContext(ctx)
		d := delivery{ID: m.ID, CEID: rec.ID}
		for _, h := range rec.Headers {
			switch h.Key {
			case headerReplayCount:
				d.ReplayCount = string(h.Value)
			case headerReplayedFrom:
				d.ReplayedFrom = string(h.Value)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		d.OK = fixed && m.ID != stubborn
		seen = append(seen, d)
		if !d.OK {
			return errors.New("kavari-cli test: handler broken")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	k, err := kavari.New(kavari.Config{
		Brokers:   brokers,
		Transport: testkit.Transport(),
		Registry:  reg,
		Consume: kavari.ConsumeConfig{
			GroupID:        testenv.ID("cli-replay"),
			Retry:          kavari.NoRetry(),
			CommitInterval: 100 * time.Millisecond,
		},
		Topics: kavari.TopicConfig{
			Create: true,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := k.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	}()
	ids := []string{stubborn}
	for i := range n - 1 {
		ids = append(ids, fmt.Sprintf("j-%02d", i))
	}
	for _, id := range ids {
		if _, err := k.Publish(context.Background(), &cliJob{Run: run, ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	snapshot := func() []delivery {
		mu.Lock()
		defer mu.Unlock()
		return append([]delivery(nil), seen...)
	}
	ceID := map[string]string{} // id -> original ce_id
	waitFor(t, 2*time.Minute, func() bool {
		for _, d := range snapshot() {
			ceID[d.ID] = d.CEID
		}
		return len(ceID) == n
	}, "the broken handler did not see every message")

	// Every message is in the dead-letter topic: a dry run lists them all.
	replayable := func(args ...string) map[string]map[string]any {
		_, out, _ := cli(t, brokers, append([]string{"dlq", "replay", dlq, "--dry-run", "-o", "json"}, args...)...)
		got := map[string]map[string]any{}
		for _, l := range jsonLines(t, out) {
			if id, ok := l["ce_id"].(string); ok {
				got[id] = l
			}
		}
		return got
	}
	waitFor(t, 2*time.Minute, func() bool {
		got := replayable("--since", t0)
		for _, id := range ceID {
			if got[id] == nil {
				return false
			}
		}
		return true
	}, "not every message was dead-lettered")
	code, out, _ := cli(t, brokers, "dlq", "ls", dlq, "-o", "json")
	found := false
	for _, g := range jsonLines(t, out) {
		found = found || g["kind"] == "handler" && g["type"] == "CliJob" && num(g, "count") >= n &&
			strings.HasSuffix(g["error"].(string), "in <duration>: kavari-cli test: handler broken") && strings.Contains(g["handler"].(string), "func")
	}
	if code != 0 || !found {
		t.Errorf("dlq ls: exit %d, no group of %d+ handler failures of CliJob", code, n)
	}

	// Fix the handler and replay.
	mu.Lock()
	fixed = true
	mu.Unlock()
	t1 := time.Now().UTC().Format(time.RFC3339Nano)
	code, out, _ = cli(t, brokers, "dlq", "replay", dlq, "--since", t0, "--until", t1, "-o", "json", "--progress")
	sum := last(t, jsonLines(t, out))
	if code != 0 || num(sum, "replayed") != n || num(sum, "refused_loop_guard")+num(sum, "refused_no_origin")+num(sum, "refused_other") != 0 {
		t.Fatalf("replay: exit %d, summary %v; want %d replayed, none refused", code, sum, n)
	}
	waitFor(t, 2*time.Minute, func() bool {
		replayed := map[string]bool{}
		for _, d := range snapshot() {
			if d.ReplayCount == "1" {
				replayed[d.ID] = true
			}
		}
		return len(replayed) == n
	}, "not every replayed message reached the handler")
	okCount := map[string]int{}
	for _, d := range snapshot() {
		if d.CEID != ceID[d.ID] {
			t.Errorf("%s delivered with ce_id %s, published with %s", d.ID, d.CEID, ceID[d.ID])
		}
		if d.OK {
			okCount[d.ID]++
			if d.ReplayCount != "1" || !strings.HasPrefix(d.ReplayedFrom, dlq+"/") {
				t.Errorf("%s handled with replay count %q, replayed from %q", d.ID, d.ReplayCount, d.ReplayedFrom)
			}
		}
	}
	for _, id := range ids[1:] {
		if okCount[id] != 1 {
			t.Errorf("%s handled %d times after the replay, want once", id, okCount[id])
		}
	}

	// The stubborn one is dead-lettered again, with kavari_replay_count 1:
	// the loop guard (--max-replays 1) refuses it.
	waitFor(t, 2*time.Minute, func() bool { return replayable("--since", t1)[ceID[stubborn]] != nil },
		"the stubborn message was not dead-lettered again")
	code, out, errOut := cli(t, brokers, "dlq", "replay", dlq, "--since", t1, "--max-replays", "1")
	if code != 0 || !strings.Contains(out, "replayed 0, refused 1 (loop guard 1,") ||
		!strings.Contains(errOut, "(ce_id "+ceID[stubborn]+"): replayed 1 times already (--max-replays 1)") {
		t.Errorf("loop guard: exit %d", code)
	}

	// Replaying the first dead letters again by mistake: the consumer sees
	// each ce_id a second time with the same kavari_replayed_from.
	before := len(snapshot())
	code, _, _ = cli(t, brokers, "dlq", "replay", dlq, "--since", t0, "--until", t1)
	if code != 0 {
		t.Fatalf("second replay: exit %d", code)
	}
	waitFor(t, 2*time.Minute, func() bool { return len(snapshot()) >= before+n }, "the second replay was not delivered")
	from := map[string][]string{}
	for _, d := range snapshot() {
		if d.ReplayCount == "1" {
			from[d.CEID] = append(from[d.CEID], d.ReplayedFrom)
		}
	}
	for id, ce := range ceID {
		if f := from[ce]; len(f) < 2 || f[0] != f[1] {
			t.Errorf("%s: replays seen from %v; want the same dead letter twice", id, f)
		}
	}
}

// TestReplayForeignRecords: records in a dead-letter topic that kavari did
// not write (no kavari_original_topic) are reported and counted, never
// republished to a guessed topic; a kavari dead letter next to them is.
func TestReplayForeignRecords(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	const topic, dlq = "kavari-cli-foreign", "kavari-cli-foreign.dlq"
	createTopics(t, brokers, topic, dlq)
	run := testenv.ID("foreign")
	since := time.Now().Add(-time.Millisecond).UTC().Format(time.RFC3339Nano)
	produceRaw(t, brokers,
		kafka.Message{Topic: dlq, Key: []byte("a"), Value: []byte("no headers " + run)},
		kafka.Message{Topic: dlq, Key: []byte("b"), Value: []byte(`{"run":"` + run + `"}`),
			Headers: []kafka.Header{{Key: kavari.HeaderMsgType, Value: []byte("Foreign")}, {Key: kavari.HeaderOriginalError, Value: []byte("boom")}}},
		kafka.Message{Topic: dlq, Key: []byte("c"), Value: []byte(`{"run":"` + run + `","id":"c"}`), Headers: []kafka.Header{
			{Key: kavari.HeaderMsgType, Value: []byte("Foreign")},
			{Key: kavari.HeaderID, Value: []byte("ce-" + run)},
			{Key: kavari.HeaderOriginalError, Value: []byte("boom")},
			{Key: kavari.HeaderOriginalTopic, Value: []byte(topic)},
			{Key: kavari.HeaderOriginalPartition, Value: []byte("1")},
			{Key: kavari.HeaderOriginalOffset, Value: []byte("5")},
			{Key: kavari.HeaderErrorKind, Value: []byte("handler")},
		}},
	)

	code, out, _ := cli(t, brokers, "dlq", "ls", dlq, "-o", "json")
	foreign := 0
	for _, g := range jsonLines(t, out) {
		if g["kind"] == notKavari {
			foreign += num(g, "count")
		}
	}
	if code != 0 || foreign < 2 {
		t.Errorf("dlq ls: exit %d, %d records counted as %s, want 2 or more", code, foreign, notKavari)
	}

	code, out, _ = cli(t, brokers, "dlq", "replay", dlq, "--since", since, "-o", "json")
	lines := jsonLines(t, out)
	sum := last(t, lines)
	if code != 0 || num(sum, "replayed") != 1 || num(sum, "refused_no_origin") != 2 {
		t.Fatalf("replay: exit %d, summary %v; want 1 replayed, 2 refused without origin", code, sum)
	}
	refused := 0
	for _, l := range lines[:len(lines)-1] {
		if r, _ := l["refused"].(string); strings.Contains(r, "not a kavari dead letter") && l["topic"] == dlq {
			refused++
		}
	}
	if refused != 2 {
		t.Errorf("%d refusals reported, want 2", refused)
	}
	// Only the kavari dead letter reached the original topic, on its
	// original partition, without the dead-letter headers.
	code, out, _ = cli(t, brokers, "tail", topic, "--since", since, "-o", "json")
	var got []map[string]any
	for _, l := range jsonLines(t, out) {
		if v, _ := json.Marshal(l["value"]); strings.Contains(string(v), run) {
			got = append(got, l)
		}
	}
	if code != 0 || len(got) != 1 {
		t.Fatalf("tail %s: exit %d, %d records of this run, want 1", topic, code, len(got))
	}
	h := got[0]["headers"].(map[string]any)
	if got[0]["key"] != "c" || num(got[0], "partition") != 1 || h[headerReplayCount] != "1" || h[kavari.HeaderID] != "ce-"+run ||
		h[kavari.HeaderOriginalError] != nil || h[kavari.HeaderOriginalTopic] != nil || h[kavari.HeaderErrorKind] != nil {
		t.Errorf("replayed record: %v", got[0])
	}
}

// TestTailPythonPublished: tail reads what the Python kavari 0.2.2.1
// publishes (test/interop/py/publish.py in the venv scripts/pyenv.sh makes;
// skipped without one, except under CI=true).
func TestTailPythonPublished(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	py := pythonVenv(t)
	const topic = "kavari-cli-py"
	createTopics(t, brokers, topic)
	run := testenv.ID("py")
	since := time.Now().Add(-time.Millisecond).UTC().Format(time.RFC3339Nano)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := osexec.CommandContext(ctx, py, filepath.Join("..", "..", "test", "interop", "py", "publish.py"),
		"--brokers", strings.Join(brokers, ","), "--topic", topic, "--count", "3", "--prefix", run, "--acks", "all", "--quiet")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("publish.py: %v\n%s", err, out)
	}
	code, out, _ := cli(t, brokers, "tail", topic, "--since", since, "--type", "InteropMessage", "-o", "json")
	ids := map[string]bool{}
	for _, l := range jsonLines(t, out) {
		v, _ := l["value"].(map[string]any)
		if id, _ := v["id"].(string); strings.HasPrefix(id, run+"-") {
			ids[id] = true
			if h := l["headers"].(map[string]any); h["msg_type"] != "InteropMessage" || l["key"] != id {
				t.Errorf("Python record: %v", l)
			}
		}
	}
	if code != 0 || len(ids) != 3 {
		t.Errorf("tail: exit %d, %d of the 3 Python records", code, len(ids))
	}
}

// pythonVenv returns the interpreter of the Python kavari venv, creating it
// with scripts/pyenv.sh on first use.
func pythonVenv(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out, err := osexec.CommandContext(ctx, "bash", filepath.Join("..", "..", "scripts", "pyenv.sh")).Output()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err != nil || lines[len(lines)-1] == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but the Python kavari venv could not be made: %v", err)
		}
		t.Skipf("no Python kavari venv (scripts/pyenv.sh: %v)", err)
	}
	return lines[len(lines)-1]
}

// TestReplayCheckpoint: with --group, a second replay starts after what the
// first one read, so running the same replay twice does not republish; a
// dry run does not move the checkpoint.
func TestReplayCheckpoint(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	const topic, dlq = "kavari-cli-ckpt", "kavari-cli-ckpt.dlq"
	createTopics(t, brokers, topic, dlq)
	run := testenv.ID("ckpt")
	group := testenv.ID("kavari-cli-replay")
	since := time.Now().Add(-time.Millisecond).UTC().Format(time.RFC3339Nano)
	letter := func(id string) kafka.Message {
		return kafka.Message{Topic: dlq, Key: []byte(id), Value: []byte(`{"run":"` + run + `","id":"` + id + `"}`), Headers: []kafka.Header{
			{Key: kavari.HeaderMsgType, Value: []byte("Ckpt")},
			{Key: kavari.HeaderID, Value: []byte(run + "-" + id)},
			{Key: kavari.HeaderOriginalTopic, Value: []byte(topic)},
			{Key: kavari.HeaderErrorKind, Value: []byte("handler")},
		}}
	}
	produceRaw(t, brokers, letter("a"), letter("b"), letter("c"))
	replayed := func(args ...string) int {
		t.Helper()
		code, out, _ := cli(t, brokers, append([]string{"dlq", "replay", dlq, "--since", since, "--group", group, "-o", "json"}, args...)...)
		if code != 0 {
			t.Fatalf("replay: exit %d", code)
		}
		return num(last(t, jsonLines(t, out)), "replayed")
	}
	if n := replayed("--dry-run"); n != 3 {
		t.Fatalf("dry run: %d, want 3", n)
	}
	if n := replayed(); n != 3 {
		t.Fatalf("first replay: %d, want 3 (the dry run must not move the checkpoint)", n)
	}
	if n := replayed(); n != 0 {
		t.Errorf("same replay again: %d replayed, want 0", n)
	}
	produceRaw(t, brokers, letter("d"))
	if n := replayed(); n != 1 {
		t.Errorf("after one more dead letter: %d replayed, want 1", n)
	}
	// Without the group, the same range is replayed again (detectable by
	// kavari_replay_count and kavari_replayed_from, see TestReplayRoundTrip).
	code, out, _ := cli(t, brokers, "dlq", "replay", dlq, "--since", since, "--dry-run", "-o", "json")
	if n := num(last(t, jsonLines(t, out)), "replayed"); code != 0 || n != 4 {
		t.Errorf("without --group: exit %d, %d would be replayed, want 4", code, n)
	}
}
