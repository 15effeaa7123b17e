package contract

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"go.yaml.in/yaml/v3"
)

// JSON returns the document as indented JSON, keys in a stable order.
func (d *Document) JSON() ([]byte, error) {
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("kavari: contract: %w", err)
	}
	return append(b, '\n'), nil
}

// YAML returns the document as YAML, with the same content and key order
// as JSON.
func (d *Document) YAML() ([]byte, error) {
	b, err := d.JSON()
	if err != nil {
		return nil, err
	}
	var n yaml.Node // JSON is YAML: the node keeps the key order
	if err := yaml.Unmarshal(b, &n); err != nil {
		return nil, fmt.Errorf("kavari: contract: %w", err)
	}
	clearStyle(&n)
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return nil, fmt.Errorf("kavari: contract: %w", err)
	}
	return out.Bytes(), nil
}

// clearStyle drops the flow style and quotes the JSON input gave, so the
// YAML is block-styled; strings that need quotes keep them.
func clearStyle(n *yaml.Node) {
	n.Style = 0
	if n.Kind == yaml.ScalarNode && n.Tag == "!!str" {
		n.Style = 0
		var probe any
		if err := yaml.Unmarshal([]byte(n.Value), &probe); err != nil || probe != n.Value {
			n.Style = yaml.DoubleQuotedStyle
		}
	}
	for _, c := range n.Content {
		clearStyle(c)
	}
}

// Write writes the document to w as "json" or "yaml".
func (d *Document) Write(w io.Writer, format string) error {
	var b []byte
	var err error
	switch strings.ToLower(format) {
	case "json":
		b, err = d.JSON()
	case "yaml", "yml":
		b, err = d.YAML()
	default:
		return fmt.Errorf("kavari: contract: unknown format %q (want json or yaml)", format)
	}
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// ErrNotAsyncAPI is matched by errors.Is for input Parse rejects.
var ErrNotAsyncAPI = fmt.Errorf("kavari: contract: not an AsyncAPI 3 document")

// Parse reads an AsyncAPI 3.x document, JSON or YAML, as Build writes it.
// Input that is not such a document fails with an error matching
// ErrNotAsyncAPI.
func Parse(data []byte) (*Document, error) {
	var raw any
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotAsyncAPI, err)
	}
	top, ok := raw.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: not an object", ErrNotAsyncAPI)
	}
	v, _ := top["asyncapi"].(string)
	if !strings.HasPrefix(v, "3.") {
		return nil, fmt.Errorf("%w: asyncapi is %v, want 3.x", ErrNotAsyncAPI, top["asyncapi"])
	}
	b, err := json.Marshal(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotAsyncAPI, err)
	}
	d := &Document{}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(d); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotAsyncAPI, err)
	}
	for name, ch := range d.Channels {
		if ch == nil || ch.Address == "" {
			return nil, fmt.Errorf("%w: channel %q has no address", ErrNotAsyncAPI, name)
		}
		for mk, m := range ch.Messages {
			if m == nil || m.Name == "" {
				return nil, fmt.Errorf("%w: message %q of channel %q has no name (references to components are not supported)", ErrNotAsyncAPI, mk, name)
			}
		}
	}
	return d, nil
}
