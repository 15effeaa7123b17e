package franz

import (
	"crypto/rand"
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kavari-go/kavari/internal/transport"
	"github.com/kavari-go/kavari/internal/transport/transporttest"
)

// TestPartitionerMatchesKafkaGo compares the partition kgo picks with this
// transport's partitioner against kafka-go's Murmur2Balancer and
// CRC32Balancer, for thousands of keys (text, binary, empty) and several
// partition counts.
func TestPartitionerMatchesKafkaGo(t *testing.T) {
	keys := [][]byte{{}, {0}, {0xff, 0xfe}}
	for i := range 5000 {
		keys = append(keys, fmt.Appendf(nil, "customer-%d", i))
	}
	for range 3000 {
		k := make([]byte, 1+len(keys)%40)
		_, _ = rand.Read(k)
		keys = append(keys, k)
	}
	for _, part := range []transport.Partitioner{transport.Murmur2, transport.CRC32} {
		tp := partitioner(part).ForTopic("t")
		for _, n := range []int{1, 2, 3, 6, 7, 12, 32, 100, 1000} {
			mismatches := 0
			for _, k := range keys {
				if part == transport.CRC32 && len(k) == 0 {
					continue // unset for librdkafka and kafka-go: any partition
				}
				r := &kgo.Record{Key: k}
				if !tp.RequiresConsistency(r) {
					t.Fatalf("partitioner %d: key %x not partitioned by its hash", part, k)
				}
				got, want := tp.Partition(r, n), transporttest.Expected(part, k, n)
				if got != want {
					if mismatches++; mismatches < 5 {
						t.Errorf("partitioner %d, %d partitions, key %x: %d, kafka-go %d", part, n, k, got, want)
					}
				}
			}
			if mismatches > 0 {
				t.Errorf("partitioner %d, %d partitions: %d of %d keys differ", part, n, mismatches, len(keys))
			}
		}
	}
}
