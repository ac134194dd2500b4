package load

import (
	"bytes"
	"strconv"
	"time"
)

// SentField is the reading field that carries the publisher's clock at the
// moment of sending, in Unix microseconds, for end-to-end latency.
const SentField = "sent_us"

// Fields is how many fields AppendReading writes, sent_us included.
const Fields = 6

// AppendReading appends a thermostat-like reading as a JSON object:
//
//	{"ts":1732350000123,"temperature":21.37,"humidity":41.2,"battery":87,"seq":123,"sent_us":1732350000123456}
//
// ts is the reading's time in Unix milliseconds, seq the device's message
// number; temperature, humidity and battery vary slowly with seq so that
// values look like a real sensor's.
func AppendReading(b []byte, ts int64, seq uint64, sent time.Time) []byte {
	b = append(b, `{"ts":`...)
	b = strconv.AppendInt(b, ts, 10)
	b = append(b, `,"temperature":`...)
	b = strconv.AppendFloat(b, 19+float64(seq%600)/100, 'f', 2, 64)
	b = append(b, `,"humidity":`...)
	b = strconv.AppendFloat(b, 35+float64(seq%250)/10, 'f', 1, 64)
	b = append(b, `,"battery":`...)
	b = strconv.AppendInt(b, int64(100-seq/1000%100), 10)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"`+SentField+`":`...)
	b = strconv.AppendInt(b, sent.UnixMicro(), 10)
	return append(b, '}')
}

var sentKey = []byte(`"` + SentField + `":`)

// SentAt finds the sent_us field in a JSON document (a published payload or
// a live stream frame, where the hub may have written it as a float such as
// 1.732350000123456e+15) and returns it. It scans for the key rather than
// decoding the document, so that watchers stay cheap at high rates.
func SentAt(doc []byte) (time.Time, bool) {
	i := bytes.Index(doc, sentKey)
	if i < 0 {
		return time.Time{}, false
	}
	rest := doc[i+len(sentKey):]
	end := 0
	for end < len(rest) {
		c := rest[end]
		if c >= '0' && c <= '9' || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-' {
			end++
			continue
		}
		break
	}
	num := rest[:end]
	if v, err := strconv.ParseInt(string(num), 10, 64); err == nil {
		return time.UnixMicro(v), true
	}
	f, err := strconv.ParseFloat(string(num), 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.UnixMicro(int64(f)), true
}
