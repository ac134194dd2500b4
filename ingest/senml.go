package ingest

// SenML (RFC 8428): the second payload form Decode reads, a pack of
// records with base state, grouped into points by resolved time.

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"
)

// Presence bits of SenML record members.
const (
	hasN = 1 << iota
	hasT
	hasV
	hasVS
	hasVB
	hasVD
	hasS
	hasValue = hasV | hasVS | hasVB | hasVD
)

// record is the part of a SenML record that is not base state.
type record struct {
	has uint16
	t   int64
	v   float64
	s   float64
	vb  bool
	str span
}

// looksSenML reports whether the array at d.pos starts with an object
// that has a SenML key and no "ts". It leaves d.pos unchanged; a malformed
// payload is left for the batch reader to report.
func (d *decoder) looksSenML() bool {
	defer func(pos int) { d.pos = pos }(d.pos)
	d.pos++ // '['
	d.skipWS()
	if d.peek() != '{' {
		return false
	}
	senML := false
	err := d.object(func(key []byte) error {
		switch string(key) {
		case "ts":
			return errNotSenML
		case "n", "bn", "bt", "v", "vs", "vb", "vd":
			senML = true
		}
		return d.skipValue(1)
	})
	return err == nil && senML
}

// errNotSenML stops looksSenML early.
var errNotSenML = &DecodeError{Reason: "not SenML"}

// senML reads a SenML pack.
func (d *decoder) senML() error {
	d.what = "record"
	maxRecords := math.MaxInt
	if d.lim.MaxFields <= math.MaxInt/d.lim.MaxPoints {
		maxRecords = d.lim.MaxPoints * d.lim.MaxFields
	}
	d.index = -1
	err := d.array(func() error {
		d.index++
		if d.index >= maxRecords {
			return &DecodeError{Reason: fmt.Sprintf("more than %d records", maxRecords)}
		}
		if d.peek() != '{' {
			return d.expected("an object")
		}
		return d.record()
	})
	switch {
	case err != nil:
		return err
	case d.index < 0:
		return &DecodeError{Reason: "empty SenML pack"}
	}
	return d.groupSenML()
}

// record reads the SenML record at d.pos and adds its field. Base members
// update the base state as they are read: they apply to their own record too.
func (d *decoder) record() error {
	var r record
	err := d.object(func(key []byte) error {
		k := keyOf(key)
		if k == keyUnknown && len(key) > 0 && key[len(key)-1] == '_' {
			return d.pointErr(fmt.Sprintf("unsupported must-understand field %q", clip(key)))
		}
		return d.recordMember(&r, k)
	})
	if err != nil {
		return err
	}

	name := d.bn
	if r.has&hasN != 0 && len(d.n) > 0 {
		name = d.n
	}
	if len(name) == 0 {
		return d.pointErr("no name (n or bn)")
	}
	if reason := d.badName(name); reason != "" {
		return d.pointErr(fmt.Sprintf("field %q: %s", clip(name), reason))
	}

	f := rawField{}
	switch r.has & hasValue {
	case hasV:
		f.kind, f.num = KindNumber, d.bv+r.v
	case hasVS, hasVD:
		f.kind, f.str = KindString, r.str
	case hasVB:
		f.kind, f.b = KindBool, r.vb
	case 0:
		if r.has&hasS == 0 {
			return d.pointErr("no value (v, vs, vb, vd or s)")
		}
		f.kind, f.num = KindNumber, d.bs+r.s
	default:
		return d.pointErr("more than one value (v, vs, vb, vd)")
	}
	if f.kind == KindNumber && (math.IsInf(f.num, 0) || math.IsNaN(f.num)) {
		return d.pointErr("value out of range")
	}

	ns := d.bt + r.t
	if (r.t > 0 && ns < d.bt) || (r.t < 0 && ns > d.bt) {
		return d.pointErr("time out of range")
	}
	var t time.Time
	if ns < relativeLimit {
		t = d.now.Add(time.Duration(ns))
	} else {
		t = time.Unix(0, ns).UTC()
	}
	if t.Before(minTime) || t.After(maxTime) {
		return d.pointErr(fmt.Sprintf("time %s out of range", t.Format(time.RFC3339Nano)))
	}
	pt, err := d.pointAt(t)
	if err != nil {
		return err
	}
	f.point = pt
	f.name = d.put(name)
	d.raw = append(d.raw, f)
	return nil
}

// SenML record keys.
type senMLKey uint8

const (
	keyUnknown senMLKey = iota
	keyBN
	keyBT
	keyBU
	keyBV
	keyBS
	keyBVer
	keyN
	keyU
	keyV
	keyVS
	keyVB
	keyVD
	keyS
	keyT
	keyUT
)

var senMLKeyNames = [...]string{
	keyUnknown: "", keyBN: "bn", keyBT: "bt", keyBU: "bu", keyBV: "bv", keyBS: "bs",
	keyBVer: "bver", keyN: "n", keyU: "u", keyV: "v", keyVS: "vs", keyVB: "vb",
	keyVD: "vd", keyS: "s", keyT: "t", keyUT: "ut",
}

func keyOf(key []byte) senMLKey {
	for k, name := range senMLKeyNames[1:] {
		if string(key) == name {
			return senMLKey(k + 1)
		}
	}
	return keyUnknown
}

// recordMember reads the value of member k of a SenML record.
func (d *decoder) recordMember(r *record, k senMLKey) error {
	switch k {
	case keyUnknown:
		return d.skipValue(0)
	case keyBN, keyN, keyBU, keyU, keyVS, keyVD:
		if d.peek() != '"' {
			return d.wrongType(strconv.Quote(senMLKeyNames[k]), "a string")
		}
		s, err := d.readString()
		if err != nil {
			return err
		}
		switch k {
		case keyBN:
			d.bn = append(d.bn[:0], s...)
		case keyN:
			d.n = append(d.n[:0], s...)
			r.has |= hasN
		case keyVS, keyVD:
			if len(s) > d.lim.MaxStringLen {
				return d.pointErr(fmt.Sprintf("%q: string longer than %d bytes", senMLKeyNames[k], d.lim.MaxStringLen))
			}
			r.str = d.put(s)
			if k == keyVS {
				r.has |= hasVS
			} else {
				r.has |= hasVD
			}
		}
		return nil
	case keyVB:
		switch d.peek() {
		case 't':
			r.vb = true
			r.has |= hasVB
			return d.literal("true")
		case 'f':
			r.vb = false
			r.has |= hasVB
			return d.literal("false")
		}
		return d.wrongType(`"vb"`, "a boolean")
	}

	// The rest are numbers.
	if c := d.peek(); c != '-' && !isDigit(c) {
		return d.wrongType(strconv.Quote(senMLKeyNames[k]), "a number")
	}
	lit, err := d.readNumber()
	if err != nil {
		return err
	}
	if k == keyBT || k == keyT {
		ns, ok := scaled(lit, 9)
		if !ok {
			return d.pointErr(fmt.Sprintf("%q: %s is out of range", senMLKeyNames[k], clip(lit)))
		}
		if k == keyBT {
			d.bt = ns
		} else {
			r.t = ns
			r.has |= hasT
		}
		return nil
	}
	f, ok := parseNumber(lit)
	if !ok {
		return d.pointErr(fmt.Sprintf("%q: %s is out of range", senMLKeyNames[k], clip(lit)))
	}
	switch k {
	case keyBV:
		d.bv = f
	case keyBS:
		d.bs = f
	case keyV:
		r.v = f
		r.has |= hasV
	case keyS:
		r.s = f
		r.has |= hasS
	case keyBVer:
		if f != math.Trunc(f) || f < 1 {
			return d.pointErr(fmt.Sprintf(`"bver": %s is not a version`, clip(lit)))
		}
		if f > senMLVersion {
			return d.pointErr(fmt.Sprintf("SenML version %s is not supported", clip(lit)))
		}
	}
	return nil
}

// pointAt returns the index of the point at t, adding one if needed.
func (d *decoder) pointAt(t time.Time) (int32, error) {
	n := len(d.times)
	if n > 0 && d.times[d.last].Equal(t) {
		return d.last, nil
	}
	key := t.UnixNano() // exact: t is between 1970 and 2200
	if n > 0 {
		if d.byTime == nil {
			d.byTime = make(map[int64]int32, 8)
			for i, pt := range d.times {
				d.byTime[pt.UnixNano()] = int32(i)
			}
		}
		if i, ok := d.byTime[key]; ok {
			d.last = i
			return i, nil
		}
	}
	if n >= d.lim.MaxPoints {
		return 0, &DecodeError{Reason: fmt.Sprintf("more than %d points", d.lim.MaxPoints)}
	}
	d.times = append(d.times, t)
	d.last = int32(n)
	if d.byTime != nil {
		d.byTime[key] = d.last
	}
	return d.last, nil
}

// groupSenML groups the fields by point, keeping the last of each name.
func (d *decoder) groupSenML() error {
	slices.SortStableFunc(d.raw, d.byPointName)
	d.raw = d.raw[:d.dedupe(d.raw)]
	start := 0
	for i := range d.raw {
		if i+1 < len(d.raw) && d.raw[i+1].point == d.raw[i].point {
			continue
		}
		if n := i + 1 - start; n > d.lim.MaxFields {
			t := d.times[d.raw[i].point].Format(time.RFC3339Nano)
			return &DecodeError{Reason: fmt.Sprintf("point at %s: %d fields, more than %d", t, n, d.lim.MaxFields)}
		}
		start = i + 1
	}
	return nil
}
