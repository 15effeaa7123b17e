package franz

import (
	"hash/crc32"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kavari-go/kavari/internal/transport"
)

// partitioner returns the kgo partitioner that picks, for a keyed record, the
// partition kafka-go's Murmur2Balancer or CRC32Balancer picks: the Java
// client's (murmur2(key) & 0x7fffffff) % n, or librdkafka's crc32(key) % n
// (no mask). Records without a key (for CRC32 also an empty key, which
// librdkafka treats as unset) go to a sticky partition, as kgo does by
// default.
func partitioner(p transport.Partitioner) kgo.Partitioner {
	if p == transport.CRC32 {
		return crc32Partitioner{}
	}
	// kgo's default hasher is the Java client's murmur2 with the
	// 0x7fffffff mask; nil keys are sticky, empty keys are hashed, as in
	// kafka-go's Murmur2Balancer.
	return kgo.StickyKeyPartitioner(nil)
}

type crc32Partitioner struct{}

func (crc32Partitioner) ForTopic(topic string) kgo.TopicPartitioner {
	return &crc32TopicPartitioner{sticky: kgo.StickyPartitioner().ForTopic(topic)}
}

type crc32TopicPartitioner struct {
	sticky kgo.TopicPartitioner
}

// OnNewBatch lets the sticky partitioner of unkeyed records move on.
func (p *crc32TopicPartitioner) OnNewBatch() {
	if nb, ok := p.sticky.(kgo.TopicPartitionerOnNewBatch); ok {
		nb.OnNewBatch()
	}
}

func (p *crc32TopicPartitioner) RequiresConsistency(r *kgo.Record) bool { return len(r.Key) > 0 }

func (p *crc32TopicPartitioner) Partition(r *kgo.Record, n int) int {
	if len(r.Key) == 0 {
		return p.sticky.Partition(r, n)
	}
	return crc32Index(r.Key, n)
}

// crc32Index is kafka-go's CRC32Balancer for partitions 0..n-1.
func crc32Index(key []byte, n int) int {
	return int(crc32.ChecksumIEEE(key) % uint32(n))
}
