package contract_test

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/contract"
)

func TestQuickstartGolden(t *testing.T) {
	d, err := contract.Build(quickstartRegistry(), contract.WithInfo("quickstart", "1.0.0", "examples/quickstart"))
	require.NoError(t, err)
	js, err := d.JSON()
	require.NoError(t, err)
	golden(t, "quickstart.asyncapi.json", js)
	ys, err := d.YAML()
	require.NoError(t, err)
	golden(t, "quickstart.asyncapi.yaml", ys)

	meta := asyncapiSchema(t)
	require.NoError(t, meta.Validate(instance(t, js)), "the document is not valid AsyncAPI 3.0")
	// The meta-schema does reject a broken document.
	broken := bytes.Replace(js, []byte(`"action": "send"`), []byte(`"action": "publish"`), 1)
	require.Error(t, meta.Validate(instance(t, broken)))

	// YAML and JSON say the same.
	fromYAML, err := contract.Parse(ys)
	require.NoError(t, err)
	again, err := fromYAML.JSON()
	require.NoError(t, err)
	require.JSONEq(t, string(js), string(again))
}

func TestCtGolden(t *testing.T) {
	d, err := contract.Build(ctRegistry(), contract.WithDeadLetterSuffix(".dead"))
	require.NoError(t, err)
	js, err := d.JSON()
	require.NoError(t, err)
	golden(t, "ct.asyncapi.json", js)
	require.NoError(t, asyncapiSchema(t).Validate(instance(t, js)))
}

func TestParseRejects(t *testing.T) {
	for name, in := range map[string]string{
		"empty":        "",
		"not yaml":     "{{{",
		"a list":       "[1, 2]",
		"openapi":      `{"openapi": "3.1.0", "info": {"title": "x", "version": "1"}}`,
		"asyncapi 2":   "asyncapi: 2.6.0\ninfo: {title: x, version: '1'}\n",
		"no address":   "asyncapi: 3.0.0\nchannels:\n  a: {messages: {}}\n",
		"wrong shapes": `{"asyncapi": "3.0.0", "channels": [1]}`,
		"message ref":  "asyncapi: 3.0.0\nchannels:\n  a:\n    address: a\n    messages:\n      m: {$ref: '#/components/messages/m'}\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := contract.Parse([]byte(in))
			require.ErrorIs(t, err, contract.ErrNotAsyncAPI)
		})
	}
}

func TestWriteFormats(t *testing.T) {
	d, err := contract.Build(quickstartRegistry())
	require.NoError(t, err)
	var j, y bytes.Buffer
	require.NoError(t, d.Write(&j, "json"))
	require.NoError(t, d.Write(&y, "yaml"))
	require.Error(t, d.Write(&y, "xml"))
	require.Contains(t, y.String(), "asyncapi: 3.0.0")
}

type ctFlag struct {
	kavari.Message `kavari:"topic=ct.flags,codec=text"`
	On             bool `json:"on"`
}

type ctCount struct {
	kavari.Message `kavari:"topic=ct.counts,codec=text"`
	N              int64 `json:"n"`
}

// TestTextCodecContract: a type written with the text codec (the Python
// kavari's primitive payloads) is described as plain text, not as a JSON
// object, and its schema accepts what the codec writes and nothing else.
func TestTextCodecContract(t *testing.T) {
	reg := kavari.NewRegistry()
	require.NoError(t, reg.Declare(&ctFlag{}))
	require.NoError(t, reg.Declare(&ctCount{}))
	d, err := contract.Build(reg)
	require.NoError(t, err)
	for _, c := range []struct {
		topic, name string
		good, bad   []string
	}{
		{"ct.flags", "ctFlag", []string{"True", "False"}, []string{"true", "1", ""}},
		{"ct.counts", "ctCount", []string{"0", "-42", "9007199254740993"}, []string{"1.5", "x", ""}},
	} {
		m := d.Channels[c.topic].Messages[c.name]
		require.NotNil(t, m, c.name)
		require.Equal(t, "text/plain; charset=utf-8", m.ContentType)
		require.Equal(t, "string", m.Payload.Schema.Type)
		s := compile(t, mustJSON(t, m.Payload.Schema), "mem://"+c.name)
		for _, v := range c.good {
			require.NoError(t, s.Validate(instance(t, mustJSON(t, v))), "%s %q", c.name, v)
		}
		for _, v := range c.bad {
			require.Error(t, s.Validate(instance(t, mustJSON(t, v))), "%s %q", c.name, v)
		}
	}
}
