package franz

import (
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// balancers are the assignors a member offers, preferred first:
// cooperative-sticky, then eager range. A group of franz-go members agrees
// on cooperative-sticky; a group that also has members offering only eager
// assignors — the kafka-go transport (range, roundrobin), librdkafka and so
// the Python kavari by default (range, roundrobin) — agrees on range, the one
// they all offer, so that Config.Transport can change in a rolling deploy.
// kgo runs an eager session when the group chose range (every partition is
// revoked at each rebalance) and, when a join downgrades the group from
// cooperative to eager, revokes everything before it consumes again.
func balancers() []kgo.GroupBalancer {
	return []kgo.GroupBalancer{kgo.CooperativeStickyBalancer(), rangeV0{kgo.RangeBalancer()}}
}

// rangeV0 is kgo's range balancer joining with version 0 of the consumer
// protocol's member metadata (the topics, no user data). kgo writes
// version 3 (owned partitions, generation, rack), which a kafka-go group
// leader refuses: it reads the version-0 fields and fails the join when
// bytes remain. The range assignment uses none of the later fields; kgo
// reads version-0 metadata (and kafka-go's) when it leads.
type rangeV0 struct{ kgo.GroupBalancer }

func (rangeV0) JoinGroupMetadata(topics []string, _ map[string][]int32, _ int32) []byte {
	meta := kmsg.NewConsumerMemberMetadata()
	meta.Version = 0
	meta.Topics = topics
	return meta.AppendTo(nil)
}
