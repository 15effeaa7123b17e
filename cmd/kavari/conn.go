package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// connFlags are the flags every broker command shares.
type connFlags struct {
	brokers     string
	timeout     time.Duration
	output      string
	tls         bool
	tlsCA       string
	tlsCert     string
	tlsKey      string
	tlsInsecure bool
	saslMech    string
	saslUser    string
	saslPass    string
}

func (c *connFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.brokers, "brokers", "", "bootstrap brokers, host:port,... (default $KAVARI_BROKERS)")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "limit for each broker operation")
	fs.StringVar(&c.output, "o", "table", "output format: table or json")
	fs.BoolVar(&c.tls, "tls", false, "connect with TLS (implied by the other --tls-* flags)")
	fs.StringVar(&c.tlsCA, "tls-ca", "", "PEM file of the CA certificates to trust (default the system pool)")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "PEM file of the client certificate")
	fs.StringVar(&c.tlsKey, "tls-key", "", "PEM file of the client key")
	fs.BoolVar(&c.tlsInsecure, "tls-insecure", false, "do not verify the broker's certificate")
	fs.StringVar(&c.saslMech, "sasl-mechanism", "", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
	fs.StringVar(&c.saslUser, "sasl-user", "", "SASL user name")
	fs.StringVar(&c.saslPass, "sasl-password", "", "SASL password (default $KAVARI_SASL_PASSWORD)")
}

// json reports whether -o json was chosen.
func (c *connFlags) json() bool { return c.output == "json" }

// conn is what the commands use to talk to the cluster.
type conn struct {
	addrs   []string
	timeout time.Duration
	sasl    bool // SASL is configured
	client  *kafka.Client
}

// connect validates the flags and returns a conn. It does not dial: the
// first request does, bounded by --timeout.
func (c *connFlags) connect() (*conn, error) {
	if c.output != "table" && c.output != "json" {
		return nil, usagef("-o %q: want table or json", c.output)
	}
	if c.timeout <= 0 {
		return nil, usagef("--timeout %v: want a positive duration", c.timeout)
	}
	list := c.brokers
	if list == "" {
		list = os.Getenv("KAVARI_BROKERS")
	}
	var addrs []string
	for _, a := range strings.Split(list, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return nil, usagef("no brokers: pass --brokers host:port or set KAVARI_BROKERS")
	}
	tr := &kafka.Transport{ClientID: "kavari-cli", DialTimeout: c.timeout, MetadataTTL: 5 * time.Second}
	var err error
	if tr.TLS, err = c.tlsConfig(); err != nil {
		return nil, err
	}
	if tr.SASL, err = c.mechanism(); err != nil {
		return nil, err
	}
	return &conn{
		addrs:   addrs,
		timeout: c.timeout,
		sasl:    tr.SASL != nil,
		client:  &kafka.Client{Addr: kafka.TCP(addrs...), Timeout: c.timeout, Transport: tr},
	}, nil
}

func (c *connFlags) tlsConfig() (*tls.Config, error) {
	if !c.tls && c.tlsCA == "" && c.tlsCert == "" && c.tlsKey == "" && !c.tlsInsecure {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.tlsInsecure} //nolint:gosec // on request
	if c.tlsCA != "" {
		pem, err := os.ReadFile(c.tlsCA)
		if err != nil {
			return nil, usagef("--tls-ca: %v", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, usagef("--tls-ca %s: no PEM certificate in it", c.tlsCA)
		}
	}
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return nil, usagef("--tls-cert and --tls-key go together")
	}
	if c.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(c.tlsCert, c.tlsKey)
		if err != nil {
			return nil, usagef("--tls-cert/--tls-key: %v", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

func (c *connFlags) mechanism() (sasl.Mechanism, error) {
	if c.saslMech == "" {
		if c.saslUser != "" || c.saslPass != "" {
			return nil, usagef("--sasl-user/--sasl-password need --sasl-mechanism")
		}
		return nil, nil
	}
	pass := c.saslPass
	if pass == "" {
		pass = os.Getenv("KAVARI_SASL_PASSWORD")
	}
	if c.saslUser == "" {
		return nil, usagef("--sasl-mechanism %s needs --sasl-user", c.saslMech)
	}
	switch strings.ToUpper(c.saslMech) {
	case "PLAIN":
		return plain.Mechanism{Username: c.saslUser, Password: pass}, nil
	case "SCRAM-SHA-256":
		return scram.Mechanism(scram.SHA256, c.saslUser, pass)
	case "SCRAM-SHA-512":
		return scram.Mechanism(scram.SHA512, c.saslUser, pass)
	}
	return nil, usagef("--sasl-mechanism %q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", c.saslMech)
}

// op bounds one broker operation by --timeout and turns a timeout into an
// error that says which brokers did not answer.
func (c *conn) op(ctx context.Context, what string, f func(ctx context.Context) error) error {
	octx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	err := f(octx)
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var ke kafka.Error
	if errors.As(err, &ke) {
		return fmt.Errorf("kavari: %s: %w", what, err) // the broker answered
	}
	var ne net.Error
	isNet := errors.As(err, &ne)
	if errors.Is(err, context.DeadlineExceeded) || octx.Err() != nil || isNet && ne.Timeout() {
		return fmt.Errorf("kavari: %s: no answer from brokers %s within %v (--timeout): %w", what, strings.Join(c.addrs, ","), c.timeout, err)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		hint := "does it need --tls or --sasl-mechanism?"
		if c.sasl {
			hint = "check the SASL mechanism, user and password"
		}
		return fmt.Errorf("kavari: %s: the broker closed the connection (%s): %w", what, hint, err)
	}
	if isNet {
		return fmt.Errorf("kavari: %s: cannot reach brokers %s: %w", what, strings.Join(c.addrs, ","), err)
	}
	return fmt.Errorf("kavari: %s: %w", what, err)
}

// partitions returns the partition ids of topic, sorted; an unknown topic is
// an error.
func (c *conn) partitions(ctx context.Context, topic string) ([]int, error) {
	var ids []int
	err := c.op(ctx, "metadata of "+topic, func(ctx context.Context) error {
		md, err := c.client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
		if err != nil {
			return err
		}
		if len(md.Topics) != 1 {
			return fmt.Errorf("topic %s not in the metadata response", topic)
		}
		t := md.Topics[0]
		if t.Error != nil {
			return fmt.Errorf("topic %s: %w", topic, t.Error)
		}
		for _, p := range t.Partitions {
			ids = append(ids, p.ID)
		}
		return nil
	})
	sort.Ints(ids)
	return ids, err
}

// offsets returns, per partition, the offset Kafka answers for the given
// ListOffsets timestamp: kafka.FirstOffset, kafka.LastOffset (the high
// watermark) or a time in milliseconds (the first offset at or after it, or
// -1 when there is none).
func (c *conn) offsets(ctx context.Context, topic string, parts []int, at int64) (map[int]int64, error) {
	reqs := make([]kafka.OffsetRequest, len(parts))
	for i, p := range parts {
		reqs[i] = kafka.OffsetRequest{Partition: p, Timestamp: at}
	}
	out := make(map[int]int64, len(parts))
	err := c.op(ctx, "offsets of "+topic, func(ctx context.Context) error {
		resp, err := c.client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
		if err != nil {
			return err
		}
		for _, po := range resp.Topics[topic] {
			if po.Error != nil {
				return fmt.Errorf("partition %d: %w", po.Partition, po.Error)
			}
			switch at {
			case kafka.FirstOffset:
				out[po.Partition] = po.FirstOffset
			case kafka.LastOffset:
				out[po.Partition] = po.LastOffset
			default:
				out[po.Partition] = -1
				for off := range po.Offsets {
					out[po.Partition] = off
				}
			}
		}
		return nil
	})
	return out, err
}

// record is one Kafka record as the commands see it.
type record struct {
	Topic     string
	Partition int
	Offset    int64
	Time      time.Time
	Key       []byte
	Value     []byte
	Headers   []kafka.Header
}

// header returns the value of the last header named key.
func (r *record) header(key string) (string, bool) {
	for i := len(r.Headers) - 1; i >= 0; i-- {
		if r.Headers[i].Key == key {
			return string(r.Headers[i].Value), true
		}
	}
	return "", false
}

// read calls fn with the records of topic/partition from offset start, in
// order, up to (not including) offset end; end < 0 follows the partition
// until ctx is done. An error of fn stops the read and is returned.
func (c *conn) read(ctx context.Context, topic string, partition int, start, end int64, fn func(*record) error) error {
	off := start
	empty := 0
	for end < 0 || off < end {
		var recs []*record
		var hwm int64
		err := c.op(ctx, fmt.Sprintf("fetch %s[%d]@%d", topic, partition, off), func(ctx context.Context) error {
			resp, err := c.client.Fetch(ctx, &kafka.FetchRequest{
				Topic: topic, Partition: partition, Offset: off,
				MinBytes: 1, MaxBytes: 4 << 20, MaxWait: 500 * time.Millisecond,
			})
			if err != nil {
				return err
			}
			if resp.Error != nil {
				return resp.Error
			}
			hwm = resp.HighWatermark
			if resp.Records == nil {
				return nil
			}
			for {
				r, err := resp.Records.ReadRecord()
				if errors.Is(err, io.EOF) {
					return nil
				}
				if err != nil {
					return err
				}
				if r.Offset < off {
					continue // batches may start before the requested offset
				}
				rec := &record{Topic: topic, Partition: partition, Offset: r.Offset, Time: r.Time, Headers: r.Headers}
				if rec.Key, err = readBytes(r.Key); err != nil {
					return err
				}
				if rec.Value, err = readBytes(r.Value); err != nil {
					return err
				}
				recs = append(recs, rec)
			}
		})
		if err != nil {
			if ctx.Err() != nil {
				return nil // interrupted or done: not a failure
			}
			return err
		}
		for _, r := range recs {
			if end >= 0 && r.Offset >= end {
				return nil
			}
			if err := fn(r); err != nil {
				return err
			}
			off = r.Offset + 1
		}
		if len(recs) == 0 && end >= 0 {
			// Nothing below end: the rest of the range holds only
			// transaction markers or was deleted.
			if off >= hwm {
				return nil
			}
			if empty++; empty >= 3 {
				return nil
			}
		} else {
			empty = 0
		}
	}
	return nil
}

func readBytes(b kafka.Bytes) ([]byte, error) {
	if b == nil {
		return nil, nil
	}
	defer b.Close()
	out := make([]byte, b.Len())
	_, err := io.ReadFull(b, out)
	return out, err
}

// parseTime accepts RFC 3339 ("2026-12-01T10:00:00Z") or a duration before
// now ("15m", "2h").
func parseTime(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			d = -d
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q: want RFC 3339 (2026-12-01T10:00:00Z) or a duration ago (15m)", s)
	}
	return t, nil
}

// splitList splits a comma-separated flag value into its non-empty items.
func splitList(s string) map[string]bool {
	if s == "" {
		return nil
	}
	out := map[string]bool{}
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out[v] = true
		}
	}
	return out
}

// span returns topic's partitions (only partition when it is not negative,
// which must exist) with the first and end offset of each, for the command
// named cmd.
func (c *conn) span(ctx context.Context, cmd, topic string, partition int) (parts []int, first, end map[int]int64, err error) {
	parts, err = c.partitions(ctx, topic)
	if err != nil {
		return nil, nil, nil, err
	}
	if partition >= 0 {
		if !slices.Contains(parts, partition) {
			return nil, nil, nil, fmt.Errorf("kavari: %s: %s has no partition %d", cmd, topic, partition)
		}
		parts = []int{partition}
	}
	if first, err = c.offsets(ctx, topic, parts, kafka.FirstOffset); err != nil {
		return nil, nil, nil, err
	}
	if end, err = c.offsets(ctx, topic, parts, kafka.LastOffset); err != nil {
		return nil, nil, nil, err
	}
	return parts, first, end, nil
}
