package outbox_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testkit"
	"github.com/kavari-go/kavari/outbox"
)

// BenchmarkPublishInTx: what outbox.Outbox.Publish (per-call=1) or PublishBatch
// of 10 costs the caller's transaction per message (encode, advisory locks
// on PostgreSQL, insert), the transaction's begin and commit amortised over
// 100 messages.
func BenchmarkPublishInTx(b *testing.B) {
	for _, d := range []outbox.Dialect{outbox.SQLite, outbox.Postgres} {
		b.Run(d.String(), func(b *testing.B) {
			var db *sql.DB
			if d == outbox.SQLite {
				db = openSQLiteB(b)
			} else {
				dsn := os.Getenv("KAVARI_PG_DSN")
				if dsn == "" {
					b.Skip("KAVARI_PG_DSN unset")
				}
				var err error
				db, err = sql.Open("pgx", dsn)
				require.NoError(b, err)
				defer db.Close()
			}
			k, err := kavari.New(kavari.Config{Brokers: []string{"127.0.0.1:1"}, Logger: testkit.Logger()})
			require.NoError(b, err)
			defer k.Stop(context.Background())
			ctx := context.Background()
			// Each sub-benchmark on a table of its own: a table that grew
			// under the previous one would cost the next one more.
			fresh := func(b *testing.B) (*outbox.Outbox, string) {
				table := fmt.Sprintf("bench_%d", time.Now().UnixNano())
				ob, err := outbox.New(k, outbox.Config{Dialect: d, Table: table})
				require.NoError(b, err)
				require.NoError(b, ob.CreateSchema(ctx, db))
				return ob, table
			}
			// What the database alone costs here, for comparison: one
			// round trip (SELECT 1) and a plain insert of a row of the
			// same size, one statement each, in transactions of 100.
			floor := func(name string, q func(table string) string, args func(i int) []any) {
				b.Run(name, func(b *testing.B) {
					_, table := fresh(b)
					stmt := q(table)
					b.ResetTimer()
					for i := 0; i < b.N; {
						tx, err := db.BeginTx(ctx, nil)
						require.NoError(b, err)
						for j := 0; j < 100 && i < b.N; j, i = j+1, i+1 {
							if _, err := tx.ExecContext(ctx, stmt, args(i)...); err != nil {
								b.Fatal(err)
							}
						}
						require.NoError(b, tx.Commit())
					}
				})
			}
			floor("floor=select-1", func(string) string { return "SELECT 1" }, func(int) []any { return nil })
			enc, err := k.Encode(ctx, &OrderPlaced{OrderID: "k1", Seq: 1, Amount: 1})
			require.NoError(b, err)
			type header struct {
				K string `json:"k"`
				V []byte `json:"v"`
			}
			var stored []header
			for _, h := range enc.Headers {
				stored = append(stored, header{h.Key, h.Value})
			}
			hs, err := json.Marshal(stored) // the headers column's format
			require.NoError(b, err)
			floor("floor=plain-insert", func(table string) string {
				ph := "?, ?, ?, ?, ?, ?, ?"
				if d == outbox.Postgres {
					ph = "$1, $2, $3, $4, $5, $6, $7"
				}
				return "INSERT INTO " + table + " (shard, topic, msg_key, value, headers, ce_id, created_at) VALUES (" + ph + ")"
			}, func(i int) []any {
				return []any{i % outbox.Shards, enc.Topic, enc.Key, enc.Value, string(hs), enc.ID(), time.Now().UnixMicro()}
			})
			for _, per := range []int{1, 10} {
				b.Run(fmt.Sprintf("per-call=%d", per), func(b *testing.B) {
					ob, _ := fresh(b)
					b.ResetTimer()
					for i := 0; i < b.N; {
						tx, err := db.BeginTx(ctx, nil)
						require.NoError(b, err)
						for j := 0; j < 100 && i < b.N; j += per {
							msgs := make([]kavari.Msg, 0, per)
							for ; len(msgs) < per && i < b.N; i++ {
								msgs = append(msgs, &OrderPlaced{OrderID: fmt.Sprintf("k%d", i%64), Seq: i, Amount: 1})
							}
							if _, err := ob.PublishBatch(ctx, tx, msgs...); err != nil {
								b.Fatal(err)
							}
						}
						require.NoError(b, tx.Commit())
					}
				})
			}
		})
	}
}

func openSQLiteB(b *testing.B) *sql.DB {
	db, err := sql.Open("sqlite", "file:"+b.TempDir()+"/bench.db?_pragma=busy_timeout(20000)&_pragma=journal_mode(WAL)&_txlock=immediate")
	require.NoError(b, err)
	b.Cleanup(func() { db.Close() })
	return db
}

// TestRelayThroughputFigures (KAVARI_BENCH=1, real Kafka and PostgreSQL):
// the relay's throughput draining N committed rows against PublishEncoded
// of the same messages in batches of the same size on the same broker, and
// commit→acknowledged latency at a steady 1,000 orders/s. It reports; it
// asserts nothing about time.
func TestRelayThroughputFigures(t *testing.T) {
	if os.Getenv("KAVARI_BENCH") == "" {
		t.Skip("set KAVARI_BENCH=1 to measure")
	}
	const n = 20000
	dialects(t, func(t *testing.T, d outbox.Dialect, db *sql.DB) {
		e := newEnv(t, d, db, nil)
		ctx := context.Background()
		workers := 4
		if v, err := strconv.Atoi(os.Getenv("KAVARI_BENCH_WORKERS")); err == nil {
			workers = v
		}
		rounds := 3
		if v, err := strconv.Atoi(os.Getenv("KAVARI_BENCH_ROUNDS")); err == nil && v > 0 {
			rounds = v
		}
		// Alternated rounds (PublishBatch, PublishEncoded, relay,
		// PublishBatch, ...) on the same topic, so that a busy moment of
		// the machine hits all three.
		var ratios, ratiosEnc []float64
		order := func(i int) kavari.Msg {
			return &OrderPlaced{OrderID: fmt.Sprintf("k%d", i%64), Seq: i, Amount: 1}
		}
		// send runs f on batches of 500 of n messages with as many
		// senders as relay workers.
		send := func(f func(from, to int) error) time.Duration {
			start := time.Now()
			var wg sync.WaitGroup
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := w * 500; i < n; i += workers * 500 {
						require.NoError(t, f(i, min(i+500, n)))
					}
				}()
			}
			wg.Wait()
			return time.Since(start)
		}
		for round := 1; round <= rounds; round++ {
			batches := make([][]kavari.Msg, 0, n/500+1)
			for i := 0; i < n; i += 500 {
				b := make([]kavari.Msg, 0, 500)
				for j := i; j < min(i+500, n); j++ {
					b = append(b, order(j))
				}
				batches = append(batches, b)
			}
			direct := send(func(from, _ int) error {
				_, err := e.client.PublishBatch(ctx, batches[from/500]...)
				return err
			})

			msgs := make([]kavari.Encoded, 0, n)
			for i := 0; i < n; i++ {
				m, err := e.client.Encode(ctx, order(i))
				require.NoError(t, err)
				msgs = append(msgs, m)
			}
			encoded := send(func(from, to int) error {
				_, err := e.client.PublishEncoded(ctx, msgs[from:to]...)
				return err
			})

			for _, b := range batches {
				e.write(false, b...)
			}
			r := e.relay(outbox.RelayConfig{Workers: workers, BatchSize: 500})
			start := time.Now()
			stop, _ := e.run(r)
			// Empty? (a cheap probe: Health counts the rows)
			testkit.Eventually(t, 3*time.Minute, func() bool {
				var one int
				return db.QueryRow("SELECT 1 FROM "+e.table+" LIMIT 1").Scan(&one) == sql.ErrNoRows
			}, "not drained")
			relayed := time.Since(start)
			stop()
			ratio, ratioEnc := direct.Seconds()/relayed.Seconds(), encoded.Seconds()/relayed.Seconds()
			ratios, ratiosEnc = append(ratios, ratio), append(ratiosEnc, ratioEnc)
			t.Logf("%s round %d: %d messages, %d senders/workers, batches of 500: PublishBatch %v = %.0f msg/s; PublishEncoded %v = %.0f msg/s; relay %v = %.0f msg/s; relay/PublishBatch %.2f, relay/PublishEncoded %.2f",
				d, round, n, workers, direct.Round(time.Millisecond), n/direct.Seconds(), encoded.Round(time.Millisecond), n/encoded.Seconds(),
				relayed.Round(time.Millisecond), n/relayed.Seconds(), ratio, ratioEnc)
		}
		sort.Float64s(ratios)
		sort.Float64s(ratiosEnc)
		t.Logf("%s: relay throughput over %d alternated rounds: median %.2f× PublishBatch (min %.2f, max %.2f), median %.2f× PublishEncoded (min %.2f, max %.2f)",
			d, rounds, ratios[len(ratios)/2], ratios[0], ratios[len(ratios)-1], ratiosEnc[len(ratiosEnc)/2], ratiosEnc[0], ratiosEnc[len(ratiosEnc)-1])
		r := e.relay(outbox.RelayConfig{Workers: 4, BatchSize: 500})
		e.run(r)

		// Latency at 1,000 orders/s for 10 s, from ce_time (set by
		// Publish, just before the commit) to the record's timestamp (set
		// when the relay sent it; millisecond resolution). PostgreSQL only:
		// outbox.SQLite serialises its writers, and on a busy machine 1,000
		// transactions/s pile up behind the write lock.
		if d == outbox.SQLite {
			return
		}
		const rate, secs = 1000, 10
		tick := time.NewTicker(time.Second / rate)
		defer tick.Stop()
		var pending sync.WaitGroup
		for i := 0; i < rate*secs; i++ {
			<-tick.C
			pending.Add(1)
			go func() {
				defer pending.Done()
				e.write(false, &OrderPlaced{OrderID: fmt.Sprintf("l%d", i%64), Seq: i, Amount: 1})
			}()
		}
		pending.Wait()
		e.drained(r)
		var lat []time.Duration
		for _, rec := range readAll(t, e.brokers, e.topic) {
			if rec.key[0] != 'l' {
				continue
			}
			ct, err := time.Parse(time.RFC3339Nano, testkit.Header(rec.msg, kavari.HeaderTime))
			require.NoError(t, err)
			lat = append(lat, rec.msg.Time.Sub(ct))
		}
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		t.Logf("%s: %d orders at %d/s: publish→sent latency p50 %v, p99 %v, max %v", d, len(lat), rate,
			lat[len(lat)/2].Round(100*time.Microsecond), lat[len(lat)*99/100].Round(100*time.Microsecond), lat[len(lat)-1].Round(100*time.Microsecond))
	})
}
