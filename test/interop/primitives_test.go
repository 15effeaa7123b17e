package interop

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/internal/testkit"
)

const primitivesTopic = "kavari.interop.primitives"

// The Go side of py/primitives.py's message classes, whose payload is
// annotated str, int, float, bool and bytes: one field each, the text codec.
type StrMessage struct {
	kavari.Message `kavari:"topic=kavari.interop.primitives,name=StrMessage,codec=text"`
	Payload        string
}

type IntMessage struct {
	kavari.Message `kavari:"topic=kavari.interop.primitives,name=IntMessage,codec=text"`
	Payload        int64
}

type FloatMessage struct {
	kavari.Message `kavari:"topic=kavari.interop.primitives,name=FloatMessage,codec=text"`
	Payload        float64
}

type BoolMessage struct {
	kavari.Message `kavari:"topic=kavari.interop.primitives,name=BoolMessage,codec=text"`
	Payload        bool
}

type BytesMessage struct {
	kavari.Message `kavari:"topic=kavari.interop.primitives,name=BytesMessage,codec=text"`
	Payload        []byte
}

// primSpec is one value as py/primitives.py reads it: type str|int|float|bool|bytes
// and its text (bytes in hex).
type primSpec struct {
	Type string `json:"type"`
	Text string `json:"text"`
	Key  string `json:"key,omitempty"`
}

func specJSON(t *testing.T, specs []primSpec) string {
	b, err := json.Marshal(specs)
	require.NoError(t, err)
	return string(b)
}

func unhex(t *testing.T, s any) []byte {
	b, err := hex.DecodeString(s.(string))
	require.NoError(t, err)
	return b
}

func declarePrimitives(t *testing.T, reg *kavari.Registry) {
	for _, m := range []kavari.Msg{&StrMessage{}, &IntMessage{}, &FloatMessage{}, &BoolMessage{}, &BytesMessage{}} {
		require.NoError(t, reg.Declare(m))
	}
}

func ensurePrimitivesTopic(t *testing.T, brokers []string) {
	reg := kavari.NewRegistry()
	declarePrimitives(t, reg)
	k, err := kavari.New(kavari.Config{Brokers: brokers, Transport: testkit.Transport(), Registry: reg, Logger: quiet(), Topics: kavari.TopicConfig{Partitions: 3}})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	defer func() { _ = k.Stop(ctx) }()
	require.NoError(t, k.EnsureTopics(ctx))
}

// TestPythonPrimitivesGoConsumes: messages the Python kavari publishes with
// a str, int, float, bool or bytes payload (its README's first example is a
// str payload) are handled by Go types with one field and the text codec.
// A bytes payload arrives as the text Python writes for it, its repr b'...'
// (a Python kavari defect: its own consumer gets the same characters).
func TestPythonPrimitivesGoConsumes(t *testing.T) {
	brokers := testenv.RequireReal(t)
	python(t)
	ensurePrimitivesTopic(t, brokers)
	prefix := testenv.ID("pyprim")
	specs := []primSpec{
		{Type: "str", Text: "hello zé ☃ " + prefix},
		{Type: "str", Text: ""},
		{Type: "int", Text: "-42"},
		{Type: "int", Text: "1000000000000000000"},
		{Type: "float", Text: "1.5"},
		{Type: "float", Text: "1e16"},
		{Type: "float", Text: "0.00001"},
		{Type: "float", Text: "-0.0"},
		{Type: "float", Text: "nan"},
		{Type: "bool", Text: "True"},
		{Type: "bool", Text: "False"},
		{Type: "bytes", Text: hex.EncodeToString([]byte("ab\x00'"))},
	}
	for i := range specs {
		specs[i].Key = fmt.Sprintf("%s-%d", prefix, i)
	}
	pub := runPy(t, 3*time.Minute, "primitives.py", "publish", "--brokers", strings.Join(brokers, ","), "--topic", primitivesTopic, "--spec", specJSON(t, specs))
	require.Equal(t, 0, pub.Code, "primitives.py publish:\nstdout:\n%s\nstderr:\n%s", pub.Stdout, pub.Stderr)
	written := map[string][]byte{} // key -> the value Python wrote
	for _, d := range pub.withKey("delivered") {
		require.Equal(t, true, d["delivered"], "%v", d)
		written[d["key"].(string)] = unhex(t, d["value_hex"])
	}
	require.Len(t, written, len(specs))
	// What the Python kavari writes, independently of Go: f"{payload}".
	for i, want := range map[int]string{2: "-42", 5: "1e+16", 6: "1e-05", 7: "-0.0", 9: "True", 10: "False", 11: `b"ab\x00'"`} {
		assert.Equal(t, want, string(written[specs[i].Key]), "Python's text for %v", specs[i])
	}

	type got struct {
		typ   string
		value any
		rec   kavari.Record
	}
	var mu sync.Mutex
	seen := map[string]got{}
	keep := func(ctx context.Context, typ string, v any) error {
		rec, _ := kavari.RecordFromContext(ctx)
		if !strings.HasPrefix(string(rec.Key), prefix+"-") {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		seen[string(rec.Key)] = got{typ, v, *rec}
		return nil
	}
	reg := kavari.NewRegistry()
	require.NoError(t, kavari.RegisterFuncOn(reg, &StrMessage{}, func(ctx context.Context, m *StrMessage) error { return keep(ctx, "str", m.Payload) }))
	require.NoError(t, kavari.RegisterFuncOn(reg, &IntMessage{}, func(ctx context.Context, m *IntMessage) error { return keep(ctx, "int", m.Payload) }))
	require.NoError(t, kavari.RegisterFuncOn(reg, &FloatMessage{}, func(ctx context.Context, m *FloatMessage) error { return keep(ctx, "float", m.Payload) }))
	require.NoError(t, kavari.RegisterFuncOn(reg, &BoolMessage{}, func(ctx context.Context, m *BoolMessage) error { return keep(ctx, "bool", m.Payload) }))
	require.NoError(t, kavari.RegisterFuncOn(reg, &BytesMessage{}, func(ctx context.Context, m *BytesMessage) error { return keep(ctx, "bytes", m.Payload) }))
	k, err := kavari.New(kavari.Config{Brokers: brokers, Transport: testkit.Transport(), Registry: reg, Logger: quiet(), Consume: kavari.ConsumeConfig{GroupID: testenv.ID("prim-go"), Retry: kavari.NoRetry()}})
	require.NoError(t, err)
	require.NoError(t, k.Start(context.Background()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = k.Stop(ctx)
	})
	deadline := time.Now().Add(90 * time.Second)
	for {
		mu.Lock()
		c := len(seen)
		mu.Unlock()
		if c == len(specs) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Go handled %d of %d Python primitive messages; health %+v", c, len(specs), k.Health())
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, s := range specs {
		g := seen[s.Key]
		assert.Equal(t, s.Type, g.typ, "%v", s)
		var want any
		switch s.Type {
		case "str":
			want = s.Text
		case "int":
			n, _ := strconv.ParseInt(s.Text, 10, 64)
			want = n
		case "float":
			f, _ := strconv.ParseFloat(s.Text, 64)
			if math.IsNaN(f) {
				assert.True(t, math.IsNaN(g.value.(float64)), "%v: %v", s, g.value)
				continue
			}
			assert.Equal(t, math.Float64bits(f), math.Float64bits(g.value.(float64)), "%v: %v", s, g.value)
			continue
		case "bool":
			want = s.Text == "True"
		case "bytes":
			want = written[s.Key] // Python's repr, as its own consumer would receive it
		}
		assert.Equal(t, want, g.value, "%v", s)
		assert.Equal(t, []kavari.Header{{Key: "msg_type", Value: []byte(strings.ToUpper(s.Type[:1]) + s.Type[1:] + "Message")}}, g.rec.Headers)
	}
}

// TestGoPrimitivesPythonConsumes: Go text-codec messages are on the topic
// byte for byte as the Python kavari writes the same payloads (its own
// to_json), its deserialiser reads each back, and its consumer (with the
// msg_type header defect worked around, see TestGoPublishesPythonConsumes)
// hands each payload to its handler. Python's bool(b"False") is True: a
// Python consumer of a bool payload gets True whatever was sent, from Go or
// from Python.
func TestGoPrimitivesPythonConsumes(t *testing.T) {
	brokers := testenv.RequireReal(t)
	python(t)
	ensurePrimitivesTopic(t, brokers)
	run := testenv.ID("goprim")
	nonce := time.Now().UnixNano() % 1_000_000_000
	msgs := []kavari.Msg{
		&StrMessage{Payload: "hello zé ☃ " + run},
		&StrMessage{Payload: ""},
		&IntMessage{Payload: -nonce},
		&IntMessage{Payload: math.MaxInt64},
		&FloatMessage{Payload: float64(nonce) + 0.5},
		&FloatMessage{Payload: 1e16},
		&FloatMessage{Payload: 1e-5 * float64(nonce)},
		&FloatMessage{Payload: math.Inf(-1)},
		&BoolMessage{Payload: true},
		&BoolMessage{Payload: false},
		&BytesMessage{Payload: []byte("raw " + run + "\x00\xff")},
	}
	// The same values as py/primitives.py reads them.
	specs := make([]primSpec, len(msgs))
	for i, m := range msgs {
		switch m := m.(type) {
		case *StrMessage:
			specs[i] = primSpec{Type: "str", Text: m.Payload}
		case *IntMessage:
			specs[i] = primSpec{Type: "int", Text: strconv.FormatInt(m.Payload, 10)}
		case *FloatMessage:
			specs[i] = primSpec{Type: "float", Text: strconv.FormatFloat(m.Payload, 'g', -1, 64)}
		case *BoolMessage:
			specs[i] = primSpec{Type: "bool", Text: map[bool]string{true: "True", false: "False"}[m.Payload]}
		case *BytesMessage:
			specs[i] = primSpec{Type: "bytes", Text: hex.EncodeToString(m.Payload)}
		}
	}

	reg := kavari.NewRegistry()
	declarePrimitives(t, reg)
	k, err := kavari.New(kavari.Config{Brokers: brokers, Transport: testkit.Transport(), Registry: reg, Logger: quiet(), Publish: kavari.PublishConfig{Partitioner: kavari.CRC32}})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pctx := kavari.WithHeaders(ctx, kavari.Header{Key: "interop_run", Value: []byte(run)})
	for i, m := range msgs {
		_, err := k.Publish(kavari.WithHeaders(pctx, kavari.Header{Key: "interop_seq", Value: []byte(strconv.Itoa(i))}), m)
		require.NoError(t, err)
	}
	require.NoError(t, k.Stop(ctx))

	// The records as written, in publishing order.
	recs := readRun(t, brokers, primitivesTopic, run, len(msgs))

	// Python's own text for the same payloads.
	enc := runPy(t, time.Minute, "primitives.py", "encode", "--spec", specJSON(t, specs))
	require.Equal(t, 0, enc.Code, "primitives.py encode:\n%s\n%s", enc.Stdout, enc.Stderr)
	pyText := enc.withKey("value_hex")
	require.Len(t, pyText, len(msgs))
	type raw struct {
		Type     string `json:"type"`
		ValueHex string `json:"value_hex"`
	}
	var raws []raw
	for i, rec := range recs {
		if b, ok := msgs[i].(*BytesMessage); ok {
			// Python writes a bytes payload as its repr but reads one as
			// bytes(raw): Go writes the raw bytes, which Python reads back
			// as the same bytes (checked below).
			assert.Equal(t, b.Payload, rec.Value)
			assert.Equal(t, pyBytesRepr(b.Payload), string(unhex(t, pyText[i]["value_hex"])), "Python's to_json() of bytes")
		} else {
			assert.Equal(t, string(unhex(t, pyText[i]["value_hex"])), string(rec.Value), "Go's value for %#v is Python's to_json() of %v", msgs[i], specs[i])
		}
		mt, _ := header(rec.Headers, "msg_type")
		assert.Equal(t, strings.ToUpper(specs[i].Type[:1])+specs[i].Type[1:]+"Message", mt)
		raws = append(raws, raw{specs[i].Type, hex.EncodeToString(rec.Value)})
	}

	// kavari's deserialiser (KafkaMessageDeserializer.deserialize) on those bytes.
	rb, err := json.Marshal(raws)
	require.NoError(t, err)
	dec := runPy(t, time.Minute, "primitives.py", "decode", "--raw", string(rb))
	require.Equal(t, 0, dec.Code, "primitives.py decode:\n%s\n%s", dec.Stdout, dec.Stderr)
	reprs := dec.withKey("repr")
	require.Len(t, reprs, len(msgs))
	wantRepr := []string{
		pyStrRepr(msgs[0].(*StrMessage).Payload), "''", strconv.FormatInt(-nonce, 10), "9223372036854775807",
		string(unhex(t, pyText[4]["value_hex"])), "1e+16", string(unhex(t, pyText[6]["value_hex"])), "-inf",
		"True", "True", // bool(b"False") is True: the Python kavari's defect
		pyBytesRepr(msgs[10].(*BytesMessage).Payload),
	}
	for i, r := range reprs {
		assert.Equal(t, specs[i].Type, r["pytype"], "%v", r)
		assert.Equal(t, wantRepr[i], r["repr"], "Python's deserialiser on Go's value for %#v", msgs[i])
	}

	// The Python kavari's consumer loop and handlers (header workaround on).
	var expect []map[string]string
	for i, r := range reprs {
		if i == 9 {
			continue // False arrives as True, see above
		}
		expect = append(expect, map[string]string{"type": specs[i].Type, "repr": r["repr"].(string)})
	}
	eb, err := json.Marshal(expect)
	require.NoError(t, err)
	con := runPy(t, 3*time.Minute, "primitives.py", "consume", "--brokers", strings.Join(brokers, ","), "--topic", primitivesTopic,
		"--group", testenv.ID("prim-py"), "--expect", string(eb), "--timeout", "90", "--workaround-bytes-header")
	require.Equal(t, 0, con.Code, "primitives.py consume:\nstdout:\n%s\nstderr:\n%s", con.Stdout, con.Stderr)
	sum := con.summary("handled")
	require.NotNil(t, sum)
	assert.EqualValues(t, len(expect), sum["handled"])
}

// pyStrRepr is Python's repr of a str without quotes or backslashes in it.
func pyStrRepr(s string) string { return "'" + s + "'" }

// pyBytesRepr is Python's repr of a bytes value that holds no quote
// character (Python then switches to double quotes).
func pyBytesRepr(b []byte) string {
	var sb strings.Builder
	sb.WriteString("b'")
	for _, c := range b {
		switch {
		case c == '\\' || c == '\'':
			sb.WriteByte('\\')
			sb.WriteByte(c)
		case c == '\t':
			sb.WriteString(`\t`)
		case c == '\n':
			sb.WriteString(`\n`)
		case c == '\r':
			sb.WriteString(`\r`)
		case c < 0x20 || c >= 0x7f:
			fmt.Fprintf(&sb, `\x%02x`, c)
		default:
			sb.WriteByte(c)
		}
	}
	sb.WriteString("'")
	return sb.String()
}

// readRun reads topic to its end and returns the records whose interop_run
// header is run, ordered by their interop_seq header.
func readRun(t *testing.T, brokers []string, topic, run string, want int) []kafka.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := kafka.DialContext(ctx, "tcp", brokers[0])
	require.NoError(t, err)
	parts, err := conn.ReadPartitions(topic)
	conn.Close()
	require.NoError(t, err)
	out := make([]kafka.Message, want)
	found := 0
	for _, p := range parts {
		leader, err := kafka.DialLeader(ctx, "tcp", brokers[0], topic, p.ID)
		require.NoError(t, err)
		last, err := leader.ReadLastOffset()
		leader.Close()
		require.NoError(t, err)
		if last == 0 {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p.ID, MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 500 * time.Millisecond})
		require.NoError(t, r.SetOffset(kafka.FirstOffset))
		for {
			m, err := r.ReadMessage(ctx)
			require.NoError(t, err, "reading partition %d", p.ID)
			if v, _ := header(m.Headers, "interop_run"); v == run {
				s, _ := header(m.Headers, "interop_seq")
				i, err := strconv.Atoi(s)
				require.NoError(t, err)
				require.Less(t, i, want)
				out[i] = m
				found++
			}
			if m.Offset >= last-1 {
				break
			}
		}
		r.Close()
	}
	require.Equal(t, want, found, "records of run %s on %s", run, topic)
	for i, m := range out {
		require.NotNil(t, m.Headers, "record %d of run %s missing", i, run)
	}
	return out
}
