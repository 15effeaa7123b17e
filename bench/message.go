package main

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kavari-go/kavari"
)

// benchTopic is the one topic every workload uses. kavari takes a message's
// topic from its struct tag, so instead of a new name per workload the
// coordinator deletes and re-creates this topic before each one.
const benchTopic = "kavari-bench"

// BenchMessage is the message of every workload: the same fields as the
// Python kavari's InteropPayload (id, seq, payload) and the same msg_type,
// so the Python kavari consumes what Go publishes. SentNs and SleepUs are
// set only by the latency and parallel-consumer workloads.
type BenchMessage struct {
	kavari.Message `kavari:"topic=kavari-bench,key=ID,name=InteropMessage"`
	ID             string `json:"id" validate:"required"`
	Seq            int64  `json:"seq"`
	Payload        string `json:"payload"`
	SentNs         int64  `json:"sent_ns,omitempty"`
	SleepUs        int64  `json:"sleep_us,omitempty"`
}

// benchValue is BenchMessage without the marker, for the raw clients.
type benchValue struct {
	ID      string `json:"id"`
	Seq     int64  `json:"seq"`
	Payload string `json:"payload"`
	SentNs  int64  `json:"sent_ns,omitempty"`
	SleepUs int64  `json:"sleep_us,omitempty"`
}

// payloadFor returns the payload string that makes the JSON value of a
// message size bytes long (for six-digit sequence numbers; a few bytes less
// for smaller ones).
func payloadFor(size int) string {
	base, _ := json.Marshal(benchValue{ID: msgID(100_000), Seq: 100_000})
	n := size - len(base)
	if n < 0 {
		n = 0
	}
	return strings.Repeat("x", n)
}

func msgID(seq int) string { return "m-" + strconv.Itoa(seq) }

// Wire format pieces, as kavari writes them (README "Wire format"), so the
// raw clients send records of the same size and shape.
var (
	hMsgType     = []byte("InteropMessage")
	hSpecVersion = []byte("1.0")
	hContentType = []byte("application/json")
	hSource      = func() []byte {
		h, _ := os.Hostname()
		if h == "" {
			h = "kavari"
		}
		return []byte(h)
	}()
)

// kafkaGoRecord builds a record the way a user of raw kafka-go would: JSON
// value and the same headers kavari writes.
func kafkaGoRecord(v *benchValue) kafka.Message {
	value, _ := json.Marshal(v)
	return kafka.Message{
		Key:   []byte(v.ID),
		Value: value,
		Headers: []kafka.Header{
			{Key: kavari.HeaderMsgType, Value: hMsgType},
			{Key: kavari.HeaderSpecVersion, Value: hSpecVersion},
			{Key: kavari.HeaderID, Value: []byte(uuid4())},
			{Key: kavari.HeaderType, Value: hMsgType},
			{Key: kavari.HeaderSource, Value: hSource},
			{Key: kavari.HeaderTime, Value: time.Now().UTC().AppendFormat(nil, time.RFC3339Nano)},
			{Key: kavari.HeaderContentType, Value: hContentType},
		},
	}
}

// franzRecord is kafkaGoRecord for franz-go.
func franzRecord(topic string, v *benchValue) *kgo.Record {
	value, _ := json.Marshal(v)
	return &kgo.Record{
		Topic: topic,
		Key:   []byte(v.ID),
		Value: value,
		Headers: []kgo.RecordHeader{
			{Key: kavari.HeaderMsgType, Value: hMsgType},
			{Key: kavari.HeaderSpecVersion, Value: hSpecVersion},
			{Key: kavari.HeaderID, Value: []byte(uuid4())},
			{Key: kavari.HeaderType, Value: hMsgType},
			{Key: kavari.HeaderSource, Value: hSource},
			{Key: kavari.HeaderTime, Value: time.Now().UTC().AppendFormat(nil, time.RFC3339Nano)},
			{Key: kavari.HeaderContentType, Value: hContentType},
		},
	}
}

// uuid4 returns a random RFC 4122 version 4 UUID string.
func uuid4() string {
	const hex = "0123456789abcdef"
	var b [16]byte
	a, c := rand.Uint64(), rand.Uint64()
	for i := 0; i < 8; i++ {
		b[i], b[8+i] = byte(a>>(8*i)), byte(c>>(8*i))
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	j := 0
	for i, x := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			s[j] = '-'
			j++
		}
		s[j], s[j+1] = hex[x>>4], hex[x&0x0f]
		j += 2
	}
	return string(s[:])
}
