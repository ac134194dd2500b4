package devices

import (
	"fmt"
	"strings"
)

// Selector matches device labels: a comma-separated list of `key=value`,
// `key!=value`, `key` (present) and `!key` (absent) terms, all of which must
// hold, as in Kubernetes label selectors.
type Selector []selectorTerm

type selectorTerm struct {
	key, value string
	op         byte // '=', '!', 'e' (exists), 'n' (not exists)
}

// ParseSelector parses a label selector.
func ParseSelector(s string) (Selector, error) {
	var sel Selector
	for term := range strings.SplitSeq(s, ",") {
		term = strings.TrimSpace(term)
		switch {
		case term == "":
			continue
		case strings.Contains(term, "!="):
			k, v, _ := strings.Cut(term, "!=")
			sel = append(sel, selectorTerm{key: strings.TrimSpace(k), value: strings.TrimSpace(v), op: '!'})
		case strings.Contains(term, "="):
			k, v, _ := strings.Cut(term, "=")
			sel = append(sel, selectorTerm{key: strings.TrimSpace(k), value: strings.TrimSpace(v), op: '='})
		case strings.HasPrefix(term, "!"):
			sel = append(sel, selectorTerm{key: strings.TrimSpace(term[1:]), op: 'n'})
		default:
			sel = append(sel, selectorTerm{key: term, op: 'e'})
		}
		if t := sel[len(sel)-1]; !labelPattern.MatchString(t.key) {
			return nil, fmt.Errorf("label selector: bad key %q", t.key)
		}
	}
	return sel, nil
}

// Matches reports whether labels satisfy every term.
func (s Selector) Matches(labels map[string]string) bool {
	for _, t := range s {
		v, ok := labels[t.key]
		switch t.op {
		case '=':
			if !ok || v != t.value {
				return false
			}
		case '!':
			if ok && v == t.value {
				return false
			}
		case 'e':
			if !ok {
				return false
			}
		case 'n':
			if ok {
				return false
			}
		}
	}
	return true
}

// Filter selects devices in a listing.
type Filter struct {
	Type     string
	Selector Selector
	// Search matches a substring of the ID or the name, case-insensitively.
	Search string
}

// Match reports whether d passes the filter.
func (f Filter) Match(d Device) bool {
	if f.Type != "" && d.Type != f.Type {
		return false
	}
	if !f.Selector.Matches(d.Labels) {
		return false
	}
	if f.Search != "" {
		q := strings.ToLower(f.Search)
		if !strings.Contains(strings.ToLower(d.ID), q) && !strings.Contains(strings.ToLower(d.Name), q) {
			return false
		}
	}
	return true
}
