// Package contract makes a kavari service's message contract visible: a
// JSON Schema (draft 2020-12) per message type, an AsyncAPI 3.0 document of
// a registry, and a breaking-change check between two such documents.
//
//	doc, err := contract.Build(kavari.DefaultRegistry, contract.WithInfo("billing", "1.4.0", ""))
//	err = doc.Write(os.Stdout, "yaml")
//	changes := contract.Diff(oldDoc, doc) // or: kavari contract diff OLD NEW
//
// It is its own module (plugins are modules), so users of the core library do
// not inherit the schema libraries. It reads the registry through
// kavari.Registry.Types only.
//
// # Libraries
//
// The schema model is github.com/google/jsonschema-go: a typed draft 2020-12
// Schema with room for extension keywords and a stable property order.
// Documents are validated against schemas (in this package's tests: payloads
// against their schema, the AsyncAPI document against the AsyncAPI 3.0 JSON
// Schema, itself draft-07) with github.com/santhosh-tekuri/jsonschema/v6,
// which implements every draft and asserts formats (email, uuid, ...) on
// request. YAML is go.yaml.in/yaml/v3. Only the validator-rule mapping is
// written here.
//
// # Go types
//
// Field names, omitempty, "-" and the string option follow encoding/json,
// including embedded structs (promoted fields, dominant-field rules). bool
// is boolean; integers are integer with their range (64-bit ones with format
// int64 or uint64, as their bounds are not exact in a JSON number); floats
// are number; time.Time is a date-time string; []byte a base64 string;
// slices and arrays are arrays (arrays with their length); maps are objects
// (integer keys with a pattern); pointers, slices and maps may be null when
// encoding/json would write null and the rules allow nil; a recursive struct
// is written once under $defs. Objects stay open (additionalProperties
// unset): kavari's decoder ignores unknown fields.
//
// # Validator rules
//
// Mapped (see MappedRules): required (JSON required plus non-empty, non-zero,
// true or non-null as the kind demands), omitempty/omitnil (rules apply
// unless the value is zero), omitzero, isdefault, len, min, max, eq, ne, gt, gte, lt,
// lte (value bounds on numbers, rune counts on strings, item counts on
// slices, arrays and maps), oneof (enum), unique (uniqueItems), boolean,
// contains, containsany, containsrune, excludes, excludesall, excludesrune,
// startswith, endswith, startsnotwith, endsnotwith, email, url, uri, http_url,
// uuid, uuid3, uuid4, uuid5, uuid_rfc4122, hostname, hostname_rfc1123, fqdn,
// ip, ip_addr, ipv4, ip4_addr, ipv6, ip6_addr, datetime (RFC 3339 layouts,
// 2006-01-02, 15:04:05), alpha, alphanum, numeric, number, hexadecimal,
// hexcolor, ascii, printascii, e164, base64, base64url, mac, latitude and
// longitude (on numbers), dive (items / additionalProperties) with keys ...
// endkeys (propertyNames), and alternatives joined by | (anyOf).
//
// Any other rule (cross-field rules such as eqfield or required_if, custom
// rules, required on a struct, size rules on []byte, rules on a
// json:",string" field) is never dropped silently: it stays in the field's
// x-kavari-unmapped list, and the whole tag in x-kavari-validate, so a reader
// sees what only kavari's validator checks.
//
// # AsyncAPI
//
// Build writes one channel per topic and one per dead-letter topic, a
// message per type (payload schema as schemaFormat
// application/schema+json;version=draft-2020-12, Kafka key schema, headers:
// msg_type, the CloudEvents ce_* headers, content-type and kavari_version),
// a send operation per published type and, per handled type, a receive
// operation and a send to its dead-letter topic.
package contract
