package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/internal/testkit"
)

// The example on SQLite: a valid order is stored and its event published
// by the relay; an invalid one stores nothing.
func TestOrdersService(t *testing.T) {
	brokers, _ := testenv.Brokers(t)
	prefix := testenv.ID("ex")
	reg := kavari.NewRegistry()
	require.NoError(t, reg.Declare(&OrderPlaced{}))
	k := testkit.NewClient(t, reg, brokers, func(c *kavari.Config) {
		c.Topics.Name = func(topic string) string { return prefix + "-" + topic }
	})
	db, d, err := open("", filepath.Join(t.TempDir(), "orders.db"))
	require.NoError(t, err)
	defer db.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := newService(ctx, db, d, k)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- s.relay.Run(ctx) }()
	srv := httptest.NewServer(s.routes())
	defer srv.Close()

	resp, err := http.Post(srv.URL+"/orders", "application/json", strings.NewReader(`{"order_id":"o-1","amount":10}`))
	require.NoError(t, err)
	var created map[string]string
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&created))
	resp.Body.Close()
	require.Equal(t, http.StatusCreated, resp.StatusCode)

	resp, err = http.Post(srv.URL+"/orders", "application/json", strings.NewReader(`{"order_id":"o-2","amount":0}`))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	var n int
	require.NoError(t, db.QueryRow("SELECT COUNT(*) FROM orders").Scan(&n))
	require.Equal(t, 1, n)

	testkit.Eventually(t, time.Minute, func() bool {
		h, err := s.relay.Health(ctx)
		return err == nil && h.Backlog == 0 && h.Published == 1
	}, "the order's event was not published")
	recs := testkit.ReadTopic(t, brokers, prefix+"-orders", 1, func(kafka.Message) bool { return true })
	require.Equal(t, created["ce_id"], testkit.Header(recs[0], kavari.HeaderID))
	require.Equal(t, "o-1", string(recs[0].Key))
	cancel()
	require.NoError(t, <-done)
}
