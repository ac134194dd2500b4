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
	gen   uint64
	rules map[string]*compiled
	// list holds every rule once: a device's cached rules refer to them
	// by position in it, so that the caches hold no pointers.
	list     []*compiled
	byDevice map[string][]int32
	byType   map[string][]int32
	// other holds rules scoped by labels only, or not scoped.
	other []int32
	// fields maps each field a rule watches to one copy of its name, which
	// every device's cache shares.
	fields map[string]string
	// labels is true when some rule needs the device's labels.
	labels bool
	timed  []*compiled
}

func buildIndex(gen uint64, rules map[string]*compiled) *index {
	x := &index{gen: gen, rules: rules, byDevice: map[string][]int32{}, byType: map[string][]int32{}, fields: map[string]string{}}
	for _, c := range rules {
		i := int32(len(x.list))
		x.list = append(x.list, c)
		sc := c.rule.Scope
		switch {
		case sc.Device != "":
			x.byDevice[sc.Device] = append(x.byDevice[sc.Device], i)
		case sc.Type != "":
			x.byType[sc.Type] = append(x.byType[sc.Type], i)
		default:
			x.other = append(x.other, i)
		}
		if _, ok := x.fields[c.field]; !ok && c.field != "" {
			x.fields[c.field] = c.field
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
// few cache misses: the field names in one small array (shared strings),
// the per-field headers in one array of 64-byte entries (the first
// threshold of each sorted list, the lists as spans of refs, absence groups
// apart), every rule list of the device in one backing array (refs) and
// every rate group in another. Rules are referred to by position in the
// index's list, so that the lists hold no pointers for the garbage
// collector to follow.
type devRules struct {
	gen     uint64
	typ     string
	checked time.Time // when labels were last compared with the registry
	names   []string  // field names, in the order of fields: scanned by field
	fields  []fieldRules
	refs    []ruleRef   // every list of the device's rules: spans of it
	groups  []rateGroup // every rate group: spans of it
	anyData absence     // absence rules without a field
	absents []absence   // absence rules on fields (fieldRules.absent)
	x       *index      // the index it was built from (rules by position)
	byName  map[string]int32
	id      string
	labels  map[string]string
	offline span
	slots   []slot
	fieldOf []int32 // by slot: index in fields of an ordered threshold, or -1

	// fresh are the rate windows created at reading freshSeq (readings of
	// a field are numbered by the shard), which the rate states that begin
	// at that reading share.
	fresh    []fresh
	freshSeq uint64
}

// span is a part of devRules.refs (or of devRules.groups).
type span struct{ off, n int32 }

// list returns the refs of a span.
func (dr *devRules) list(s span) []ruleRef { return dr.refs[s.off : s.off+s.n : s.off+s.n] }

// rates returns a field's rate groups.
func (dr *devRules) rates(fr *fieldRules) []rateGroup {
	return dr.groups[fr.rates.off : fr.rates.off+fr.rates.n : fr.rates.off+fr.rates.n]
}

// rule returns the compiled rule of a ref.
func (dr *devRules) rule(ref ruleRef) *compiled { return dr.x.list[ref.rule] }

// fieldRules are a device's rules on one field. Numeric thresholds with an
// order (>, >=, <, <=) are sorted by value, so that a reading evaluates only
// those it crosses, as long as none of them holds a state (liveN == 0): in a
// healthy fleet, a reading within every limit costs a comparison or two,
// with the first threshold of each list (the gates: upNum, downNum) at hand
// here. 64 bytes, read on every reading of the field: an array of them
// allocated alone is a run of cache lines.
type fieldRules struct {
	upNum, downNum float64 // the gates: the first of up and of down
	up             span    // > and >=, by value ascending (>= first on ties)
	down           span    // < and <=, by value descending (<= first on ties)
	each           span    // evaluated on every reading: ==, !=
	rates          span    // rate rules by window length, in devRules.groups
	absent         int32   // absence rules: index in devRules.absents, -1 when none
	liveN          int32   // states of up and down rules that exist
	upOrEq         bool    // the first of up is >=
	downOrEq       bool    // the first of down is <=
}

// above reports whether v crosses the gate of up.
func (fr *fieldRules) above(v float64) bool { return v > fr.upNum || fr.upOrEq && v == fr.upNum }

// below reports whether v crosses the gate of down.
func (fr *fieldRules) below(v float64) bool { return v < fr.downNum || fr.downOrEq && v == fr.downNum }

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

// ruleRef is a rule (by position in the index's list) and the slot of its
// state in a devRules, with the threshold's operator and value at hand for
// the sorted walk. It holds no pointer.
type ruleRef struct {
	num    float64
	window time.Duration
	rule   int32
	slot   int32
	kind   kindCode
	op     op
}

// slot holds a rule's state on a device, and for a rate rule its window,
// so that a reading can update the window and find the rule quiet without
// a state: a rate rule has a state only while it holds, has an alert or
// keeps a flapping history (maybeDrop), and the window outlives it here.
type slot struct {
	st   *state
	win  *rateWin
	rule int32 // position in the index's list
}

// slotOf returns the slot of a rule, -1 when the rule does not watch the
// device. A linear scan: called when a state is created, not per reading.
func (dr *devRules) slotOf(ruleID string) int32 {
	for i := range dr.slots {
		if dr.x.list[dr.slots[i].rule].rule.ID == ruleID {
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

// fieldBuild and groupBuild hold a field's rule lists while a devRules is
// built, before they are packed into its arrays.
type fieldBuild struct {
	up, down, each, absent []ruleRef
	rates                  []groupBuild
}

type groupBuild struct {
	window   time.Duration
	up, down []ruleRef
}

// addRate adds a rate rule to its group.
func (fb *fieldBuild) addRate(ref ruleRef) {
	i := slices.IndexFunc(fb.rates, func(g groupBuild) bool { return g.window == ref.window })
	if i < 0 {
		i = len(fb.rates)
		fb.rates = append(fb.rates, groupBuild{window: ref.window})
	}
	g := &fb.rates[i]
	if ref.op == opGT || ref.op == opGE {
		g.up = append(g.up, ref)
	} else {
		g.down = append(g.down, ref)
	}
}

func (x *index) forDevice(id, typ string, labels map[string]string) *devRules {
	dr := &devRules{gen: x.gen, typ: typ, id: id, x: x, labels: maps.Clone(labels)}
	idx := map[string]int32{}
	var build []fieldBuild
	var offline, anyData []ruleRef
	add := func(cs []int32) {
		for _, ci := range cs {
			c := x.list[ci]
			if !c.matches(id, typ, labels) {
				continue
			}
			ref := ruleRef{rule: ci, slot: int32(len(dr.slots)), kind: kindCodes[c.kind], op: c.op, num: c.num, window: c.window}
			dr.slots = append(dr.slots, slot{rule: ci})
			dr.fieldOf = append(dr.fieldOf, -1)
			switch {
			case c.kind == KindOffline:
				offline = append(offline, ref)
			case c.field == "":
				anyData = append(anyData, ref)
			default:
				i, ok := idx[c.field]
				if !ok {
					i = int32(len(dr.fields))
					idx[c.field] = i
					dr.fields = append(dr.fields, fieldRules{absent: -1})
					dr.names = append(dr.names, x.fields[c.field])
					build = append(build, fieldBuild{})
				}
				fb := &build[i]
				ordered := c.kind == KindThreshold && c.vkind == valueNumber
				switch {
				case ordered && (c.op == opGT || c.op == opGE):
					fb.up = append(fb.up, ref)
					dr.fieldOf[ref.slot] = i
				case ordered && (c.op == opLT || c.op == opLE):
					fb.down = append(fb.down, ref)
					dr.fieldOf[ref.slot] = i
				case c.kind == KindAbsence:
					fb.absent = append(fb.absent, ref)
				case c.kind == KindRate:
					fb.addRate(ref)
				default:
					fb.each = append(fb.each, ref)
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
	dr.pack(build, offline, anyData)
	return dr
}

// pack sorts the lists built and moves them into one array of refs, and
// the rate groups into another, field after field, so that a reading of
// several fields reads neighbouring memory rather than a small allocation
// per list.
func (dr *devRules) pack(build []fieldBuild, offline, anyData []ruleRef) {
	nRefs, nGroups := len(offline)+len(anyData), 0
	for _, fb := range build {
		nRefs += len(fb.up) + len(fb.down) + len(fb.each) + len(fb.absent)
		nGroups += len(fb.rates)
		for _, g := range fb.rates {
			nRefs += len(g.up) + len(g.down)
		}
	}
	dr.refs = make([]ruleRef, 0, nRefs)
	put := func(s []ruleRef) span {
		sp := span{int32(len(dr.refs)), int32(len(s))}
		dr.refs = append(dr.refs, s...)
		return sp
	}
	dr.groups = make([]rateGroup, 0, nGroups)
	for i, fb := range build {
		fr := &dr.fields[i]
		sortUp(fb.up)
		sortDown(fb.down)
		ug, dg := upGate(fb.up), downGate(fb.down)
		fr.upNum, fr.upOrEq, fr.downNum, fr.downOrEq = ug.num, ug.orEqual, dg.num, dg.orEqual
		fr.up, fr.down = put(fb.up), put(fb.down)
		fr.rates.off = int32(len(dr.groups))
		for _, gb := range fb.rates {
			sortUp(gb.up)
			sortDown(gb.down)
			g := rateGroup{window: gb.window, upGate: upGate(gb.up), downGate: downGate(gb.down)}
			g.up, g.down = put(gb.up), put(gb.down)
			dr.groups = append(dr.groups, g)
		}
		fr.rates.n = int32(len(dr.groups)) - fr.rates.off
		fr.each = put(fb.each)
		if len(fb.absent) > 0 {
			fr.absent = int32(len(dr.absents))
			dr.absents = append(dr.absents, absence{refs: put(fb.absent)})
		}
	}
	dr.anyData.refs, dr.offline = put(anyData), put(offline)
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
				gs := dr.rates(fr)
				for j := range gs {
					gs[j].win = nil // sharing to be checked again
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
