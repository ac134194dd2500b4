// Package ingest decodes device telemetry, makes it durable in the durable
// log (internal/wal) and publishes it to the live stream, then moves it
// from the log to storage (Writer). It owns the
// storage contract, Sink and History; its implementations sit beside it,
// one folder each: ingest/influx (InfluxDB) and ingest/store (the embedded
// store).
package ingest

import "time"

// Kind is the type of a field value. The type a device sent is kept: numbers
// are stored as floats, booleans as booleans and strings as strings.
type Kind uint8

// Kinds of field values.
const (
	KindNumber Kind = iota + 1
	KindBool
	KindString
)

// Value is one field value. Only the member selected by Kind is meaningful.
type Value struct {
	Kind Kind
	Num  float64
	Bool bool
	Str  string
}

// Number returns a numeric value.
func Number(f float64) Value { return Value{Kind: KindNumber, Num: f} }

// Bool returns a boolean value.
func Bool(b bool) Value { return Value{Kind: KindBool, Bool: b} }

// String returns a string value.
func String(s string) Value { return Value{Kind: KindString, Str: s} }

// Any returns the value as float64, bool or string, for JSON encoding.
func (v Value) Any() any {
	switch v.Kind {
	case KindNumber:
		return v.Num
	case KindBool:
		return v.Bool
	default:
		return v.Str
	}
}

// Field is one named value of a reading.
type Field struct {
	Name  string
	Value Value
}

// Point is what a device sent for one instant: a time and its fields, before
// the hub has attached the device's identity.
type Point struct {
	Time   time.Time
	Fields []Field
}

// Reading is a point of a known device: the unit that is logged, stored and
// streamed.
type Reading struct {
	DeviceID   string
	DeviceType string
	Time       time.Time
	Fields     []Field
}
