package contract

import (
	"net/http"
	"strings"
)

// ServeHTTP serves the document: YAML when the query has format=yaml or
// the Accept header asks for YAML, JSON otherwise. A service mounts it
// with, e.g., mux.Handle("GET /asyncapi", doc).
func (d *Document) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	yaml := r.URL.Query().Get("format") == "yaml" || strings.Contains(r.Header.Get("Accept"), "yaml")
	b, err := d.JSON()
	ct := "application/json"
	if yaml {
		b, err = d.YAML()
		ct = "application/yaml"
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", ct)
	_, _ = w.Write(b)
}
