package franz_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/internal/transport"
	"github.com/kavari-go/kavari/internal/transport/franz"
	"github.com/kavari-go/kavari/internal/transport/transporttest"
	"github.com/kavari-go/kavari/kavaritest"
)

// A commit whose metadata the broker refuses as too large
// (OFFSET_METADATA_TOO_LARGE, over its offset.metadata.max.bytes) is
// reported as transport.ErrMetadataTooLarge, which the engine answers with
// shorter metadata; it is not a commit of unknown outcome.
func TestCommitMetadataTooLarge(t *testing.T) {
	const maxBytes = 100
	b := kavaritest.NewBroker(t, kavaritest.Topics("franz-meta-limit"))
	b.Cluster().ControlKey(int16(kmsg.OffsetCommit), func(r kmsg.Request) (kmsg.Response, error, bool) {
		b.Cluster().KeepControl()
		req := r.(*kmsg.OffsetCommitRequest)
		resp := req.ResponseKind().(*kmsg.OffsetCommitResponse)
		refused := false
		for _, rt := range req.Topics {
			st := kmsg.NewOffsetCommitResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewOffsetCommitResponseTopicPartition()
				sp.Partition = rp.Partition
				if rp.Metadata != nil && len(*rp.Metadata) > maxBytes {
					sp.ErrorCode, refused = kerr.OffsetMetadataTooLarge.Code, true
				}
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		if !refused {
			return nil, nil, false // the broker's own handling
		}
		return resp, nil, true
	})
	tr := franz.New()
	cfg := transporttest.Config(b.Addrs())
	cfg.Topics = []string{"franz-meta-limit"}
	cfg.GroupID = testenv.ID("franz-g")
	tp := transport.TopicPartition{Topic: cfg.Topics[0], Partition: 0}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _, gen := joined(t, tr, cfg, 1)
	err := c.Commit(ctx, gen(), []transport.Offset{{TopicPartition: tp, Offset: 1, Metadata: strings.Repeat("x", maxBytes+1)}})
	if !errors.Is(err, transport.ErrMetadataTooLarge) {
		t.Fatalf("Commit with metadata over the limit: %v, want transport.ErrMetadataTooLarge", err)
	}
	if errors.Is(err, transport.ErrCommitUnconfirmed) {
		t.Errorf("a refused commit is flagged unconfirmed: %v", err)
	}
	if err := c.Commit(ctx, gen(), []transport.Offset{{TopicPartition: tp, Offset: 1, Metadata: "short"}}); err != nil {
		t.Fatalf("Commit with short metadata: %v", err)
	}
}
