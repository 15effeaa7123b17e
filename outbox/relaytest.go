package outbox

import "github.com/kavari-go/kavari/outbox/internal/relaytest"

func init() {
	relaytest.SetBeforeMark = func(r any, f func(ids []int64) bool) { r.(*Relay).beforeMark = f }
	relaytest.ErrCrashed = errCrashed
	relaytest.SetAfterMark = func(r any, f func()) { r.(*Relay).afterMark = f }
	relaytest.SetStartAt = func(r any, f func() int) { r.(*Relay).startAt = f }
}
