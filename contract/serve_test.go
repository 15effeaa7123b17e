package contract_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari/contract"
)

func TestServeHTTP(t *testing.T) {
	d, err := contract.Build(quickstartRegistry())
	require.NoError(t, err)
	srv := httptest.NewServer(d)
	defer srv.Close()
	for _, c := range []struct{ query, accept, ct string }{
		{"", "", "application/json"},
		{"?format=yaml", "", "application/yaml"},
		{"", "application/yaml", "application/yaml"},
	} {
		req, err := http.NewRequest(http.MethodGet, srv.URL+c.query, nil)
		require.NoError(t, err)
		req.Header.Set("Accept", c.accept)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		require.Equal(t, c.ct, resp.Header.Get("Content-Type"))
		got, err := contract.Parse(body)
		require.NoError(t, err)
		require.Equal(t, d.Info, got.Info)
		require.Len(t, got.Channels, len(d.Channels))
	}
}
