package ingest

import (
	"testing"
	"time"
)

func TestDecodeSenML(t *testing.T) {
	runDecodeCases(t, []decodeCase{
		{
			name: "records at one time merged",
			payload: `[{"bn":"urn:dev:1:","bt":1700000000,"bu":"Cel","bver":10,"n":"temp","u":"Cel","v":21.5},
				{"n":"hum","u":"%RH","v":40},{"n":"on","vb":true},{"n":"mode","vs":"heat"},{"n":"blob","vd":"aGk="}]`,
			want: []Point{at(unix(1700000000, 0),
				str("blob", "aGk="), num("hum", 40), str("mode", "heat"), boolean("on", true), num("temp", 21.5))},
		},
		{
			name:    "base value and base sum",
			payload: `[{"bv":10,"bs":100,"n":"a","v":1.5},{"n":"b","v":-2},{"n":"e","s":5},{"bv":0,"n":"c","v":3},{"n":"f","vb":false}]`,
			want:    []Point{at(testNow, num("a", 11.5), num("b", 8), num("c", 3), num("e", 105), boolean("f", false))},
		},
		{
			name:    "base applies to its own record whatever the key order",
			payload: `[{"n":"a","v":1,"bv":10,"t":5,"bt":1700000000}]`,
			want:    []Point{at(unix(1700000005, 0), num("a", 11))},
		},
		{
			name:    "value wins over sum",
			payload: `[{"n":"a","v":1,"s":5}]`,
			want:    []Point{at(testNow, num("a", 1))},
		},
		{
			name:    "relative time",
			payload: `[{"n":"a","v":1,"t":-10}]`,
			want:    []Point{at(testNow.Add(-10*time.Second), num("a", 1))},
		},
		{
			name:    "relative base time",
			payload: `[{"bt":-60,"n":"a","v":1},{"n":"a","v":2,"t":30.5}]`,
			want: []Point{
				at(testNow.Add(-60*time.Second), num("a", 1)),
				at(testNow.Add(-29500*time.Millisecond), num("a", 2)),
			},
		},
		{
			name:    "just below 2^28 is relative",
			payload: `[{"n":"a","v":1,"t":268435455}]`,
			want:    []Point{at(testNow.Add(268435455*time.Second), num("a", 1))},
		},
		{
			name:    "2^28 is absolute",
			payload: `[{"n":"a","v":1,"t":268435456}]`,
			want:    []Point{at(unix(268435456, 0), num("a", 1))},
		},
		{
			name:    "points in order of first appearance",
			payload: `[{"bt":1700000010,"n":"a","v":1},{"bt":1700000000,"n":"a","v":2},{"bt":1700000010,"n":"b","v":3},{"bt":1700000000,"t":10,"n":"c","v":4}]`,
			want: []Point{
				at(unix(1700000010, 0), num("a", 1), num("b", 3), num("c", 4)),
				at(unix(1700000000, 0), num("a", 2)),
			},
		},
		{
			name:    "same name and time last wins",
			payload: `[{"n":"a","v":1},{"n":"b","v":1},{"n":"a","vs":"x"}]`,
			want:    []Point{at(testNow, str("a", "x"), num("b", 1))},
		},
		{
			name:    "base name when no name",
			payload: `[{"bn":"temp","v":1},{"bn":"x","n":"","v":2}]`,
			want:    []Point{at(testNow, num("temp", 1), num("x", 2))},
		},
		{
			name:    "base name carried over",
			payload: `[{"bn":"dev","n":"a","v":1},{"v":2}]`,
			want:    []Point{at(testNow, num("a", 1), num("dev", 2))},
		},
		{
			name:    "unknown keys ignored",
			payload: `[{"n":"a","v":1,"foo":{"x":[1,{"y":null}],"z":"_"},"bar":"baz"}]`,
			want:    []Point{at(testNow, num("a", 1))},
		},
		{
			name:    "fractional base time exact",
			payload: `[{"bt":1700000000.123456789,"n":"a","v":1},{"bt":1.7e9,"t":0.001,"n":"b","v":2}]`,
			want: []Point{
				at(unix(1700000000, 123456789), num("a", 1)),
				at(unix(1700000000, 1000000), num("b", 2)),
			},
		},
		{
			name:    "detected by escaped key",
			payload: `[{"\u006e":"a","v":1}]`,
			want:    []Point{at(testNow, num("a", 1))},
		},
		{
			name:    "forced SenML",
			payload: `[{"n":"a","v":1,"ts":3}]`,
			format:  FormatSenML,
			want:    []Point{at(testNow, num("a", 1))},
		},
		{
			name:    "forced SenML with records without detection keys",
			payload: `[{"bu":"Cel","s":1,"bn":"x"}]`,
			format:  FormatSenML,
			want:    []Point{at(testNow, num("x", 1))},
		},
	})
}
