package rules

import (
	"encoding/json"
	"maps"
	"time"

	"github.com/telehub/telehub/ingest"
)

type valueKind uint8

const (
	valueNumber valueKind = iota
	valueBool
	valueString
)

// compiled is a validated rule in the form the engine evaluates. It is
// immutable once built; a changed rule gets a new one.
type compiled struct {
	rule   Rule
	kind   string
	field  string
	op     op
	vkind  valueKind
	num    float64
	bval   bool
	sval   string
	forDur time.Duration
	window time.Duration
	// clear is the hysteresis threshold, used when clearBelow or clearAbove.
	clear                  float64
	clearBelow, clearAbove bool
	sel                    Selector
	// evalKey is the scope and condition as JSON: a rule update that
	// changes it restarts the rule's alerts, one that does not keeps them.
	evalKey string
}

func compileRule(r Rule) (*compiled, error) {
	c, err := compileSpec(r.Spec)
	if err != nil {
		return nil, err
	}
	c.rule = r
	k, _ := json.Marshal(struct {
		S Scope
		C Condition
	}{r.Scope, r.Condition})
	c.evalKey = string(k)
	return c, nil
}

// matches reports whether the rule watches a device.
func (c *compiled) matches(id, typ string, labels map[string]string) bool {
	sc := &c.rule.Scope
	if sc.Device != "" {
		return sc.Device == id
	}
	if sc.Type != "" && sc.Type != typ {
		return false
	}
	return c.sel.IsZero() || c.sel.Matches(labels)
}

// holds evaluates a threshold on a value; active says whether the alert's
// condition currently holds, so that hysteresis applies. ok is false when
// the value cannot be compared (a string for a numeric threshold).
func (c *compiled) holds(v ingest.Value, active bool) (hold, ok bool) {
	switch c.vkind {
	case valueBool:
		if v.Kind != ingest.KindBool {
			return false, false
		}
		return (v.Bool == c.bval) == (c.op == opEQ), true
	case valueString:
		if v.Kind != ingest.KindString {
			return false, false
		}
		return (v.Str == c.sval) == (c.op == opEQ), true
	}
	if v.Kind != ingest.KindNumber {
		return false, false
	}
	switch {
	case active && c.clearBelow:
		return v.Num >= c.clear, true
	case active && c.clearAbove:
		return v.Num <= c.clear, true
	}
	return c.op.num(v.Num, c.num), true
}

// timed reports whether the rule fires on time rather than on a value: its
// devices are watched from the start, readings or not.
func (c *compiled) timed() bool { return c.kind == KindAbsence || c.kind == KindOffline }

// index finds the rules that can match a device without looking at the
// others. It is immutable; a change of rules builds a new one.
type index struct {
	gen      uint64
	rules    map[string]*compiled
	byDevice map[string][]*compiled
	byType   map[string][]*compiled
	// other holds rules scoped by labels only, or not scoped.
	other []*compiled
	// labels is true when some rule needs the device's labels.
	labels bool
	timed  []*compiled
}

func buildIndex(gen uint64, rules map[string]*compiled) *index {
	x := &index{gen: gen, rules: rules, byDevice: map[string][]*compiled{}, byType: map[string][]*compiled{}}
	for _, c := range rules {
		sc := c.rule.Scope
		switch {
		case sc.Device != "":
			x.byDevice[sc.Device] = append(x.byDevice[sc.Device], c)
		case sc.Type != "":
			x.byType[sc.Type] = append(x.byType[sc.Type], c)
		default:
			x.other = append(x.other, c)
		}
		if !c.sel.IsZero() {
			x.labels = true
		}
		if c.timed() {
			x.timed = append(x.timed, c)
		}
	}
	return x
}

// devRules are the rules that watch one device, by what they react to.
// Built from the index on a device's first reading and again when the rules
// or the device's type or labels change.
type devRules struct {
	gen     uint64
	typ     string
	labels  map[string]string
	byField map[string][]*compiled
	anyData []*compiled // absence rules without a field
	offline []*compiled
}

func (x *index) forDevice(id, typ string, labels map[string]string) *devRules {
	dr := &devRules{gen: x.gen, typ: typ, labels: maps.Clone(labels)}
	add := func(cs []*compiled) {
		for _, c := range cs {
			if !c.matches(id, typ, labels) {
				continue
			}
			switch {
			case c.kind == KindOffline:
				dr.offline = append(dr.offline, c)
			case c.field == "":
				dr.anyData = append(dr.anyData, c)
			default:
				if dr.byField == nil {
					dr.byField = map[string][]*compiled{}
				}
				dr.byField[c.field] = append(dr.byField[c.field], c)
			}
		}
	}
	add(x.byDevice[id])
	add(x.byType[typ])
	add(x.other)
	return dr
}

// current reports whether the cached rules still apply to the device.
func (dr *devRules) current(x *index, typ string, labels map[string]string) bool {
	return dr.gen == x.gen && dr.typ == typ && (!x.labels || maps.Equal(dr.labels, labels))
}
