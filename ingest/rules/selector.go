package rules

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// The device registry's own patterns: a scope that could never match a
// valid device is refused.
var (
	deviceIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	typePattern     = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,63}$`)
	labelKeyPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$`)
)

// selOp is the operator of one selector requirement.
type selOp uint8

const (
	selEq selOp = iota + 1
	selNe
	selIn
	selNotIn
	selExists
	selNotExists
)

// requirement is one comma-separated term of a selector.
type requirement struct {
	key    string
	op     selOp
	values []string // one for = and !=, sorted and unique for in and notin
}

// Selector matches device labels, in the syntax of Kubernetes label
// selectors: comma-separated requirements that must all hold.
//
//	room=kitchen        label room is kitchen (== works too)
//	room!=kitchen       label room is absent or not kitchen
//	floor in (1,2)      label floor is 1 or 2
//	floor notin (1,2)   label floor is absent or neither 1 nor 2
//	spare               label spare is present
//	!spare              label spare is absent
type Selector struct {
	reqs []requirement
}

// maxSelector bounds a selector's text.
const maxSelector = 4096

// ParseSelector reads a label selector.
func ParseSelector(s string) (Selector, error) {
	if len(s) > maxSelector {
		return Selector{}, fmt.Errorf("at most %d bytes", maxSelector)
	}
	if strings.TrimSpace(s) == "" {
		return Selector{}, errors.New("empty selector")
	}
	var sel Selector
	p := &selParser{s: s}
	for {
		r, err := p.requirement()
		if err != nil {
			return Selector{}, err
		}
		sel.reqs = append(sel.reqs, r)
		p.space()
		if p.eof() {
			return sel, nil
		}
		if p.s[p.i] != ',' {
			return Selector{}, fmt.Errorf("at %d: expected ',' between requirements, found %q", p.i, p.s[p.i])
		}
		p.i++
	}
}

type selParser struct {
	s string
	i int
}

func (p *selParser) eof() bool { return p.i >= len(p.s) }

func (p *selParser) space() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

// word reads up to the next delimiter: space, ',', '(', ')', '=' or '!'.
func (p *selParser) word() string {
	start := p.i
	for p.i < len(p.s) && !strings.ContainsRune(" \t,()=!", rune(p.s[p.i])) {
		p.i++
	}
	return p.s[start:p.i]
}

func (p *selParser) key() (string, error) {
	p.space()
	at := p.i
	k := p.word()
	if k == "" {
		if p.eof() {
			return "", fmt.Errorf("at %d: expected a label key, found the end", at)
		}
		return "", fmt.Errorf("at %d: expected a label key, found %q", at, p.s[at])
	}
	if !labelKeyPattern.MatchString(k) {
		return "", fmt.Errorf("at %d: %q is not a label key (1-63 letters, digits, '.', '_', '/' or '-')", at, k)
	}
	return k, nil
}

func (p *selParser) value() (string, error) {
	p.space()
	at := p.i
	v := p.word()
	if len(v) > 256 {
		return "", fmt.Errorf("at %d: label value longer than 256 bytes", at)
	}
	return v, nil
}

func (p *selParser) requirement() (requirement, error) {
	p.space()
	if !p.eof() && p.s[p.i] == '!' {
		p.i++
		k, err := p.key()
		return requirement{key: k, op: selNotExists}, err
	}
	k, err := p.key()
	if err != nil {
		return requirement{}, err
	}
	p.space()
	rest := p.s[p.i:]
	switch {
	case p.eof() || rest[0] == ',':
		return requirement{key: k, op: selExists}, nil
	case strings.HasPrefix(rest, "!="):
		p.i += 2
		v, err := p.value()
		return requirement{key: k, op: selNe, values: []string{v}}, err
	case strings.HasPrefix(rest, "=="):
		p.i += 2
		v, err := p.value()
		return requirement{key: k, op: selEq, values: []string{v}}, err
	case rest[0] == '=':
		p.i++
		v, err := p.value()
		return requirement{key: k, op: selEq, values: []string{v}}, err
	}
	at := p.i
	switch w := p.word(); w {
	case "in", "notin":
		vs, err := p.list()
		if err != nil {
			return requirement{}, err
		}
		o := selIn
		if w == "notin" {
			o = selNotIn
		}
		return requirement{key: k, op: o, values: vs}, nil
	default:
		return requirement{}, fmt.Errorf("at %d: expected =, ==, !=, in or notin after %q", at, k)
	}
}

// list reads "(v1, v2, ...)".
func (p *selParser) list() ([]string, error) {
	p.space()
	if p.eof() || p.s[p.i] != '(' {
		return nil, fmt.Errorf("at %d: expected '(' to open the list of values", p.i)
	}
	p.i++
	var vs []string
	for {
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		if v == "" {
			return nil, fmt.Errorf("at %d: expected a value", p.i)
		}
		vs = append(vs, v)
		if len(vs) > 64 {
			return nil, errors.New("at most 64 values in a list")
		}
		p.space()
		if p.eof() {
			return nil, errors.New("missing ')' to close the list of values")
		}
		switch p.s[p.i] {
		case ',':
			p.i++
		case ')':
			p.i++
			slices.Sort(vs)
			return slices.Compact(vs), nil
		default:
			return nil, fmt.Errorf("at %d: expected ',' or ')' in the list of values, found %q", p.i, p.s[p.i])
		}
	}
}

// Matches reports whether labels satisfy every requirement.
func (s Selector) Matches(labels map[string]string) bool {
	for _, r := range s.reqs {
		v, ok := labels[r.key]
		var hold bool
		switch r.op {
		case selEq:
			hold = ok && v == r.values[0]
		case selNe:
			hold = !ok || v != r.values[0]
		case selIn:
			hold = ok && slices.Contains(r.values, v)
		case selNotIn:
			hold = !ok || !slices.Contains(r.values, v)
		case selExists:
			hold = ok
		case selNotExists:
			hold = !ok
		}
		if !hold {
			return false
		}
	}
	return true
}

// String returns the selector in canonical form; parsing it gives the same
// selector.
func (s Selector) String() string {
	var b strings.Builder
	for i, r := range s.reqs {
		if i > 0 {
			b.WriteByte(',')
		}
		switch r.op {
		case selEq:
			b.WriteString(r.key + "=" + r.values[0])
		case selNe:
			b.WriteString(r.key + "!=" + r.values[0])
		case selIn:
			b.WriteString(r.key + " in (" + strings.Join(r.values, ",") + ")")
		case selNotIn:
			b.WriteString(r.key + " notin (" + strings.Join(r.values, ",") + ")")
		case selExists:
			b.WriteString(r.key)
		case selNotExists:
			b.WriteString("!" + r.key)
		}
	}
	return b.String()
}

// IsZero reports whether the selector has no requirement (matches anything).
func (s Selector) IsZero() bool { return len(s.reqs) == 0 }
