package kv

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
)

type thing struct {
	ID     string            `json:"id"`
	Count  int               `json:"count"`
	Labels map[string]string `json:"labels,omitempty"`
}

func openDB(t testing.TB, path string) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	return db
}

func TestBoltReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db := openDB(t, path)
	tb, err := OpenBolt[thing](db, "things")
	require.NoError(t, err)
	require.NoError(t, tb.Put("b", thing{ID: "b", Count: 2}))
	require.NoError(t, tb.Put("a", thing{ID: "a", Count: 1, Labels: map[string]string{"room": "lab"}}))
	require.NoError(t, tb.Put("c", thing{ID: "c"}))
	got, err := tb.Update("b", func(old thing, ok bool) (thing, error) {
		require.True(t, ok)
		old.Count += 40
		return old, nil
	})
	require.NoError(t, err)
	require.Equal(t, 42, got.Count)
	ok, err := tb.Delete("c")
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = tb.Delete("c")
	require.NoError(t, err)
	require.False(t, ok, "a second delete finds nothing")
	require.NoError(t, db.Close())

	tb2, err := OpenBolt[thing](openDB(t, path), "things")
	require.NoError(t, err)
	require.Equal(t, []Entry[thing]{
		{"a", thing{ID: "a", Count: 1, Labels: map[string]string{"room": "lab"}}},
		{"b", thing{ID: "b", Count: 42}},
	}, tb2.All())
	_, ok = tb2.Get("c")
	require.False(t, ok)
}

// TestBoltLoadsOldValues opens a bucket written directly with bbolt, as the
// registry, the integrations, the tokens and the schemas wrote theirs
// before this package: JSON under the key.
func TestBoltLoadsOldValues(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "state.db"))
	require.NoError(t, db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("devices"))
		if err != nil {
			return err
		}
		return b.Put([]byte("dev-1"), []byte(`{"id":"dev-1","count":7,"labels":{"site":"north"},"unknown":true}`))
	}))
	tb, err := OpenBolt[thing](db, "devices")
	require.NoError(t, err)
	v, ok := tb.Get("dev-1")
	require.True(t, ok)
	require.Equal(t, thing{ID: "dev-1", Count: 7, Labels: map[string]string{"site": "north"}}, v)

	// A write keeps the format: the same JSON an old reader decodes.
	require.NoError(t, tb.Put("dev-2", thing{ID: "dev-2", Count: 3}))
	require.NoError(t, db.View(func(tx *bolt.Tx) error {
		require.JSONEq(t, `{"id":"dev-2","count":3}`, string(tx.Bucket([]byte("devices")).Get([]byte("dev-2"))))
		return nil
	}))
}

func TestBoltBadValueNamesKey(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "state.db"))
	require.NoError(t, db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("things"))
		if err != nil {
			return err
		}
		return b.Put([]byte("broken"), []byte(`{"id":`))
	}))
	_, err := OpenBolt[thing](db, "things")
	require.ErrorContains(t, err, `things "broken"`)
}

// TestBoltFailedWriteChangesNothing: a value the disk refused is not seen
// in memory either, and an error of fn is returned as it is.
func TestBoltFailedWriteChangesNothing(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "state.db"))
	tb, err := OpenBolt[thing](db, "things")
	require.NoError(t, err)
	require.NoError(t, tb.Put("a", thing{ID: "a", Count: 1}))

	errNo := errors.New("no")
	_, err = tb.Update("a", func(old thing, _ bool) (thing, error) { return thing{ID: "a", Count: 9}, errNo })
	require.ErrorIs(t, err, errNo)

	require.NoError(t, db.Close())
	require.Error(t, tb.Put("a", thing{ID: "a", Count: 2}))
	require.Error(t, tb.Put("b", thing{ID: "b"}))
	_, err = tb.Delete("a")
	require.Error(t, err)
	require.Equal(t, []Entry[thing]{{"a", thing{ID: "a", Count: 1}}}, tb.All())
}

// TestBoltConcurrent runs writers and readers at once (run with -race): no
// increment is lost, in memory or on disk, and fn may read the table.
func TestBoltConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db := openDB(t, path)
	tb, err := OpenBolt[thing](db, "things")
	require.NoError(t, err)

	const writers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers*each*2)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				_, err := tb.Update("counter", func(old thing, ok bool) (thing, error) {
					if cur, _ := tb.Get("counter"); cur.Count != old.Count {
						return old, fmt.Errorf("fn saw %d, Get %d", old.Count, cur.Count)
					}
					_ = tb.All()
					old.ID = "counter"
					old.Count++
					return old, nil
				})
				errs <- err
				errs <- tb.Put(fmt.Sprintf("w%d-%d", w, i), thing{ID: "x", Count: i})
			}
		})
		wg.Go(func() {
			for range each {
				tb.Get("counter")
				tb.All()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	v, _ := tb.Get("counter")
	require.Equal(t, writers*each, v.Count)
	require.Len(t, tb.All(), writers*each+1)

	require.NoError(t, db.Close())
	tb2, err := OpenBolt[thing](openDB(t, path), "things")
	require.NoError(t, err)
	v, _ = tb2.Get("counter")
	require.Equal(t, writers*each, v.Count)
	require.Len(t, tb2.All(), writers*each+1)
}
