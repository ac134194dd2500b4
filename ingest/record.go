package ingest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/telehub/telehub/internal/wal"
)

// The log record of one publish: the readings of one device, in a compact
// binary form that is cheap to write on the publish path and to read back.
//
//	version 1 | device ID | device type | count | reading*
//	reading   = unix nanos (varint) | field count | field*
//	field     = name | kind (1 byte) | float64 LE, bool byte, or string
//
// Strings are a uvarint length followed by the bytes.
const recordVersion = 1

var errCorruptRecord = errors.New("ingest: corrupt log record")

// AppendRecord encodes the points of a device as one log record, appended to b.
func AppendRecord(b []byte, deviceID, deviceType string, pts []Point) []byte {
	b = append(b, recordVersion)
	b = appendString(b, deviceID)
	b = appendString(b, deviceType)
	b = binary.AppendUvarint(b, uint64(len(pts)))
	for _, p := range pts {
		b = binary.AppendVarint(b, p.Time.UnixNano())
		b = binary.AppendUvarint(b, uint64(len(p.Fields)))
		for _, f := range p.Fields {
			b = appendString(b, f.Name)
			b = append(b, byte(f.Value.Kind))
			switch f.Value.Kind {
			case KindNumber:
				b = binary.LittleEndian.AppendUint64(b, math.Float64bits(f.Value.Num))
			case KindBool:
				if f.Value.Bool {
					b = append(b, 1)
				} else {
					b = append(b, 0)
				}
			default:
				b = appendString(b, f.Value.Str)
			}
		}
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// RecordCount returns how many readings a log record holds, reading only
// its header.
func RecordCount(b []byte) int {
	d := recDecoder{b: b}
	if d.byte() != recordVersion {
		return 0
	}
	d.string()
	d.string()
	n := d.uvarint()
	if d.err != nil {
		return 0
	}
	return int(n)
}

// CountPending counts the readings in the log from offset on: the backlog
// a consumer at offset has yet to move.
func CountPending(l *wal.Log, offset uint64) (int64, error) {
	r := l.ReadFrom(offset)
	defer r.Close()
	var n int64
	for r.Available() {
		recs, _, err := r.Read(1024)
		if err != nil {
			return n, err
		}
		for _, rec := range recs {
			n += int64(RecordCount(rec))
		}
	}
	return n, nil
}

// DecodeRecord appends the readings of a log record to rs.
func DecodeRecord(rs []Reading, b []byte) ([]Reading, error) {
	d := recDecoder{b: b}
	if d.byte() != recordVersion {
		return rs, fmt.Errorf("%w: unknown version", errCorruptRecord)
	}
	id, typ := d.string(), d.string()
	n := d.uvarint()
	if d.err != nil || n > uint64(len(b)) {
		return rs, errCorruptRecord
	}
	for range n {
		r := Reading{DeviceID: id, DeviceType: typ, Time: time.Unix(0, d.varint()).UTC()}
		nf := d.uvarint()
		if d.err != nil || nf > uint64(len(b)) {
			return rs, errCorruptRecord
		}
		r.Fields = make([]Field, 0, nf)
		for range nf {
			f := Field{Name: d.string()}
			f.Value.Kind = Kind(d.byte())
			switch f.Value.Kind {
			case KindNumber:
				f.Value.Num = math.Float64frombits(d.uint64())
			case KindBool:
				f.Value.Bool = d.byte() == 1
			case KindString:
				f.Value.Str = d.string()
			default:
				d.err = errCorruptRecord
			}
			r.Fields = append(r.Fields, f)
		}
		if d.err != nil {
			return rs, d.err
		}
		rs = append(rs, r)
	}
	return rs, d.err
}

type recDecoder struct {
	b   []byte
	err error
}

func (d *recDecoder) fail() { d.err, d.b = errCorruptRecord, nil }

func (d *recDecoder) byte() byte {
	if len(d.b) < 1 {
		d.fail()
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *recDecoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *recDecoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *recDecoder) uint64() uint64 {
	if len(d.b) < 8 {
		d.fail()
		return 0
	}
	v := binary.LittleEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *recDecoder) string() string {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}
