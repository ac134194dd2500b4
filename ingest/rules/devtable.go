package rules

// devTable is a shard's cache of devices' rules, by device ID: an open
// addressing table keyed by the hash that already chose the shard, so that
// a reading's lookup costs no second hash and reads one slot and the
// devRules it points to (which holds the ID), where a map would read its
// header, directory, table and group first. Guarded by its shard's mu.
type devTable struct {
	slots []devEntry // a power of two long; at most half used
	n     int
}

type devEntry struct {
	h  uint64
	dr *devRules // nil: free
}

// start is the first slot probed for hash h. The low bits chose the shard.
func (t *devTable) start(h uint64) int { return int(h>>shardBits) & (len(t.slots) - 1) }

// get returns the device's rules, nil when none are cached.
func (t *devTable) get(h uint64, id string) *devRules {
	if len(t.slots) == 0 {
		return nil
	}
	for i := t.start(h); ; i = (i + 1) & (len(t.slots) - 1) {
		e := &t.slots[i]
		if e.dr == nil {
			return nil
		}
		if e.h == h && e.dr.id == id {
			return e.dr
		}
	}
}

// put caches dr (for dr.id), replacing what was cached for the device.
func (t *devTable) put(h uint64, dr *devRules) {
	if 2*(t.n+1) > len(t.slots) {
		t.grow()
	}
	for i := t.start(h); ; i = (i + 1) & (len(t.slots) - 1) {
		e := &t.slots[i]
		if e.dr == nil {
			*e = devEntry{h, dr}
			t.n++
			return
		}
		if e.h == h && e.dr.id == dr.id {
			e.dr = dr
			return
		}
	}
}

func (t *devTable) grow() {
	old := t.slots
	t.slots, t.n = make([]devEntry, max(16, 2*len(old))), 0
	for _, e := range old {
		if e.dr != nil {
			t.put(e.h, e.dr)
		}
	}
}

// del forgets a device's rules. Entries after it in its run move back, so
// that every entry stays reachable from its start without tombstones.
func (t *devTable) del(h uint64, id string) {
	if len(t.slots) == 0 {
		return
	}
	mask := len(t.slots) - 1
	i := t.start(h)
	for {
		e := &t.slots[i]
		if e.dr == nil {
			return
		}
		if e.h == h && e.dr.id == id {
			break
		}
		i = (i + 1) & mask
	}
	t.n--
	for j := (i + 1) & mask; ; j = (j + 1) & mask {
		e := t.slots[j]
		if e.dr == nil {
			break
		}
		// e may fill the hole at i when its start is not within (i, j].
		if s := t.start(e.h); (j-s)&mask >= (j-i)&mask {
			t.slots[i], i = e, j
		}
	}
	t.slots[i] = devEntry{}
}
