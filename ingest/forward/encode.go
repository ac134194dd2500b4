package forward

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/telehub/telehub/ingest"
)

// appendPayload encodes the readings of one log record (one device) as the
// hub's own telemetry format, so that any Telehub, and any consumer that
// reads that format, takes it as it is: a JSON object of fields with "ts"
// for one reading, an array of such objects for several. The timestamp is
// RFC 3339 with nanoseconds, the exact time the edge stored, so that a
// reading sent twice lands on the same point upstream.
func appendPayload(b []byte, rs []ingest.Reading) []byte {
	if len(rs) != 1 {
		b = append(b, '[')
	}
	for i, r := range rs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"ts":"`...)
		b = r.Time.UTC().AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
		for _, f := range r.Fields {
			b = append(b, ',')
			b = appendString(b, f.Name)
			b = append(b, ':')
			switch f.Value.Kind {
			case ingest.KindNumber:
				b = strconv.AppendFloat(b, f.Value.Num, 'g', -1, 64)
			case ingest.KindBool:
				b = strconv.AppendBool(b, f.Value.Bool)
			default:
				b = appendString(b, f.Value.Str)
			}
		}
		b = append(b, '}')
	}
	if len(rs) != 1 {
		b = append(b, ']')
	}
	return b
}

// appendString appends s as a JSON string.
func appendString(b []byte, s string) []byte {
	q, err := json.Marshal(s)
	if err != nil { // cannot happen for a string
		return append(b, `""`...)
	}
	return append(b, q...)
}
