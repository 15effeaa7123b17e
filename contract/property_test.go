package contract_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/contract"
	"github.com/kavari-go/kavari/kavaritest"
	"github.com/kavari-go/kavari/validate"
)

// TestContractAgreesWithEncoder generates random values of every example
// and test message type. The values the validator accepts are published
// with kavari to an embedded broker, read back raw, and validated against
// the type's exported schema: none may fail. The values the validator
// rejects for a rule with a JSON Schema equivalent must fail the schema.
func TestContractAgreesWithEncoder(t *testing.T) {
	const perType = 1000
	msgs := []kavari.Msg{&OrderPlaced{}, &PaymentReceived{}, &httpOrderPlaced{}, &diPaymentReceived{}, &ctOrder{}, &ctTree{}}
	mapped := map[string]bool{}
	for _, r := range contract.MappedRules() {
		mapped[r] = true
	}

	schemas := map[string]*jsonschema.Schema{} // topic -> schema
	var topics []string
	for _, m := range msgs {
		ti := messageType(t, m)
		topics = append(topics, ti.Topic)
		s := contract.TypeSchema(ti.GoType)
		schemas[ti.Topic] = compile(t, mustJSON(t, s), "mem://"+ti.Topic)
	}

	rng := rand.New(rand.NewPCG(12, uint64(time.Now().UnixNano())))
	var valid []kavari.Msg
	stats := map[string][3]int{} // type -> valid, invalid checked, invalid skipped (unmapped rule)
	for _, m := range msgs {
		gt := reflect.TypeOf(m).Elem()
		topic := messageType(t, m).Topic
		st := stats[gt.Name()]
		for range perType {
			v := reflect.New(gt)
			g := &valueGen{rng: rng}
			g.fill(v.Elem(), "", 0)
			err := validate.Struct(v.Interface())
			if err == nil {
				valid = append(valid, v.Interface().(kavari.Msg))
				st[0]++
				continue
			}
			var verr *validate.Error
			require.True(t, errors.As(err, &verr), "%v", err)
			if !allMapped(verr, mapped) {
				st[2]++
				continue
			}
			st[1]++
			b, jerr := json.Marshal(v.Interface()) // kavari refuses to publish it: encoding/json is its codec
			require.NoError(t, jerr)
			require.Error(t, schemas[topic].Validate(instance(t, b)),
				"the validator rejects %s (%v) but its schema accepts it:\n%s", gt.Name(), err, b)
		}
		stats[gt.Name()] = st
	}

	// Encode the valid ones with kavari and read the records back.
	b := kavaritest.NewBroker(t, kavaritest.Topics(topics...))
	k, err := kavari.New(kavari.Config{Brokers: b.Addrs(), Registry: kavari.NewRegistry()})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i := 0; i < len(valid); i += 200 {
		_, err := k.PublishBatch(ctx, valid[i:min(i+200, len(valid))]...)
		require.NoError(t, err)
	}
	require.NoError(t, k.Stop(ctx))

	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addrs()...), kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	defer cl.Close()
	read, failures := 0, 0
	for read < len(valid) {
		fs := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "read %d of %d records", read, len(valid))
		for _, e := range fs.Errors() {
			t.Fatalf("fetch %s: %v", e.Topic, e.Err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			read++
			if err := schemas[r.Topic].Validate(instance(t, r.Value)); err != nil {
				failures++
				t.Errorf("record on %s fails its schema: %v\n%s", r.Topic, err, r.Value)
			}
		})
	}
	rejected := 0
	for name, st := range stats {
		rejected += st[1]
		t.Logf("%-18s valid %4d (published and checked)  invalid %4d (schema rejects)  invalid %4d (unmapped rule, not checked)", name, st[0], st[1], st[2])
		require.Positive(t, st[0], "no valid %s generated", name)
	}
	require.Positive(t, rejected, "no invalid value generated")
	t.Logf("%d values generated, %d encoded by kavari and validated, %d schema failures", len(msgs)*perType, read, failures)
}

func messageType(t *testing.T, m kavari.Msg) kavari.MessageType {
	r := kavari.NewRegistry()
	require.NoError(t, r.Declare(m))
	return r.Types()[0]
}

// allMapped reports whether every failing rule has a JSON Schema equivalent.
func allMapped(e *validate.Error, mapped map[string]bool) bool {
	for _, f := range e.Fields {
		if !mapped[f.Rule] || f.Rule == "required" && f.Value != nil && reflect.TypeOf(f.Value).Kind() == reflect.Struct {
			return false
		}
	}
	return true
}

// valueGen fills values at random, biased by each field's validate tag so
// that many are valid, with some junk so that many are not.
type valueGen struct{ rng *rand.Rand }

var junk = []string{"", "x", "not an email", "ADMIN admin", "1abc", "ünï", "a b", "http//bad", "999.1.1.1",
	"0123456789012345678901234567890123456789012345678901234567890123456789"}

func (g *valueGen) fill(v reflect.Value, tag string, depth int) {
	own, elem := tag, ""
	if i := strings.Index(tag, "dive"); i >= 0 {
		own, elem = tag[:i], strings.TrimPrefix(tag[i+4:], ",")
	}
	rules := map[string]string{}
	for _, r := range strings.Split(own, ",") {
		n, p, _ := strings.Cut(r, "=")
		rules[n] = p
	}
	biased := g.rng.IntN(100) < 97
	if v.Type() == reflect.TypeFor[time.Time]() {
		v.Set(reflect.ValueOf(time.Unix(g.rng.Int64N(4e9), g.rng.Int64N(1e9)).UTC()))
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if g.rng.IntN(4) == 0 || depth > 3 {
			return
		}
		v.Set(reflect.New(v.Type().Elem()))
		g.fill(v.Elem(), tag, depth+1)
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if f := v.Type().Field(i); f.IsExported() || f.Anonymous {
				g.fill(v.Field(i), f.Tag.Get("validate"), depth+1)
			}
		}
	case reflect.String:
		v.SetString(g.str(rules, biased))
	case reflect.Bool:
		v.SetBool(g.rng.IntN(2) == 0)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n := g.num(rules, biased)
		if v.OverflowInt(int64(n)) {
			n = 1
		}
		v.SetInt(int64(n))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n := g.num(rules, biased)
		if n < 0 || v.OverflowUint(uint64(n)) {
			n = 2
		}
		v.SetUint(uint64(n))
	case reflect.Float32, reflect.Float64:
		f := g.num(rules, biased)
		if g.rng.IntN(2) == 0 {
			f += 0.5
		}
		v.SetFloat(f)
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			if g.rng.IntN(3) > 0 {
				b := make([]byte, g.rng.IntN(9))
				for i := range b {
					b[i] = byte(g.rng.IntN(256))
				}
				v.SetBytes(b)
			}
			return
		}
		if g.rng.IntN(8) == 0 || depth > 4 {
			return // nil
		}
		n := g.size(rules, biased, 4)
		s := reflect.MakeSlice(v.Type(), n, n)
		for i := range n {
			g.fill(s.Index(i), elem, depth+1)
		}
		v.Set(s)
	case reflect.Array:
		for i := range v.Len() {
			g.fill(v.Index(i), elem, depth+1)
		}
	case reflect.Map:
		if g.rng.IntN(8) == 0 {
			return
		}
		keyTag, valTag := "", elem
		if strings.HasPrefix(elem, "keys,") {
			ks, rest, _ := strings.Cut(strings.TrimPrefix(elem, "keys,"), "endkeys")
			keyTag, valTag = strings.Trim(ks, ","), strings.TrimPrefix(rest, ",")
		}
		m := reflect.MakeMap(v.Type())
		for range g.size(rules, biased, 4) {
			kv, vv := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
			g.fill(kv, keyTag, depth+1)
			g.fill(vv, valTag, depth+1)
			m.SetMapIndex(kv, vv)
		}
		v.Set(m)
	}
}

func (g *valueGen) size(rules map[string]string, biased bool, def int) int {
	lo, hi := 0, def
	if p, ok := rules["min"]; ok {
		lo, _ = strconv.Atoi(p)
	}
	if p, ok := rules["max"]; ok {
		hi, _ = strconv.Atoi(p)
	}
	if p, ok := rules["len"]; ok {
		lo, _ = strconv.Atoi(p)
		hi = lo
	}
	if !biased {
		return g.rng.IntN(def + 3)
	}
	if _, ok := rules["required"]; ok && lo == 0 {
		lo = 1
	}
	if hi < lo {
		hi = lo
	}
	return lo + g.rng.IntN(hi-lo+1)
}

func (g *valueGen) num(rules map[string]string, biased bool) float64 {
	if !biased {
		return float64(g.rng.IntN(2001) - 1000)
	}
	if p, ok := rules["oneof"]; ok {
		vs := strings.Fields(p)
		f, _ := strconv.ParseFloat(vs[g.rng.IntN(len(vs))], 64)
		return f
	}
	lo, hi := 1.0, 500.0
	for _, r := range []string{"min", "gte", "gt"} {
		if p, ok := rules[r]; ok {
			lo, _ = strconv.ParseFloat(p, 64)
			if r == "gt" {
				lo++
			}
		}
	}
	for _, r := range []string{"max", "lte", "lt"} {
		if p, ok := rules[r]; ok {
			hi, _ = strconv.ParseFloat(p, 64)
			if r == "lt" {
				hi--
			}
		}
	}
	if hi < lo {
		hi = lo
	}
	return lo + float64(g.rng.IntN(int(hi-lo)+1))
}

func (g *valueGen) str(rules map[string]string, biased bool) string {
	if !biased {
		return junk[g.rng.IntN(len(junk))]
	}
	if _, ok := rules["omitempty"]; ok && g.rng.IntN(4) == 0 {
		return ""
	}
	if p, ok := rules["oneof"]; ok {
		var vs []string
		for _, f := range strings.Split(p, "'") {
			if strings.HasPrefix(p, "'"+f+"'") || strings.Contains(p, " '"+f+"'") {
				vs = append(vs, f)
			}
		}
		for _, f := range strings.Fields(p) {
			if !strings.Contains(f, "'") {
				vs = append(vs, f)
			}
		}
		return vs[g.rng.IntN(len(vs))]
	}
	n := g.rng.IntN(1000)
	switch {
	case has(rules, "email"):
		return fmt.Sprintf("user%d@example.com", n)
	case has(rules, "uuid4"), has(rules, "uuid|email"):
		b := make([]byte, 16)
		for i := range b {
			b[i] = byte(g.rng.IntN(256))
		}
		b[6], b[8] = b[6]&0x0f|0x40, b[8]&0x3f|0x80
		return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
	case has(rules, "url"):
		return fmt.Sprintf("https://example.com/p/%d?q=%d", n, n)
	case has(rules, "ip"):
		if n%2 == 0 {
			return fmt.Sprintf("10.0.%d.%d", n%256, n/4%256)
		}
		return fmt.Sprintf("2001:db8::%x", n)
	case has(rules, "hostname"):
		return fmt.Sprintf("host%d.example.org", n)
	case has(rules, "e164"):
		return fmt.Sprintf("+49151%07d", n)
	case has(rules, "hexadecimal"):
		return fmt.Sprintf("0x%X", n+1)
	case has(rules, "datetime"):
		return time.Unix(int64(n)*86400*30, 0).UTC().Format(rules["datetime"])
	case has(rules, "startswith"):
		return rules["startswith"] + strconv.Itoa(1000 + n)[:4]
	case has(rules, "number"):
		return fmt.Sprintf("%05d", n)
	}
	lo, hi := 1, 10
	if p, ok := rules["min"]; ok {
		lo, _ = strconv.Atoi(p)
	}
	if p, ok := rules["max"]; ok {
		hi, _ = strconv.Atoi(p)
	}
	if hi < lo {
		hi = lo
	}
	letters := "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	if !has(rules, "alpha") {
		letters += "0123456789"
	}
	if !has(rules, "alpha") && !has(rules, "alphanum") {
		letters += " -_.é"
	}
	out := make([]byte, 0, hi)
	for range lo + g.rng.IntN(hi-lo+1) {
		out = append(out, letters[g.rng.IntN(len(letters))])
	}
	return strings.ToValidUTF8(string(out), "e")
}

func has(rules map[string]string, name string) bool {
	_, ok := rules[name]
	return ok
}
