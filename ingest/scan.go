package ingest

// The JSON scanner under both payload forms: strings, numbers, literals,
// objects and arrays read in place from the payload, without reflection.

import (
	"fmt"
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

func (d *decoder) peek() byte {
	if d.pos < len(d.buf) {
		return d.buf[d.pos]
	}
	return 0
}

func (d *decoder) skipWS() {
	for d.pos < len(d.buf) {
		switch d.buf[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

// put copies b into the arena.
func (d *decoder) put(b []byte) span {
	off := len(d.arena)
	d.arena = append(d.arena, b...)
	return span{off, len(d.arena)}
}

func (d *decoder) literal(word string) error {
	end := d.pos + len(word)
	if end > len(d.buf) || string(d.buf[d.pos:end]) != word {
		return d.syntaxErr("invalid literal, expected " + word)
	}
	d.pos = end
	return nil
}

// plain marks the bytes that stand for themselves in a JSON string.
var plain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// readString reads the string at d.pos, which is '"', and returns its
// unescaped bytes. They alias the payload or d.str, so they are valid until
// the next call. Strings must be valid UTF-8.
func (d *decoder) readString() ([]byte, error) {
	start := d.pos + 1
	i := start
	for {
		for i < len(d.buf) && plain[d.buf[i]] {
			i++
		}
		if i >= len(d.buf) {
			d.pos = i
			return nil, d.syntaxErr("unterminated string")
		}
		switch c := d.buf[i]; {
		case c == '"':
			d.pos = i + 1
			return d.buf[start:i], nil
		case c == '\\':
			d.str = append(d.str[:0], d.buf[start:i]...)
			return d.readEscaped(i)
		case c < 0x20:
			d.pos = i
			return nil, d.syntaxErr("control character in string")
		default:
			r, size := utf8.DecodeRune(d.buf[i:])
			if r == utf8.RuneError && size == 1 {
				d.pos = i
				return nil, d.syntaxErr("invalid UTF-8 in string")
			}
			i += size
		}
	}
}

// readEscaped finishes readString from the escape at i, unescaping into
// d.str.
func (d *decoder) readEscaped(i int) ([]byte, error) {
	for i < len(d.buf) {
		c := d.buf[i]
		switch {
		case c == '"':
			d.pos = i + 1
			return d.str, nil
		case c == '\\':
			d.pos = i
			if i+1 >= len(d.buf) {
				return nil, d.syntaxErr("unterminated string")
			}
			switch e := d.buf[i+1]; e {
			case '"', '\\', '/':
				d.str = append(d.str, e)
			case 'b':
				d.str = append(d.str, '\b')
			case 'f':
				d.str = append(d.str, '\f')
			case 'n':
				d.str = append(d.str, '\n')
			case 'r':
				d.str = append(d.str, '\r')
			case 't':
				d.str = append(d.str, '\t')
			case 'u':
				r, ok := hex4(d.buf[i+2:])
				if !ok {
					return nil, d.syntaxErr(`invalid \u escape`)
				}
				i += 6
				if utf16.IsSurrogate(r) {
					r2, ok := rune(0), false
					if r < 0xdc00 && i+1 < len(d.buf) && d.buf[i] == '\\' && d.buf[i+1] == 'u' {
						r2, ok = hex4(d.buf[i+2:])
					}
					r = utf16.DecodeRune(r, r2)
					if !ok || r == utf8.RuneError {
						return nil, d.syntaxErr("invalid UTF-16 surrogate in string")
					}
					i += 6
				}
				d.str = utf8.AppendRune(d.str, r)
				continue
			default:
				return nil, d.syntaxErr("invalid escape in string")
			}
			i += 2
		case c < 0x20:
			d.pos = i
			return nil, d.syntaxErr("control character in string")
		case c < utf8.RuneSelf:
			d.str = append(d.str, c)
			i++
		default:
			r, size := utf8.DecodeRune(d.buf[i:])
			if r == utf8.RuneError && size == 1 {
				d.pos = i
				return nil, d.syntaxErr("invalid UTF-8 in string")
			}
			d.str = append(d.str, d.buf[i:i+size]...)
			i += size
		}
	}
	d.pos = i
	return nil, d.syntaxErr("unterminated string")
}

// hex4 decodes the four hex digits at the start of b.
func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// readNumber reads the JSON number at d.pos and returns its text.
func (d *decoder) readNumber() ([]byte, error) {
	start := d.pos
	i := start
	if i < len(d.buf) && d.buf[i] == '-' {
		i++
	}
	digits := func() bool {
		j := i
		for i < len(d.buf) && isDigit(d.buf[i]) {
			i++
		}
		return i > j
	}
	switch {
	case i < len(d.buf) && d.buf[i] == '0':
		i++
	case !digits():
		d.pos = i
		return nil, d.syntaxErr("invalid number")
	}
	if i < len(d.buf) && d.buf[i] == '.' {
		i++
		if !digits() {
			d.pos = i
			return nil, d.syntaxErr("invalid number: no digits after '.'")
		}
	}
	if i < len(d.buf) && (d.buf[i] == 'e' || d.buf[i] == 'E') {
		i++
		if i < len(d.buf) && (d.buf[i] == '+' || d.buf[i] == '-') {
			i++
		}
		if !digits() {
			d.pos = i
			return nil, d.syntaxErr("invalid number: no digits in exponent")
		}
	}
	d.pos = i
	return d.buf[start:i], nil
}

// number reads a JSON number as a finite float64.
func (d *decoder) number() (float64, error) {
	lit, err := d.readNumber()
	if err != nil {
		return 0, err
	}
	f, ok := parseNumber(lit)
	if !ok {
		return 0, d.fieldErr(fmt.Sprintf("number %s out of range", clip(lit)))
	}
	return f, nil
}

// parseNumber converts a valid JSON number to a finite float64.
func parseNumber(lit []byte) (float64, bool) {
	// Integers of up to 15 digits are exact in a float64.
	if len(lit) <= 15 {
		i, neg := 0, false
		if lit[0] == '-' {
			i, neg = 1, true
		}
		var n int64
		for ; i < len(lit) && isDigit(lit[i]); i++ {
			n = n*10 + int64(lit[i]-'0')
		}
		if i == len(lit) {
			if neg {
				return -float64(n), true
			}
			return float64(n), true
		}
	}
	f, err := strconv.ParseFloat(string(lit), 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, false
	}
	return f, true
}

// scaled returns the valid JSON number lit times 10^scale as an integer,
// truncated toward zero, and false if it does not fit an int64. Unlike a
// float64, it keeps every digit that matters: 1700000000000.123 ms is
// exactly 1700000000000123000 ns.
func scaled(lit []byte, scale int) (int64, bool) {
	const full = 1e18 // more digits could overflow the mantissa
	i, neg := 0, false
	if lit[0] == '-' {
		i, neg = 1, true
	}
	var mant uint64
	exp := scale
	for ; i < len(lit) && isDigit(lit[i]); i++ {
		if mant >= full {
			exp++
			continue
		}
		mant = mant*10 + uint64(lit[i]-'0')
	}
	if i < len(lit) && lit[i] == '.' {
		for i++; i < len(lit) && isDigit(lit[i]); i++ {
			if mant >= full {
				continue
			}
			mant = mant*10 + uint64(lit[i]-'0')
			exp--
		}
	}
	if i < len(lit) && (lit[i] == 'e' || lit[i] == 'E') {
		i++
		eneg := false
		if lit[i] == '+' || lit[i] == '-' {
			eneg = lit[i] == '-'
			i++
		}
		e := 0
		for ; i < len(lit); i++ {
			if e < 100000 {
				e = e*10 + int(lit[i]-'0')
			}
		}
		if eneg {
			e = -e
		}
		exp += e
	}
	if mant == 0 {
		return 0, true
	}
	for ; exp > 0; exp-- {
		if mant > math.MaxInt64/10 {
			return 0, false
		}
		mant *= 10
	}
	for ; exp < 0 && mant > 0; exp++ {
		mant /= 10
	}
	if mant > math.MaxInt64 {
		return 0, false
	}
	if neg {
		return -int64(mant), true
	}
	return int64(mant), true
}

// object reads the object at d.pos, calling member with each key, which
// is valid until the next readString, to read the value.
func (d *decoder) object(member func(key []byte) error) error {
	d.pos++ // '{'
	d.skipWS()
	if d.peek() == '}' {
		d.pos++
		return nil
	}
	for {
		if d.peek() != '"' {
			return d.syntaxErr("expected a string for an object key")
		}
		key, err := d.readString()
		if err != nil {
			return err
		}
		d.skipWS()
		if d.peek() != ':' {
			return d.syntaxErr("expected ':' after object key")
		}
		d.pos++
		d.skipWS()
		if err := member(key); err != nil {
			return err
		}
		d.skipWS()
		switch d.peek() {
		case ',':
			d.pos++
			d.skipWS()
		case '}':
			d.pos++
			return nil
		default:
			return d.syntaxErr("expected ',' or '}' after object member")
		}
	}
}

// array reads the array at d.pos, calling elem to read each element.
func (d *decoder) array(elem func() error) error {
	d.pos++ // '['
	d.skipWS()
	if d.peek() == ']' {
		d.pos++
		return nil
	}
	for {
		if err := elem(); err != nil {
			return err
		}
		d.skipWS()
		switch d.peek() {
		case ',':
			d.pos++
			d.skipWS()
		case ']':
			d.pos++
			return nil
		default:
			return d.syntaxErr("expected ',' or ']' after array element")
		}
	}
}

// skipValue reads and discards the JSON value at d.pos.
func (d *decoder) skipValue(depth int) error {
	switch c := d.peek(); {
	case c == '{' || c == '[':
		if depth+1 >= maxDepth {
			return d.pointErr(fmt.Sprintf("values nested more than %d deep", maxDepth))
		}
		if c == '{' {
			return d.object(func([]byte) error { return d.skipValue(depth + 1) })
		}
		return d.array(func() error { return d.skipValue(depth + 1) })
	case c == '"':
		_, err := d.readString()
		return err
	case c == 't':
		return d.literal("true")
	case c == 'f':
		return d.literal("false")
	case c == 'n':
		return d.literal("null")
	case c == '-' || isDigit(c):
		_, err := d.readNumber()
		return err
	}
	return d.syntaxErr("expected a value")
}
