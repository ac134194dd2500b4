package rules

import (
	"math/rand/v2"
	"strconv"
	"testing"
	"unsafe"
)

// TestHotLayout guards the sizes the per-reading path is laid out for: a
// field's header and a rate group are one cache line each, and a rate
// window with its first samples two.
func TestHotLayout(t *testing.T) {
	if n := unsafe.Sizeof(fieldRules{}); n != 64 {
		t.Errorf("fieldRules is %d bytes, want 64", n)
	}
	if n := unsafe.Sizeof(rateGroup{}); n != 64 {
		t.Errorf("rateGroup is %d bytes, want 64", n)
	}
	if n := unsafe.Sizeof(rateWinBuf{}); n != 128 {
		t.Errorf("rateWinBuf is %d bytes, want 128", n)
	}
}

// TestDevTable checks the table against a map over random puts and
// deletes, with hashes chosen to collide so that probing runs wrap and
// deletions move entries back.
func TestDevTable(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var tab devTable
	want := map[string]*devRules{}
	hash := func(id string) uint64 {
		n, _ := strconv.Atoi(id)
		return uint64(n%7) << shardBits // few distinct slots: long runs
	}
	for i := range 20000 {
		id := strconv.Itoa(rng.IntN(60))
		switch rng.IntN(3) {
		case 0, 1:
			dr := &devRules{id: id, gen: uint64(i)}
			tab.put(hash(id), dr)
			want[id] = dr
		default:
			tab.del(hash(id), id)
			delete(want, id)
		}
		if tab.n != len(want) {
			t.Fatalf("step %d: %d entries, want %d", i, tab.n, len(want))
		}
		if i%97 == 0 {
			for j := range 60 {
				id := strconv.Itoa(j)
				if got := tab.get(hash(id), id); got != want[id] {
					t.Fatalf("step %d: get(%s) = %p, want %p", i, id, got, want[id])
				}
			}
		}
	}
}
