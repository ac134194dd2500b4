package ingest

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Format selects how a payload is read. FormatAuto detects the form.
type Format uint8

// Payload formats.
const (
	// FormatAuto reads a JSON object as one point, an array whose first
	// element looks like a SenML record as SenML, and any other array as a
	// batch of points.
	FormatAuto Format = iota
	// FormatJSON reads a JSON object of fields, or an array of them.
	FormatJSON
	// FormatSenML reads SenML JSON (RFC 8428).
	FormatSenML
)

// Limits bound what one payload may contain. A field that is zero or
// negative takes its value from DefaultLimits.
type Limits struct {
	// MaxPoints is the most points one payload may yield.
	MaxPoints int
	// MaxFields is the most distinct fields one point may have.
	MaxFields int
	// MaxNameLen is the longest field name, in bytes, after flattening.
	MaxNameLen int
	// MaxStringLen is the longest string value, in bytes, after unescaping.
	MaxStringLen int
}

// DefaultLimits returns the limits used for device payloads.
func DefaultLimits() Limits {
	return Limits{MaxPoints: 10000, MaxFields: 256, MaxNameLen: 128, MaxStringLen: 4096}
}

func (l Limits) withDefaults() Limits {
	def := DefaultLimits()
	if l.MaxPoints <= 0 {
		l.MaxPoints = def.MaxPoints
	}
	if l.MaxFields <= 0 {
		l.MaxFields = def.MaxFields
	}
	if l.MaxNameLen <= 0 {
		l.MaxNameLen = def.MaxNameLen
	}
	if l.MaxStringLen <= 0 {
		l.MaxStringLen = def.MaxStringLen
	}
	return l
}

// DecodeError says why a payload was refused. Decode returns no other error
// type.
type DecodeError struct {
	// Reason says what is wrong and where, for example
	// `point 3: field "temp": arrays are not supported`.
	Reason string
}

// Error returns the reason prefixed with "decode telemetry: ".
func (e *DecodeError) Error() string { return "decode telemetry: " + e.Reason }

const (
	// maxDepth bounds the nesting of objects, in fields and in skipped
	// SenML extension values.
	maxDepth = 32
	// relativeLimit is the SenML time, in nanoseconds, below which a
	// resolved time is relative to now (RFC 8428 section 4.5.3).
	relativeLimit = int64(1<<28) * int64(time.Second)
	// senMLVersion is the highest SenML version understood.
	senMLVersion = 10
	// maxQuoted is how much of a name or value an error message quotes.
	maxQuoted = 64
	// maxTimeLen bounds an RFC 3339 timestamp string.
	maxTimeLen = 64
)

var (
	minTime = time.Unix(0, 0).UTC()
	maxTime = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)
)

// Decode parses a telemetry payload into points. now is the receive time,
// used when a point has no timestamp. All times are returned in UTC. Each
// point has at least one field, its fields are sorted by name and unique,
// and its Fields slice has no spare capacity, so appending to it copies.
//
// A JSON object is one point: its members are fields, nested objects are
// flattened with "." ({"gps":{"lat":1}} is the field "gps.lat"), null
// members are skipped, and the top-level member "ts" is the time, as an RFC
// 3339 string or Unix milliseconds. A JSON array of such objects is a batch.
// SenML records (RFC 8428) become fields named by "n", or by "bn" when "n"
// is empty, and records with the same resolved time share a point. When
// names repeat within a point, the last one wins.
//
// Every error is a *DecodeError. Decode never panics, does not modify or
// retain payload, and is safe for concurrent use.
func Decode(payload []byte, f Format, now time.Time, lim Limits) ([]Point, error) {
	d := decoders.Get().(*decoder)
	d.reset(payload, now, lim)
	pts, err := d.decode(f)
	d.release()
	return pts, err
}

// decoders holds decoders with their scratch buffers for reuse. Nothing
// Decode returns refers to them.
var decoders = sync.Pool{New: func() any { return new(decoder) }}

// maxPooled bounds the scratch space, in bytes or fields, a pooled decoder
// keeps after a large payload.
const maxPooled = 1 << 16

// span locates bytes in the decoder's arena.
type span struct{ off, end int }

// rawField is a field whose name and string value still live in the arena.
type rawField struct {
	name  span
	str   span
	num   float64
	point int32
	kind  Kind
	b     bool
}

// decoder holds the state of one Decode call. Field names and string values
// are collected in one arena that becomes a single string at the end, so a
// payload costs three allocations however many fields it has.
type decoder struct {
	buf []byte
	pos int
	lim Limits
	now time.Time

	// what names the unit errors are reported in: "" for a single object,
	// "point" for a batch, "record" for SenML; index is its position.
	what  string
	index int

	str   []byte // unescaped string, valid until the next readString
	name  []byte // field name being built
	arena []byte // field names and string values
	raw   []rawField
	times []time.Time // time of each point
	start int         // first raw field of the point being read

	// SenML state.
	bn     []byte
	n      []byte
	bt     int64
	bv, bs float64
	last   int32
	byTime map[int64]int32
}

func (d *decoder) reset(payload []byte, now time.Time, lim Limits) {
	*d = decoder{
		buf:   payload,
		lim:   lim.withDefaults(),
		now:   now.UTC(),
		str:   d.str[:0],
		name:  d.name[:0],
		arena: d.arena[:0],
		raw:   d.raw[:0],
		times: d.times[:0],
		bn:    d.bn[:0],
		n:     d.n[:0],
	}
}

// release returns d to the pool unless its buffers have grown too large.
func (d *decoder) release() {
	if cap(d.str) > maxPooled || cap(d.arena) > maxPooled || cap(d.raw) > maxPooled || cap(d.times) > maxPooled {
		return
	}
	d.buf = nil
	decoders.Put(d)
}

func (d *decoder) decode(f Format) ([]Point, error) {
	if f > FormatSenML {
		return nil, &DecodeError{Reason: fmt.Sprintf("unknown format %d", f)}
	}
	d.skipWS()
	if d.pos == len(d.buf) {
		return nil, &DecodeError{Reason: "empty payload"}
	}
	var err error
	switch c := d.buf[d.pos]; {
	case c == '{' && f != FormatSenML:
		err = d.point()
	case c == '[' && (f == FormatSenML || f == FormatAuto && d.looksSenML()):
		err = d.senML()
	case c == '[' && f != FormatSenML:
		err = d.batch()
	case c == '{':
		err = &DecodeError{Reason: "SenML payload must be an array of records, found an object"}
	default:
		err = d.topLevelErr()
	}
	if err != nil {
		return nil, err
	}
	d.skipWS()
	if d.pos != len(d.buf) {
		return nil, d.syntaxErr("unexpected data after the top-level value")
	}
	return d.assemble(), nil
}

func (d *decoder) topLevelErr() error {
	if found := d.found(); found != "" {
		return &DecodeError{Reason: "payload must be a JSON object or array, found " + found}
	}
	return d.syntaxErr(fmt.Sprintf("invalid character %q looking for the beginning of a value", d.buf[d.pos]))
}

// assemble turns the raw fields, grouped by point in order, sorted by name
// and free of duplicates within each point, into points.
func (d *decoder) assemble() []Point {
	arena := string(d.arena)
	fields := make([]Field, len(d.raw))
	pts := make([]Point, len(d.times))
	for i, t := range d.times {
		pts[i].Time = t
	}
	start := 0
	for i := range d.raw {
		r := &d.raw[i]
		f := &fields[i]
		f.Name = arena[r.name.off:r.name.end]
		f.Value.Kind = r.kind
		switch r.kind {
		case KindNumber:
			f.Value.Num = r.num
		case KindBool:
			f.Value.Bool = r.b
		case KindString:
			f.Value.Str = arena[r.str.off:r.str.end]
		}
		if i+1 == len(d.raw) || d.raw[i+1].point != r.point {
			pts[r.point].Fields = fields[start : i+1 : i+1]
			start = i + 1
		}
	}
	return pts
}

// Objects of fields (forms 1 and 2).

// batch reads an array of objects, one point each.
func (d *decoder) batch() error {
	d.what = "point"
	err := d.array(func() error {
		d.index = len(d.times)
		if d.index >= d.lim.MaxPoints {
			return &DecodeError{Reason: fmt.Sprintf("more than %d points", d.lim.MaxPoints)}
		}
		if d.peek() != '{' {
			return d.expected("an object")
		}
		return d.point()
	})
	if err == nil && len(d.times) == 0 {
		return &DecodeError{Reason: "empty batch"}
	}
	return err
}

// point reads the object at d.pos as one point.
func (d *decoder) point() error {
	d.start = len(d.raw)
	d.name = d.name[:0]
	ts := d.now
	if err := d.members(0, &ts); err != nil {
		return err
	}
	n := d.compact()
	if n == 0 {
		return d.pointErr("no fields")
	}
	if n > d.lim.MaxFields {
		return d.pointErr(fmt.Sprintf("%d fields, more than %d", n, d.lim.MaxFields))
	}
	d.times = append(d.times, ts)
	return nil
}

// members reads the object at d.pos; ts is non-nil at the top level, where
// "ts" is the time. Field names are d.name followed by the member's key.
func (d *decoder) members(depth int, ts *time.Time) error {
	prefix := len(d.name)
	return d.object(func(key []byte) error {
		if ts != nil && string(key) == "ts" {
			return d.timestamp(ts)
		}
		d.name = append(d.name[:prefix], key...)
		if err := d.checkKey(key, prefix); err != nil {
			return err
		}
		return d.member(depth)
	})
}

// checkKey checks one key of a field name; the full name is in d.name and
// the key starts at prefix.
func (d *decoder) checkKey(key []byte, prefix int) error {
	if len(key) == 0 {
		if prefix == 0 {
			return d.pointErr("empty field name")
		}
		return d.pointErr(fmt.Sprintf("empty key in object %q", clip(d.name[:prefix-1])))
	}
	if len(d.name) > d.lim.MaxNameLen {
		return d.fieldErr(fmt.Sprintf("name longer than %d bytes", d.lim.MaxNameLen))
	}
	if hasControl(key) {
		return d.fieldErr("name contains a control character")
	}
	return nil
}

// member reads the value of the field named d.name.
func (d *decoder) member(depth int) error {
	switch c := d.peek(); {
	case c == '{':
		if depth+1 >= maxDepth {
			return d.fieldErr(fmt.Sprintf("objects nested more than %d deep", maxDepth))
		}
		d.name = append(d.name, '.')
		return d.members(depth+1, nil)
	case c == '[':
		if err := d.skipValue(depth); err != nil {
			return err
		}
		return d.fieldErr("arrays are not supported")
	case c == '"':
		s, err := d.readString()
		if err != nil {
			return err
		}
		if len(s) > d.lim.MaxStringLen {
			return d.fieldErr(fmt.Sprintf("string longer than %d bytes", d.lim.MaxStringLen))
		}
		return d.addField(rawField{kind: KindString, str: d.put(s)})
	case c == 't':
		if err := d.literal("true"); err != nil {
			return err
		}
		return d.addField(rawField{kind: KindBool, b: true})
	case c == 'f':
		if err := d.literal("false"); err != nil {
			return err
		}
		return d.addField(rawField{kind: KindBool})
	case c == 'n':
		return d.literal("null")
	case c == '-' || isDigit(c):
		f, err := d.number()
		if err != nil {
			return err
		}
		return d.addField(rawField{kind: KindNumber, num: f})
	default:
		return d.syntaxErr("expected a value")
	}
}

// addField adds r, named d.name, to the current point.
func (d *decoder) addField(r rawField) error {
	r.point = int32(len(d.times))
	r.name = d.put(d.name)
	d.raw = append(d.raw, r)
	// Repeated names are only dropped when the point is complete; compact
	// early so that a flood of them stays bounded.
	if len(d.raw)-d.start-d.lim.MaxFields > d.lim.MaxFields {
		if n := d.compact(); n > d.lim.MaxFields {
			return d.pointErr(fmt.Sprintf("more than %d fields", d.lim.MaxFields))
		}
	}
	return nil
}

// compact sorts the fields of the current point by name, keeps the last
// of each name and returns how many are left.
func (d *decoder) compact() int {
	fs := d.raw[d.start:]
	slices.SortStableFunc(fs, d.byName)
	n := d.dedupe(fs)
	d.raw = d.raw[:d.start+n]
	return n
}

func (d *decoder) byName(a, b rawField) int {
	return bytes.Compare(d.arena[a.name.off:a.name.end], d.arena[b.name.off:b.name.end])
}

func (d *decoder) byPointName(a, b rawField) int {
	if c := cmp.Compare(a.point, b.point); c != 0 {
		return c
	}
	return d.byName(a, b)
}

// dedupe keeps the last of each run of fields with the same point and name
// in the sorted fs and returns how many are left at its front.
func (d *decoder) dedupe(fs []rawField) int {
	w := 0
	for i := range fs {
		if w > 0 && fs[w-1].point == fs[i].point && d.byName(fs[w-1], fs[i]) == 0 {
			fs[w-1] = fs[i]
			continue
		}
		fs[w] = fs[i]
		w++
	}
	return w
}

// timestamp reads the value of "ts" into ts; null leaves it unchanged.
func (d *decoder) timestamp(ts *time.Time) error {
	var t time.Time
	switch c := d.peek(); {
	case c == '"':
		s, err := d.readString()
		if err != nil {
			return err
		}
		ok := len(s) <= maxTimeLen
		if ok {
			t, err = time.Parse(time.RFC3339Nano, string(s))
			ok = err == nil
		}
		if !ok {
			return d.pointErr(fmt.Sprintf(`"ts": %q is not an RFC 3339 time`, clip(s)))
		}
		t = t.UTC()
	case c == '-' || isDigit(c):
		lit, err := d.readNumber()
		if err != nil {
			return err
		}
		ns, ok := scaled(lit, 6)
		if !ok || ns < 0 {
			return d.pointErr(fmt.Sprintf(`"ts": %s is out of range`, clip(lit)))
		}
		t = time.Unix(0, ns).UTC()
	case c == 'n':
		return d.literal("null")
	default:
		return d.wrongType(`"ts"`, "an RFC 3339 string or Unix milliseconds")
	}
	if t.Before(minTime) || t.After(maxTime) {
		return d.pointErr(fmt.Sprintf(`"ts": %s is out of range`, t.Format(time.RFC3339Nano)))
	}
	*ts = t
	return nil
}

// Errors.

func (d *decoder) syntaxErr(msg string) error {
	if d.pos >= len(d.buf) {
		msg = "unexpected end of input"
	}
	return &DecodeError{Reason: fmt.Sprintf("invalid JSON at offset %d: %s", d.pos, msg)}
}

// pointErr reports reason in the point or record being read.
func (d *decoder) pointErr(reason string) error {
	if d.what == "" {
		return &DecodeError{Reason: reason}
	}
	return &DecodeError{Reason: fmt.Sprintf("%s %d: %s", d.what, d.index, reason)}
}

// fieldErr reports reason for the field named d.name.
func (d *decoder) fieldErr(reason string) error {
	return d.pointErr(fmt.Sprintf("field %q: %s", clip(d.name), reason))
}

// expected reports that the value at d.pos is not what, unless it is not
// valid JSON at all.
func (d *decoder) expected(what string) error {
	found := d.found()
	if found == "" {
		return d.syntaxErr("expected a value")
	}
	if err := d.skipValue(0); err != nil {
		return err
	}
	return d.pointErr(fmt.Sprintf("expected %s, found %s", what, found))
}

// wrongType reports that the value of the member named key is not what.
func (d *decoder) wrongType(key, what string) error {
	found := d.found()
	if found == "" {
		return d.syntaxErr("expected a value")
	}
	if err := d.skipValue(0); err != nil {
		return err
	}
	return d.pointErr(fmt.Sprintf("%s must be %s, found %s", key, what, found))
}

// found describes the value starting at d.pos, or returns "" if none can.
func (d *decoder) found() string {
	switch c := d.peek(); {
	case c == '{':
		return "an object"
	case c == '[':
		return "an array"
	case c == '"':
		return "a string"
	case c == 't' || c == 'f':
		return "a boolean"
	case c == 'n':
		return "null"
	case c == '-' || isDigit(c):
		return "a number"
	}
	return ""
}

// clip shortens b for quoting in an error message.
func clip(b []byte) string {
	if len(b) > maxQuoted {
		return string(b[:maxQuoted]) + "..."
	}
	return string(b)
}

// badName says what is wrong with a field name, or returns "".
func (d *decoder) badName(name []byte) string {
	switch {
	case len(name) > d.lim.MaxNameLen:
		return fmt.Sprintf("name longer than %d bytes", d.lim.MaxNameLen)
	case hasControl(name):
		return "name contains a control character"
	}
	return ""
}

// hasControl reports whether the valid UTF-8 b contains a C0 or C1 control
// character or DEL.
func hasControl(b []byte) bool {
	for i, c := range b {
		if c < 0x20 || c == 0x7f {
			return true
		}
		// U+0080 to U+009F are encoded as C2 80 to C2 9F.
		if c == 0xc2 && i+1 < len(b) && b[i+1] < 0xa0 {
			return true
		}
	}
	return false
}
