package kavari

import (
	"context"
	"time"

	"github.com/segmentio/kafka-go"
)

// EncodeRecordOn runs the publish path without I/O for a Client whose
// Config.Registry is r (codecs chosen with SetCodec apply).
func EncodeRecordOn(r *Registry, msg any) (kafka.Message, error) {
	rec, err := newEncoder("s", 0, time.Now).withRegistry(r).encode(context.Background(), msg)
	return fromRecord(rec), err
}
