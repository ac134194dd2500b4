package ingest

// The live stream's reading messages, encoded by hand into JSON (no
// reflection) once per reading, and only when a reader needs them.

import (
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/telehub/telehub/internal/live"
)

// LiveReading is a reading on the live stream (live.Message.Data). Its
// JSON body is encoded when a reader first needs it, once for all readers:
// with no dashboard open, ingest encodes nothing. Safe for concurrent use.
type LiveReading struct {
	Reading
	once sync.Once
	body []byte
}

var _ live.LazyBody = (*LiveReading)(nil)

// Body returns the live message body of the reading (ReadingBody).
func (r *LiveReading) Body() []byte {
	r.once.Do(func() { r.body = ReadingBody(nil, r.Reading) })
	return r.body
}

// ReadingBody encodes the live message of a reading, as the live stream
// sends it.
func ReadingBody(b []byte, r Reading) []byte {
	return readingBody(b, Device{ID: r.DeviceID, Type: r.DeviceType}, Point{Time: r.Time, Fields: r.Fields})
}

// readingBody encodes the live message of a reading:
// {"kind":"reading","device_id":..,"device_type":..,"ts":..,"fields":{..}}.
func readingBody(b []byte, dev Device, pt Point) []byte {
	b = append(b, `{"kind":"reading","device_id":`...)
	b = appendJSONString(b, dev.ID)
	b = append(b, `,"device_type":`...)
	b = appendJSONString(b, dev.Type)
	b = append(b, `,"ts":"`...)
	b = pt.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","fields":`...)
	b = AppendFieldsJSON(b, pt.Fields)
	return append(b, '}')
}

// AppendFieldsJSON appends fields as a JSON object.
func AppendFieldsJSON(b []byte, fs []Field) []byte {
	b = append(b, '{')
	for i, f := range fs {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, f.Name)
		b = append(b, ':')
		switch f.Value.Kind {
		case KindNumber:
			b = strconv.AppendFloat(b, f.Value.Num, 'g', -1, 64)
		case KindBool:
			b = strconv.AppendBool(b, f.Value.Bool)
		default:
			b = appendJSONString(b, f.Value.Str)
		}
	}
	return append(b, '}')
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string, escaping what JSON requires and
// the HTML-sensitive characters.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\t':
				b = append(b, '\\', 't')
			case '\r':
				b = append(b, '\\', 'r')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			if r == utf8.RuneError {
				b = append(b, `\ufffd`...)
			} else {
				b = append(b, `\u202`...)
				b = append(b, hexDigits[r&0xf])
			}
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
