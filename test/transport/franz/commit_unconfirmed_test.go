package franz_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/internal/transport"
	"github.com/kavari-go/kavari/internal/transport/franz"
	"github.com/kavari-go/kavari/internal/transport/transporttest"
	"github.com/kavari-go/kavari/kavaritest"
)

type closeConn struct{}

func (closeConn) Error() string { return "injected: connection closed" }

// TestCommitUnconfirmedOnlyWhenSent: a commit that failed before its request
// was written (here its context was done) is not flagged "may have been
// applied" (ErrCommitUnconfirmed): the broker never saw it. One whose
// request reached the broker before the connection broke is.
func TestCommitUnconfirmedOnlyWhenSent(t *testing.T) {
	b := kavaritest.NewBroker(t, kavaritest.Topics("franz-commit-sent"))
	cfg := transporttest.Config(b.Addrs())
	cfg.GroupID, cfg.Topics = testenv.ID("franz-g"), []string{"franz-commit-sent"}
	c, _, gen := joined(t, franz.New(), cfg, 1)
	tp := transport.TopicPartition{Topic: "franz-commit-sent", Partition: 0}

	done, cancel := context.WithCancel(context.Background())
	cancel()
	err := c.Commit(done, gen(), []transport.Offset{{TopicPartition: tp, Offset: 1}})
	if err == nil {
		t.Fatal("a commit with a done context succeeded")
	}
	if errors.Is(err, transport.ErrCommitUnconfirmed) {
		t.Errorf("a commit never sent is flagged as possibly applied: %v", err)
	}

	var dropped atomic.Int64
	b.Cluster().ControlKey(int16(kmsg.OffsetCommit), func(kmsg.Request) (kmsg.Response, error, bool) {
		b.Cluster().KeepControl()
		dropped.Add(1)
		return nil, closeConn{}, true // the broker read the request, then the connection closes
	})
	ctx, cancel2 := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel2()
	err = c.Commit(ctx, gen(), []transport.Offset{{TopicPartition: tp, Offset: 2}})
	if err == nil {
		t.Fatal("a commit whose connection closed succeeded")
	}
	if dropped.Load() == 0 {
		t.Fatal("the commit never reached the broker")
	}
	if !errors.Is(err, transport.ErrCommitUnconfirmed) {
		t.Errorf("a commit that reached the broker is not flagged as possibly applied: %v", err)
	}
}
