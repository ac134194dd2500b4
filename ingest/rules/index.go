package rules

import (
	"cmp"
	"encoding/json"
	"maps"
	"math"
	"slices"
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
// or the device's type or labels change. Each rule has a slot holding its
// state for the device, so that evaluating a rule costs no map lookup. The
// structure is read on every reading, between the pipeline's own work and
// mostly from cold caches, so what a quiet reading reads is laid out for
// few cache misses: the field names in one small array, the per-field
// header first in fieldRules, the first threshold of each sorted list in
// that header, and every rule list of the device in one backing array.
type devRules struct {
	gen     uint64
	typ     string
	checked time.Time // when labels were last compared with the registry
	names   []string  // field names, in the order of fields: scanned by field
	fields  []fieldRules
	byName  map[string]int32
	anyData absence // absence rules without a field
	labels  map[string]string
	offline []ruleRef
	slots   []slot
	fieldOf []int32 // by slot: index in fields of an ordered threshold, or -1
}

// fieldRules are a device's rules on one field. Numeric thresholds with an
// order (>, >=, <, <=) are sorted by value, so that a reading evaluates only
// those it crosses, as long as none of them holds a state (liveN == 0): in a
// healthy fleet, a reading within every limit costs a comparison or two,
// with the first threshold of each list (upGate, downGate) at hand here.
type fieldRules struct {
	// Read on every reading of the field.
	liveN    int         // states of up and down rules that exist
	upGate   gate        // the first of up
	downGate gate        // the first of down
	nRates   int         // rate rules of all groups
	rates    []rateGroup // rate rules, by window length
	up       []ruleRef   // > and >=, by value ascending (>= first on ties)
	down     []ruleRef   // < and <=, by value descending (<= first on ties)
	each     []ruleRef   // evaluated on every reading: ==, !=
	absent   absence     // absence rules
	name     string

	// fresh are the rate windows created at reading freshSeq, which the
	// rate states that begin at that reading share.
	fresh    []fresh
	freshSeq uint64
}

// gate is the first rule of a sorted threshold list: a value (or change)
// that does not cross it crosses none of the list.
type gate struct {
	num     float64
	orEqual bool // the first rule is >= or <=
}

// upGate is the gate of an up list (> and >=, ascending); an empty list
// has one no value crosses.
func upGate(refs []ruleRef) gate {
	if len(refs) == 0 {
		return gate{num: math.Inf(1)}
	}
	return gate{num: refs[0].num, orEqual: refs[0].op == opGE}
}

// downGate is the gate of a down list (< and <=, descending).
func downGate(refs []ruleRef) gate {
	if len(refs) == 0 {
		return gate{num: math.Inf(-1)}
	}
	return gate{num: refs[0].num, orEqual: refs[0].op == opLE}
}

// above reports whether v crosses an up list's gate.
func (g gate) above(v float64) bool { return v > g.num || g.orEqual && v == g.num }

// below reports whether v crosses a down list's gate.
func (g gate) below(v float64) bool { return v < g.num || g.orEqual && v == g.num }

// ruleRef is a rule and the slot of its state in a devRules, with the
// threshold's operator and value at hand for the sorted walk.
type ruleRef struct {
	c      *compiled
	slot   int32
	kind   kindCode
	op     op
	num    float64
	window time.Duration
}

// slot holds a rule's state on a device, and for a rate rule its window,
// so that a reading can update the window and find the rule quiet without
// a state: a rate rule has a state only while it holds, has an alert or
// keeps a flapping history (maybeDrop), and the window outlives it here.
type slot struct {
	c   *compiled
	st  *state
	win *rateWin
}

// slotOf returns the slot of a rule, -1 when the rule does not watch the
// device. A linear scan: called when a state is created, not per reading.
func (dr *devRules) slotOf(ruleID string) int32 {
	for i := range dr.slots {
		if dr.slots[i].c.rule.ID == ruleID {
			return int32(i)
		}
	}
	return -1
}

// kindCode is a condition kind as a number, for the evaluation switch.
type kindCode uint8

const (
	codeThreshold kindCode = iota + 1
	codeRate
	codeAbsence
	codeOffline
)

var kindCodes = map[string]kindCode{KindThreshold: codeThreshold, KindRate: codeRate, KindAbsence: codeAbsence, KindOffline: codeOffline}

// maxScan is the number of fields up to which a linear scan beats a map.
const maxScan = 8

// field returns the device's rules on a field, nil when none.
func (dr *devRules) field(name string) *fieldRules {
	if dr.byName != nil {
		if i, ok := dr.byName[name]; ok {
			return &dr.fields[i]
		}
		return nil
	}
	for i, n := range dr.names {
		if n == name {
			return &dr.fields[i]
		}
	}
	return nil
}

func (x *index) forDevice(id, typ string, labels map[string]string) *devRules {
	dr := &devRules{gen: x.gen, typ: typ, labels: maps.Clone(labels)}
	idx := map[string]int32{}
	add := func(cs []*compiled) {
		for _, c := range cs {
			if !c.matches(id, typ, labels) {
				continue
			}
			ref := ruleRef{c: c, slot: int32(len(dr.slots)), kind: kindCodes[c.kind], op: c.op, num: c.num, window: c.window}
			dr.slots = append(dr.slots, slot{c: c})
			dr.fieldOf = append(dr.fieldOf, -1)
			switch {
			case c.kind == KindOffline:
				dr.offline = append(dr.offline, ref)
			case c.field == "":
				dr.anyData.refs = append(dr.anyData.refs, ref)
			default:
				i, ok := idx[c.field]
				if !ok {
					i = int32(len(dr.fields))
					idx[c.field] = i
					dr.fields = append(dr.fields, fieldRules{name: c.field})
				}
				fr := &dr.fields[i]
				ordered := c.kind == KindThreshold && c.vkind == valueNumber
				switch {
				case ordered && (c.op == opGT || c.op == opGE):
					fr.up = append(fr.up, ref)
					dr.fieldOf[ref.slot] = i
				case ordered && (c.op == opLT || c.op == opLE):
					fr.down = append(fr.down, ref)
					dr.fieldOf[ref.slot] = i
				case c.kind == KindAbsence:
					fr.absent.refs = append(fr.absent.refs, ref)
				case c.kind == KindRate:
					fr.addRate(ref)
				default:
					fr.each = append(fr.each, ref)
				}
			}
		}
	}
	add(x.byDevice[id])
	add(x.byType[typ])
	add(x.other)
	if len(dr.fields) > maxScan {
		dr.byName = idx
	}
	dr.names = make([]string, len(dr.fields))
	for i := range dr.fields {
		fr := &dr.fields[i]
		dr.names[i] = fr.name
		sortUp(fr.up)
		sortDown(fr.down)
		fr.upGate, fr.downGate = upGate(fr.up), downGate(fr.down)
		for j := range fr.rates {
			g := &fr.rates[j]
			sortUp(g.up)
			sortDown(g.down)
			g.upGate, g.downGate = upGate(g.up), downGate(g.down)
			fr.nRates += g.n
		}
	}
	dr.pack()
	return dr
}

// pack moves the device's rule lists into one backing array, and its rate
// groups into another, field after field, so that a reading of several
// fields reads neighbouring memory rather than a small allocation per list.
func (dr *devRules) pack() {
	nRefs, nGroups := len(dr.offline)+len(dr.anyData.refs), 0
	for i := range dr.fields {
		fr := &dr.fields[i]
		nRefs += len(fr.up) + len(fr.down) + len(fr.each) + len(fr.absent.refs)
		nGroups += len(fr.rates)
		for _, g := range fr.rates {
			nRefs += len(g.up) + len(g.down)
		}
	}
	refs := make([]ruleRef, 0, nRefs)
	put := func(s []ruleRef) []ruleRef {
		if len(s) == 0 {
			return nil
		}
		i := len(refs)
		refs = append(refs, s...)
		return refs[i:len(refs):len(refs)]
	}
	groups := make([]rateGroup, 0, nGroups)
	for i := range dr.fields {
		fr := &dr.fields[i]
		fr.up, fr.down = put(fr.up), put(fr.down)
		if len(fr.rates) > 0 {
			j := len(groups)
			for _, g := range fr.rates {
				g.up, g.down = put(g.up), put(g.down)
				groups = append(groups, g)
			}
			fr.rates = groups[j:len(groups):len(groups)]
		}
		fr.each, fr.absent.refs = put(fr.each), put(fr.absent.refs)
	}
	dr.anyData.refs, dr.offline = put(dr.anyData.refs), put(dr.offline)
}

// sortUp sorts > and >= rules by value ascending, >= first on ties: a
// value walks them until the first it does not cross.
func sortUp(refs []ruleRef) {
	slices.SortFunc(refs, func(a, b ruleRef) int {
		if c := cmp.Compare(a.num, b.num); c != 0 {
			return c
		}
		return cmp.Compare(b.op, a.op) // opGE before opGT
	})
}

// sortDown sorts < and <= rules by value descending, <= first on ties.
func sortDown(refs []ruleRef) {
	slices.SortFunc(refs, func(a, b ruleRef) int {
		if c := cmp.Compare(b.num, a.num); c != 0 {
			return c
		}
		return cmp.Compare(b.op, a.op) // opLE before opLT
	})
}

// current reports whether the cached rules still apply to the device.
func (dr *devRules) current(x *index, typ string, labels map[string]string) bool {
	return dr.gen == x.gen && dr.typ == typ && (!x.labels || maps.Equal(dr.labels, labels))
}

// link puts st in slot i. Called once dr is built: fields no longer moves.
func (dr *devRules) link(i int32, st *state) {
	sl := &dr.slots[i]
	sl.st, st.slot = st, sl
	if st.rule.kind == KindRate {
		switch {
		case st.win == nil && sl.win != nil:
			st.join(sl.win)
		case st.win != sl.win:
			sl.win = st.win
			if fr := dr.field(st.rule.field); fr != nil {
				for j := range fr.rates {
					fr.rates[j].win = nil // sharing to be checked again
				}
			}
		}
	}
	st.live = nil
	if f := dr.fieldOf[i]; f >= 0 {
		dr.fields[f].liveN++
		st.live = &dr.fields[f].liveN
	}
	if st.rule.kind == KindAbsence {
		if g := dr.absenceGroup(st.rule.field); g != nil {
			st.joinAbsence(g)
		}
	}
}
