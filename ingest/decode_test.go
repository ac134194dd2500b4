package ingest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// testNow is the receive time passed to Decode in tests.
var testNow = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func num(name string, f float64) Field  { return Field{Name: name, Value: Number(f)} }
func str(name, s string) Field          { return Field{Name: name, Value: String(s)} }
func boolean(name string, b bool) Field { return Field{Name: name, Value: Bool(b)} }

func at(t time.Time, fields ...Field) Point { return Point{Time: t, Fields: fields} }

func unixMilli(ms int64) time.Time { return time.UnixMilli(ms).UTC() }
func unix(s, ns int64) time.Time   { return time.Unix(s, ns).UTC() }

type decodeCase struct {
	name    string
	payload string
	format  Format
	want    []Point
}

func runDecodeCases(t *testing.T, cases []decodeCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode([]byte(tc.payload), tc.format, testNow, DefaultLimits())
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestDecodeObject(t *testing.T) {
	runDecodeCases(t, []decodeCase{
		{
			name:    "typical",
			payload: `{"ts":1700000000000,"temperature":21.5,"humidity":40,"heating":true,"mode":"heat"}`,
			want: []Point{at(unixMilli(1700000000000),
				boolean("heating", true), num("humidity", 40), str("mode", "heat"), num("temperature", 21.5))},
		},
		{
			name:    "types kept",
			payload: `{"s":"40","i":40,"f":40.0,"b":false,"neg":-1.5e3,"big":1e300,"tiny":5e-324,"zero":-0,"empty":""}`,
			want: []Point{at(testNow,
				boolean("b", false), num("big", 1e300), str("empty", ""), num("f", 40), num("i", 40),
				num("neg", -1500), str("s", "40"), num("tiny", 5e-324), num("zero", 0))},
		},
		{
			name:    "long numbers",
			payload: `{"a":1234567890123456789,"b":0.1,"c":-12345678901234567,"d":1E+2}`,
			want: []Point{at(testNow,
				num("a", 1234567890123456789), num("b", 0.1), num("c", -12345678901234567), num("d", 100))},
		},
		{
			name:    "nulls skipped",
			payload: `{"a":null,"b":1,"c":{"d":null}}`,
			want:    []Point{at(testNow, num("b", 1))},
		},
		{
			name:    "null does not erase an earlier value",
			payload: `{"a":1,"a":null}`,
			want:    []Point{at(testNow, num("a", 1))},
		},
		{
			name:    "nested objects flattened",
			payload: `{"gps":{"lat":1.5,"lon":-2,"fix":{"ok":true}},"z":0}`,
			want: []Point{at(testNow,
				boolean("gps.fix.ok", true), num("gps.lat", 1.5), num("gps.lon", -2), num("z", 0))},
		},
		{
			name:    "nested ts is a field",
			payload: `{"gps":{"ts":5}}`,
			want:    []Point{at(testNow, num("gps.ts", 5))},
		},
		{
			name:    "empty nested object contributes nothing",
			payload: `{"a":{},"b":1}`,
			want:    []Point{at(testNow, num("b", 1))},
		},
		{
			name:    "duplicate keys last wins",
			payload: `{"a":1,"b":2,"a":"x"}`,
			want:    []Point{at(testNow, str("a", "x"), num("b", 2))},
		},
		{
			name:    "duplicate after flattening last wins",
			payload: `{"a.b":1,"a":{"b":true}}`,
			want:    []Point{at(testNow, boolean("a.b", true))},
		},
		{
			name:    "sorted bytewise",
			payload: `{"b":1,"B":2,"a_b":5,"a.b":4,"a":3}`,
			want:    []Point{at(testNow, num("B", 2), num("a", 3), num("a.b", 4), num("a_b", 5), num("b", 1))},
		},
		{
			name:    "escapes and unicode",
			payload: `{"caf\u00e9":"line\nbreak \"q\" \\ \/ \ud83d\ude00 \u0000","温度":"°C","t\u0073x":"\b\f\r\té\u00C9"}`,
			want: []Point{at(testNow,
				str("café", "line\nbreak \"q\" \\ / \U0001F600 \x00"), str("tsx", "\b\f\r\téÉ"), str("温度", "°C"))},
		},
		{
			name:    "escaped ts key",
			payload: `{"t\u0073":1000,"a":1}`,
			want:    []Point{at(unixMilli(1000), num("a", 1))},
		},
		{
			name:    "whitespace",
			payload: " \n\t{ \"a\" : 1 ,\r\n \"b\" :true,\"c\":{ } } \n",
			want:    []Point{at(testNow, num("a", 1), boolean("b", true))},
		},
		{
			name:    "object forced as JSON",
			payload: `{"v":1}`,
			format:  FormatJSON,
			want:    []Point{at(testNow, num("v", 1))},
		},
	})
}

func TestDecodeTimestamp(t *testing.T) {
	nov14 := time.Date(2023, 11, 14, 22, 13, 20, 0, time.UTC)
	runDecodeCases(t, []decodeCase{
		{name: "missing is now", payload: `{"a":1}`, want: []Point{at(testNow, num("a", 1))}},
		{name: "null is now", payload: `{"ts":null,"a":1}`, want: []Point{at(testNow, num("a", 1))}},
		{name: "rfc3339 utc", payload: `{"ts":"2023-11-14T22:13:20Z","a":1}`, want: []Point{at(nov14, num("a", 1))}},
		{name: "rfc3339 positive offset", payload: `{"ts":"2023-11-14T23:43:20+01:30","a":1}`, want: []Point{at(nov14, num("a", 1))}},
		{name: "rfc3339 negative offset", payload: `{"ts":"2023-11-14T17:13:20-05:00","a":1}`, want: []Point{at(nov14, num("a", 1))}},
		{
			name:    "rfc3339 fractional",
			payload: `{"ts":"2023-11-14T22:13:20.123456789Z","a":1}`,
			want:    []Point{at(nov14.Add(123456789), num("a", 1))},
		},
		{
			name:    "rfc3339 fractional with offset",
			payload: `{"ts":"2023-11-15T00:13:20.5+02:00","a":1}`,
			want:    []Point{at(nov14.Add(500*time.Millisecond), num("a", 1))},
		},
		{name: "unix ms", payload: `{"ts":1700000000000,"a":1}`, want: []Point{at(nov14, num("a", 1))}},
		{name: "unix ms half", payload: `{"ts":1700000000000.5,"a":1}`, want: []Point{at(nov14.Add(500*time.Microsecond), num("a", 1))}},
		{name: "unix ms exact decimals", payload: `{"ts":1700000000000.123,"a":1}`, want: []Point{at(nov14.Add(123*time.Microsecond), num("a", 1))}},
		{name: "unix ms below a nanosecond truncated", payload: `{"ts":1700000000000.0000009,"a":1}`, want: []Point{at(nov14, num("a", 1))}},
		{name: "unix ms exponent", payload: `{"ts":1.7e12,"a":1}`, want: []Point{at(nov14, num("a", 1))}},
		{name: "unix ms exponent fraction", payload: `{"ts":17000000000001E-1,"a":1}`, want: []Point{at(nov14.Add(100*time.Microsecond), num("a", 1))}},
		{name: "epoch", payload: `{"ts":0,"a":1}`, want: []Point{at(unix(0, 0), num("a", 1))}},
		{name: "last allowed", payload: `{"ts":7258118400000,"a":1}`, want: []Point{at(maxTime, num("a", 1))}},
		{name: "last ts wins", payload: `{"ts":1,"a":1,"ts":2}`, want: []Point{at(unixMilli(2), num("a", 1))}},
	})
}

func TestDecodeBatch(t *testing.T) {
	runDecodeCases(t, []decodeCase{
		{
			name:    "points in order",
			payload: `[{"ts":1700000001000,"a":1},{"ts":1700000000000,"a":2,"b":"x"}]`,
			want: []Point{
				at(unixMilli(1700000001000), num("a", 1)),
				at(unixMilli(1700000000000), num("a", 2), str("b", "x")),
			},
		},
		{
			name:    "points without ts are now",
			payload: ` [ {"a":1} , {"b":{"c":false}} ] `,
			want:    []Point{at(testNow, num("a", 1)), at(testNow, boolean("b.c", false))},
		},
		{
			name:    "same time not merged",
			payload: `[{"ts":5,"a":1},{"ts":5,"a":2}]`,
			want:    []Point{at(unixMilli(5), num("a", 1)), at(unixMilli(5), num("a", 2))},
		},
		{
			name:    "ts makes it a batch",
			payload: `[{"n":"a","v":1,"ts":3}]`,
			want:    []Point{at(unixMilli(3), str("n", "a"), num("v", 1))},
		},
		{
			name:    "no SenML key makes it a batch",
			payload: `[{"u":"Cel","x":1}]`,
			want:    []Point{at(testNow, str("u", "Cel"), num("x", 1))},
		},
		{
			name:    "forced JSON",
			payload: `[{"n":"a","v":1}]`,
			format:  FormatJSON,
			want:    []Point{at(testNow, str("n", "a"), num("v", 1))},
		},
	})
}

func TestDecodeErrors(t *testing.T) {
	small := Limits{MaxPoints: 2, MaxFields: 2, MaxNameLen: 5, MaxStringLen: 3}
	cases := []struct {
		name    string
		payload string
		format  Format
		lim     Limits
		reason  string // a part of the reason
	}{
		// Not a payload at all.
		{name: "empty", payload: ``, reason: "empty payload"},
		{name: "blank", payload: " \n\t ", reason: "empty payload"},
		{name: "unknown format", payload: `{"a":1}`, format: 3, reason: "unknown format 3"},
		{name: "top-level number", payload: `42`, reason: "must be a JSON object or array, found a number"},
		{name: "top-level string", payload: `"a"`, reason: "found a string"},
		{name: "top-level true", payload: `true`, reason: "found a boolean"},
		{name: "top-level garbage", payload: `<xml/>`, reason: "invalid JSON at offset 0"},
		{name: "byte order mark", payload: "\xef\xbb\xbf{\"a\":1}", reason: "invalid JSON at offset 0"},

		// Invalid JSON.
		{name: "unterminated object", payload: `{"a":1`, reason: "invalid JSON at offset 6: unexpected end of input"},
		{name: "missing value", payload: `{"a":}`, reason: "invalid JSON at offset 5: expected a value"},
		{name: "unquoted key", payload: `{a:1}`, reason: "invalid JSON at offset 1"},
		{name: "missing colon", payload: `{"a" 1}`, reason: "invalid JSON at offset 5: expected ':'"},
		{name: "trailing comma", payload: `{"a":1,}`, reason: "invalid JSON at offset 7"},
		{name: "trailing comma in batch", payload: `[{"a":1},]`, reason: "invalid JSON at offset 9"},
		{name: "leading zero", payload: `{"a":01}`, reason: "invalid JSON at offset 6"},
		{name: "bare point", payload: `{"a":1.}`, reason: "no digits after '.'"},
		{name: "bare exponent", payload: `{"a":1e}`, reason: "no digits in exponent"},
		{name: "plus sign", payload: `{"a":+1}`, reason: "invalid JSON at offset 5"},
		{name: "bad literal", payload: `{"a":tru}`, reason: "invalid literal, expected true"},
		{name: "raw control character", payload: "{\"a\":\"x\x01\"}", reason: "control character in string"},
		{name: "invalid escape", payload: `{"a":"\q"}`, reason: "invalid escape"},
		{name: "short unicode escape", payload: `{"a":"\u12"}`, reason: `invalid \u escape`},
		{name: "lone high surrogate", payload: `{"a":"\ud83d"}`, reason: "invalid UTF-16 surrogate"},
		{name: "lone low surrogate", payload: `{"a":"\ude00x"}`, reason: "invalid UTF-16 surrogate"},
		{name: "invalid UTF-8", payload: "{\"a\":\"\xff\"}", reason: "invalid UTF-8"},
		{name: "invalid UTF-8 after escape", payload: "{\"a\":\"\\n\xc3\"}", reason: "invalid UTF-8"},
		{name: "unterminated string", payload: `{"a":"x`, reason: "unexpected end of input"},
		{name: "unterminated escaped string", payload: `{"a":"\n`, reason: "unexpected end of input"},
		{name: "unterminated escape", payload: `{"a":"\`, reason: "invalid JSON at offset 6: unterminated string"},
		{name: "unterminated unicode escape", payload: `{"a":"\u1`, reason: `invalid \u escape`},
		{name: "bad hex in unicode escape", payload: `{"a":"\u12g4"}`, reason: `invalid \u escape`},
		{name: "raw control character after escape", payload: "{\"a\":\"\\n\x1f\"}", reason: "control character in string"},
		{name: "bad escape in key", payload: `{"\q":1}`, reason: "invalid escape"},
		{name: "bad false", payload: `{"a":fals}`, reason: "expected false"},
		{name: "bad null", payload: `{"a":nul}`, reason: "expected null"},
		{name: "missing comma in batch", payload: `[{"a":1} {"b":1}]`, reason: "expected ',' or ']'"},
		{name: "missing comma", payload: `{"a":1 "b":1}`, reason: "expected ',' or '}'"},
		{name: "bad ts string", payload: `{"ts":"\x","a":1}`, reason: "invalid escape"},
		{name: "bad ts number", payload: `{"ts":-,"a":1}`, reason: "invalid number"},
		{name: "bad ts literal", payload: `{"ts":nope,"a":1}`, reason: "expected null"},
		{name: "garbage ts", payload: `{"ts":x,"a":1}`, reason: "invalid JSON at offset 6"},
		{name: "trailing garbage", payload: `{"a":1} x`, reason: "invalid JSON at offset 8: unexpected data after the top-level value"},
		{name: "two objects", payload: `{"a":1}{"b":2}`, reason: "unexpected data after the top-level value"},
		{name: "trailing garbage after batch", payload: `[{"a":1}]]`, reason: "unexpected data after"},
		{name: "invalid JSON inside an array value", payload: `{"a":[1,}`, reason: "invalid JSON"},

		// Points and fields.
		{name: "no fields", payload: `{}`, reason: "no fields"},
		{name: "only ts", payload: `{"ts":1}`, reason: "no fields"},
		{name: "only nulls", payload: `{"a":null,"b":{}}`, reason: "no fields"},
		{name: "array value", payload: `{"a":1,"temp":[1,2]}`, reason: `field "temp": arrays are not supported`},
		{name: "nested array value", payload: `{"gps":{"fix":[]}}`, reason: `field "gps.fix": arrays are not supported`},
		{name: "empty batch", payload: `[]`, reason: "empty batch"},
		{name: "empty batch forced", payload: ` [ ] `, format: FormatJSON, reason: "empty batch"},
		{name: "batch element not an object", payload: `[{"a":1},"x"]`, reason: "point 1: expected an object, found a string"},
		{name: "batch element array", payload: `[[{"a":1}]]`, reason: "point 0: expected an object, found an array"},
		{name: "no fields in batch", payload: `[{"a":1},{"ts":1}]`, reason: "point 1: no fields"},
		{name: "number out of range", payload: `{"a":1e400}`, reason: `field "a": number 1e400 out of range`},
		{name: "negative number out of range", payload: `{"a":-1e400}`, reason: "out of range"},
		{name: "nested too deep", payload: strings.Repeat(`{"a":`, 40) + "1" + strings.Repeat("}", 40), reason: "nested more than 32 deep"},

		// Names.
		{name: "empty name", payload: `{"":1}`, reason: "empty field name"},
		{name: "empty nested name", payload: `{"gps":{"":1}}`, reason: `empty key in object "gps"`},
		{name: "control character in name", payload: `{"a\u0001":1}`, reason: `field "a\x01": name contains a control character`},
		{name: "DEL in name", payload: "{\"a\x7f\":1}", reason: "control character"},
		{name: "C1 control in name", payload: `{"a\u0085":1}`, reason: "control character"},
		{name: "newline in nested name", payload: `{"a":{"b\n":1}}`, reason: `field "a.b\n": name contains a control character`},
		{name: "name too long", payload: `{"abcdef":1}`, lim: small, reason: `field "abcdef": name longer than 5 bytes`},
		{name: "flattened name too long", payload: `{"abc":{"de":1}}`, lim: small, reason: `field "abc.de": name longer than 5 bytes`},
		{name: "default name limit", payload: `{"` + strings.Repeat("x", 129) + `":1}`, reason: "name longer than 128 bytes"},

		// Limits.
		{name: "string too long", payload: `{"a":"abcd"}`, lim: small, reason: `field "a": string longer than 3 bytes`},
		{name: "escaped string too long", payload: `{"a":"\u00e9\u00e9"}`, lim: small, reason: "string longer than 3 bytes"},
		{name: "too many fields", payload: `{"a":1,"b":2,"c":3}`, lim: small, reason: "3 fields, more than 2"},
		{name: "too many nested fields", payload: `{"a":{"b":1,"c":2},"d":3}`, lim: small, reason: "more than 2"},
		{name: "many repeated names", payload: `{"a":1,"b":1,"c":1,"a":1,"b":1,"d":1}`, lim: small, reason: "more than 2 fields"},
		{name: "too many points", payload: `[{"a":1},{"a":2},{"a":3}]`, lim: small, reason: "more than 2 points"},
		{name: "too many SenML points", payload: `[{"n":"a","v":1,"t":1},{"n":"a","v":1,"t":2},{"n":"a","v":1,"t":3}]`, lim: small, reason: "more than 2 points"},
		{name: "too many SenML fields", payload: `[{"n":"a","v":1},{"n":"b","v":1},{"n":"c","v":1}]`, lim: small, reason: "3 fields, more than 2"},
		{name: "too many SenML records", payload: `[{"n":"a","v":1},{"n":"a","v":2}]`, lim: Limits{MaxPoints: 1, MaxFields: 1}, reason: "more than 1 records"},
		{name: "SenML string too long", payload: `[{"n":"a","vs":"abcd"}]`, lim: small, reason: `record 0: "vs": string longer than 3 bytes`},
		{name: "SenML name too long", payload: `[{"n":"abcdef","v":1}]`, lim: small, reason: `record 0: field "abcdef": name longer than 5 bytes`},

		// Timestamps.
		{name: "ts bool", payload: `{"ts":true,"a":1}`, reason: `"ts" must be an RFC 3339 string or Unix milliseconds, found a boolean`},
		{name: "ts object", payload: `{"ts":{},"a":1}`, reason: "found an object"},
		{name: "ts array", payload: `[{"a":1},{"ts":[1],"a":1}]`, reason: `point 1: "ts" must be an RFC 3339 string or Unix milliseconds, found an array`},
		{name: "ts not a time", payload: `{"ts":"yesterday","a":1}`, reason: `"ts": "yesterday" is not an RFC 3339 time`},
		{name: "ts without zone", payload: `{"ts":"2023-11-14T22:13:20","a":1}`, reason: "is not an RFC 3339 time"},
		{name: "ts too long", payload: `{"ts":"` + strings.Repeat("9", 100) + `","a":1}`, reason: "is not an RFC 3339 time"},
		{name: "ts before 1970", payload: `{"ts":-1,"a":1}`, reason: `"ts": -1 is out of range`},
		{name: "ts rfc3339 before 1970", payload: `{"ts":"1969-12-31T23:59:59Z","a":1}`, reason: "out of range"},
		{name: "ts after 2200", payload: `{"ts":7258118400001,"a":1}`, reason: `"ts": 2200-01-01T00:00:00.001Z is out of range`},
		{name: "ts rfc3339 after 2200", payload: `{"ts":"2200-01-01T00:00:00.000000001Z","a":1}`, reason: "out of range"},
		{name: "ts huge", payload: `{"ts":1e30,"a":1}`, reason: "out of range"},

		// SenML.
		{name: "SenML object", payload: `{"n":"a","v":1}`, format: FormatSenML, reason: "SenML payload must be an array of records"},
		{name: "SenML number", payload: `1`, format: FormatSenML, reason: "found a number"},
		{name: "SenML empty", payload: `[]`, format: FormatSenML, reason: "empty SenML pack"},
		{name: "SenML record not object", payload: `[{"n":"a","v":1},2]`, reason: "record 1: expected an object, found a number"},
		{name: "SenML no name", payload: `[{"v":1}]`, format: FormatSenML, reason: "record 0: no name (n or bn)"},
		{name: "SenML no value", payload: `[{"n":"a","u":"Cel"}]`, reason: "record 0: no value"},
		{name: "SenML base value is not a value", payload: `[{"n":"a","bv":1}]`, reason: "no value"},
		{name: "SenML two values", payload: `[{"n":"a","v":1,"vs":"x"}]`, reason: "more than one value"},
		{name: "SenML v string", payload: `[{"n":"a","v":"1"}]`, reason: `record 0: "v" must be a number, found a string`},
		{name: "SenML v null", payload: `[{"n":"a","v":null}]`, reason: `"v" must be a number, found null`},
		{name: "SenML vb number", payload: `[{"n":"a","vb":1}]`, reason: `"vb" must be a boolean, found a number`},
		{name: "SenML vs bool", payload: `[{"n":"a","vs":true}]`, reason: `"vs" must be a string`},
		{name: "SenML n number", payload: `[{"n":1,"v":1}]`, reason: `"n" must be a string`},
		{name: "SenML bt string", payload: `[{"n":"a","v":1,"bt":"now"}]`, reason: `"bt" must be a number`},
		{name: "SenML u number", payload: `[{"n":"a","v":1,"u":1}]`, reason: `"u" must be a string`},
		{name: "SenML must understand", payload: `[{"n":"a","v":1,"foo_":1}]`, reason: `record 0: unsupported must-understand field "foo_"`},
		{name: "SenML later record must understand", payload: `[{"n":"a","v":1},{"n":"b","v":2,"x_":{}}]`, reason: "record 1: unsupported must-understand"},
		{name: "SenML newer version", payload: `[{"bver":11,"n":"a","v":1}]`, reason: "SenML version 11 is not supported"},
		{name: "SenML bad version", payload: `[{"bver":1.5,"n":"a","v":1}]`, reason: "not a version"},
		{name: "SenML time after 2200", payload: `[{"bt":1e10,"n":"a","v":1}]`, reason: "out of range"},
		{name: "SenML time overflow", payload: `[{"bt":1e20,"n":"a","v":1}]`, reason: `"bt": 1e20 is out of range`},
		{name: "SenML relative time before 1970", payload: `[{"n":"a","v":1,"t":-2e9}]`, reason: "out of range"},
		{name: "SenML sum of times overflows", payload: `[{"bt":9e9,"t":9e9,"n":"a","v":1}]`, reason: "time out of range"},
		{name: "SenML value overflow", payload: `[{"bv":1e308,"n":"a","v":1e308}]`, reason: "value out of range"},
		{name: "SenML control character in name", payload: `[{"n":"a\tb","v":1}]`, reason: "control character"},
		{name: "SenML garbage value", payload: `[{"n":x}]`, reason: "invalid JSON at offset 6"},
		{name: "SenML bad string", payload: `[{"n":"\x"}]`, reason: "invalid escape"},
		{name: "SenML bad number", payload: `[{"n":"a","v":-x}]`, reason: "invalid number"},
		{name: "SenML bad vb", payload: `[{"n":"a","vb":fals}]`, reason: "expected false"},
		{name: "SenML bad key", payload: `[{"n":"a",1:1}]`, reason: "expected a string for an object key"},
		{name: "SenML missing colon", payload: `[{"n" "a"}]`, reason: "expected ':'"},
		{name: "SenML missing comma", payload: `[{"n":"a" "v":1}]`, reason: "expected ',' or '}'"},
		{name: "SenML missing comma between records", payload: `[{"n":"a","v":1} {}]`, reason: "expected ',' or ']'"},
		{name: "SenML v out of range", payload: `[{"n":"a","v":2e308}]`, reason: `"v": 2e308 is out of range`},
		{name: "SenML empty record", payload: `[{"n":"a","v":1},{}]`, reason: "record 1: no name"},
		{name: "SenML invalid JSON in skipped value", payload: `[{"n":"a","v":1,"x":[1,]}]`, reason: "invalid JSON"},
		{name: "SenML skipped value too deep", payload: `[{"n":"a","v":1,"x":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}]`, reason: "nested more than 32 deep"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pts, err := Decode([]byte(tc.payload), tc.format, testNow, tc.lim)
			require.Nil(t, pts)
			var de *DecodeError
			require.ErrorAs(t, err, &de)
			require.Contains(t, de.Reason, tc.reason)
			require.Equal(t, "decode telemetry: "+de.Reason, err.Error())
		})
	}
}

func TestDecodeErrorReason(t *testing.T) {
	_, err := Decode([]byte(`[{"a":1},{"a":1},{"a":1},{"temp":[1]}]`), FormatAuto, testNow, DefaultLimits())
	var de *DecodeError
	require.ErrorAs(t, err, &de)
	require.Equal(t, `point 3: field "temp": arrays are not supported`, de.Reason)
	require.EqualError(t, err, `decode telemetry: point 3: field "temp": arrays are not supported`)
}

func TestDecodeLimits(t *testing.T) {
	require.Equal(t, Limits{MaxPoints: 10000, MaxFields: 256, MaxNameLen: 128, MaxStringLen: 4096}, DefaultLimits())

	t.Run("zero limits are the defaults", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("{")
		for i := range 256 {
			fmt.Fprintf(&b, `"f%d":%d,`, i, i)
		}
		b.WriteString(`"` + strings.Repeat("n", 128) + `":"` + strings.Repeat("s", 4096) + `"}`)
		_, err := Decode([]byte(b.String()), FormatAuto, testNow, Limits{})
		require.ErrorContains(t, err, "257 fields, more than 256")

		pts, err := Decode([]byte(strings.Replace(b.String(), `"f0":0,`, "", 1)), FormatAuto, testNow, Limits{})
		require.NoError(t, err)
		require.Len(t, pts[0].Fields, 256)
	})
	t.Run("repeated names count once", func(t *testing.T) {
		lim := Limits{MaxFields: 2}
		pts, err := Decode([]byte(`{"a":1,"b":2,"a":3,"b":4,"a":5,"b":6,"a":7}`), FormatAuto, testNow, lim)
		require.NoError(t, err)
		require.Equal(t, []Point{at(testNow, num("a", 7), num("b", 6))}, pts)
	})
	t.Run("exactly at the limits", func(t *testing.T) {
		lim := Limits{MaxPoints: 2, MaxFields: 2, MaxNameLen: 5, MaxStringLen: 3}
		pts, err := Decode([]byte(`[{"ab.cd":"xyz","é":1},{"a":1}]`), FormatAuto, testNow, lim)
		require.NoError(t, err)
		require.Equal(t, []Point{at(testNow, str("ab.cd", "xyz"), num("é", 1)), at(testNow, num("a", 1))}, pts)
	})
	t.Run("large values", func(t *testing.T) {
		big := strings.Repeat("é", 40000)
		payload := []byte(`{"a":"` + big + `","b":"\u00e9` + big + `"}`)
		pts, err := Decode(payload, FormatAuto, testNow, Limits{MaxStringLen: 1 << 20})
		require.NoError(t, err)
		require.Equal(t, []Point{at(testNow, str("a", big), str("b", "é"+big))}, pts)
	})
	t.Run("default points", func(t *testing.T) {
		batch := func(n int) []byte {
			return []byte("[" + strings.Repeat(`{"a":1},`, n-1) + `{"a":1}]`)
		}
		_, err := Decode(batch(10001), FormatAuto, testNow, Limits{})
		require.ErrorContains(t, err, "more than 10000 points")
		pts, err := Decode(batch(10000), FormatAuto, testNow, Limits{})
		require.NoError(t, err)
		require.Len(t, pts, 10000)
	})
}

func TestDecodeResultIsSafeToKeep(t *testing.T) {
	payload := []byte(`[{"b":"x","a":1},{"c":true}]`)
	orig := slices.Clone(payload)
	pts, err := Decode(payload, FormatAuto, testNow, DefaultLimits())
	require.NoError(t, err)
	require.Equal(t, orig, payload, "payload modified")

	// Appending to one point's fields does not touch the next point.
	for _, p := range pts {
		require.Equal(t, len(p.Fields), cap(p.Fields))
	}
	_ = append(pts[0].Fields, num("z", 9))
	require.Equal(t, []Field{boolean("c", true)}, pts[1].Fields)

	// Results do not alias the payload.
	clear(payload)
	require.Equal(t, []Point{at(testNow, num("a", 1), str("b", "x")), at(testNow, boolean("c", true))}, pts)
}

func TestDecodeConcurrent(t *testing.T) {
	payloads := []string{
		`{"ts":1700000000000,"temperature":21.5,"mode":"heat"}`,
		`[{"a":1},{"b":{"c":"d"}}]`,
		`[{"bn":"x","bt":1700000000,"n":"a","v":1},{"n":"b","vs":"s","t":1}]`,
	}
	want := make([][]Point, len(payloads))
	for i, p := range payloads {
		pts, err := Decode([]byte(p), FormatAuto, testNow, DefaultLimits())
		require.NoError(t, err)
		want[i] = pts
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []string
	)
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				k := (g + i) % len(payloads)
				got, err := Decode([]byte(payloads[k]), FormatAuto, testNow, DefaultLimits())
				if err != nil || !equalPoints(got, want[k]) {
					mu.Lock()
					errs = append(errs, fmt.Sprintf("payload %d: %v %v", k, got, err))
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	require.Empty(t, errs)
}

func equalPoints(a, b []Point) bool {
	return slices.EqualFunc(a, b, func(p, q Point) bool {
		return p.Time.Equal(q.Time) && slices.Equal(p.Fields, q.Fields)
	})
}

// fuzzNow is the receive time passed to Decode by FuzzDecode.
var fuzzNow = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// FuzzDecode checks invariants of Decode on arbitrary input. mode selects
// the format (mode%3) and, with its high bit, small limits.
func FuzzDecode(f *testing.F) {
	f.Fuzz(func(t *testing.T, payload []byte, mode uint8) {
		lim := DefaultLimits()
		if mode&0x80 != 0 {
			lim = Limits{MaxPoints: 3, MaxFields: 4, MaxNameLen: 8, MaxStringLen: 8}
		}
		orig := slices.Clone(payload)
		pts, err := Decode(payload, Format(mode%3), fuzzNow, lim)
		require.Equal(t, orig, payload, "payload modified")
		if err != nil {
			var de *DecodeError
			require.ErrorAs(t, err, &de)
			require.NotEmpty(t, de.Reason)
			require.Nil(t, pts)
			return
		}
		require.True(t, json.Valid(payload), "accepted invalid JSON")
		require.NotEmpty(t, pts)
		require.LessOrEqual(t, len(pts), lim.MaxPoints)
		for _, p := range pts {
			checkPoint(t, p, lim)
		}
		again, err := Decode(payload, Format(mode%3), fuzzNow, lim)
		require.NoError(t, err)
		require.True(t, equalPoints(pts, again), "not deterministic")
		if Format(mode%3) == FormatJSON {
			want, err := referenceDecode(payload)
			require.NoError(t, err)
			got := make([]map[string]Value, len(pts))
			for i, p := range pts {
				got[i] = make(map[string]Value, len(p.Fields))
				for _, f := range p.Fields {
					got[i][f.Name] = f.Value
				}
			}
			require.Equal(t, want, got, "differs from encoding/json")
		}
	})
}

// referenceDecode reads the fields of a JSON object, or of an array of
// them, with encoding/json, following Decode's rules for flattening, nulls
// and repeated names. It ignores "ts" and limits.
func referenceDecode(payload []byte) ([]map[string]Value, error) {
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var object func(fields map[string]Value, prefix string, top bool) error
	object = func(fields map[string]Value, prefix string, top bool) error {
		for dec.More() {
			key, err := dec.Token()
			if err != nil {
				return err
			}
			name := prefix + key.(string)
			val, err := dec.Token()
			if err != nil {
				return err
			}
			switch v := val.(type) {
			case json.Delim:
				if v != '{' {
					return fmt.Errorf("%s: unexpected %v", name, v)
				}
				if err := object(fields, name+".", false); err != nil {
					return err
				}
			case string:
				if !top || name != "ts" {
					fields[name] = String(v)
				}
			case json.Number:
				f, err := strconv.ParseFloat(string(v), 64)
				if err != nil {
					return err
				}
				if !top || name != "ts" {
					fields[name] = Number(f)
				}
			case bool:
				fields[name] = Bool(v)
			}
		}
		_, err := dec.Token() // '}'
		return err
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	var out []map[string]Value
	if tok == json.Delim('{') {
		out = append(out, map[string]Value{})
		return out, object(out[0], "", true)
	}
	for dec.More() {
		if _, err := dec.Token(); err != nil { // '{'
			return nil, err
		}
		out = append(out, map[string]Value{})
		if err := object(out[len(out)-1], "", true); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func checkPoint(t *testing.T, p Point, lim Limits) {
	t.Helper()
	require.Equal(t, time.UTC, p.Time.Location())
	require.False(t, p.Time.Before(minTime) || p.Time.After(maxTime), "time %v out of range", p.Time)
	require.NotEmpty(t, p.Fields)
	require.LessOrEqual(t, len(p.Fields), lim.MaxFields)
	require.Equal(t, len(p.Fields), cap(p.Fields))
	for i, f := range p.Fields {
		if i > 0 {
			require.Less(t, p.Fields[i-1].Name, f.Name, "fields not sorted or not unique")
		}
		require.NotEmpty(t, f.Name)
		require.LessOrEqual(t, len(f.Name), lim.MaxNameLen)
		require.True(t, utf8.ValidString(f.Name), "name %q", f.Name)
		require.False(t, strings.ContainsFunc(f.Name, unicode.IsControl), "name %q", f.Name)
		v := f.Value
		switch v.Kind {
		case KindNumber:
			require.False(t, math.IsInf(v.Num, 0) || math.IsNaN(v.Num), "number %v", v.Num)
			require.Equal(t, Number(v.Num), v)
		case KindBool:
			require.Equal(t, Bool(v.Bool), v)
		case KindString:
			require.LessOrEqual(t, len(v.Str), lim.MaxStringLen)
			require.True(t, utf8.ValidString(v.Str), "value %q", v.Str)
			require.Equal(t, String(v.Str), v)
		default:
			require.Failf(t, "invalid kind", "field %q has kind %d", f.Name, v.Kind)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	object := `{"ts":1700000000000,"temperature":21.5,"humidity":40.2,"mode":"heat"}`
	var batch strings.Builder
	batch.WriteString("[")
	for i := range 100 {
		if i > 0 {
			batch.WriteString(",")
		}
		fmt.Fprintf(&batch, `{"ts":%d,"temperature":%.1f,"humidity":%d,"mode":"heat"}`, 1700000000000+int64(i)*1000, 20+float64(i%50)/10, 40+i%20)
	}
	batch.WriteString("]")
	senML := `[{"bn":"urn:dev:1:","bt":1700000000,"n":"temperature","u":"Cel","v":21.5},{"n":"humidity","u":"%RH","v":40.2},{"n":"mode","vs":"heat"}]`

	for _, bc := range []struct{ name, payload string }{
		{"object", object},
		{"batch100", batch.String()},
		{"senml", senML},
	} {
		b.Run(bc.name, func(b *testing.B) {
			payload := []byte(bc.payload)
			b.SetBytes(int64(len(payload)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Decode(payload, FormatAuto, testNow, DefaultLimits()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
