package devices

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
)

func TestRegistryCreateAuthenticateRotatePersist(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := bolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	r, err := New(db)
	require.NoError(t, err)

	d, tok, err := r.Create(Device{ID: "thermo-1", Type: "thermostat", Labels: map[string]string{"room": "kitchen"}})
	require.NoError(t, err)
	require.Equal(t, "thermo-1", d.ID)
	require.GreaterOrEqual(t, len(tok), 22, "at least 128 bits")

	_, _, err = r.Create(Device{ID: "thermo-1", Type: "thermostat"})
	require.ErrorIs(t, err, ErrExists)

	_, ok := r.Authenticate("thermo-1", tok)
	require.True(t, ok)
	_, ok = r.Authenticate("thermo-1", tok+"x")
	require.False(t, ok)
	_, ok = r.Authenticate("nobody", tok)
	require.False(t, ok)

	_, tok2, err := r.RotateToken("thermo-1")
	require.NoError(t, err)
	_, ok = r.Authenticate("thermo-1", tok)
	require.False(t, ok, "old token must stop working")
	require.NoError(t, db.Close())

	db, err = bolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	defer db.Close()
	r, err = New(db)
	require.NoError(t, err)
	got, ok := r.Authenticate("thermo-1", tok2)
	require.True(t, ok, "registry must survive a restart")
	require.Equal(t, "kitchen", got.Labels["room"])
	require.Len(t, r.List(), 1)
}

func TestDeviceValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		dev  Device
		ok   bool
	}{
		{"plain", Device{ID: "a-1_b.c", Type: "wearable"}, true},
		{"slash in id", Device{ID: "a/b", Type: "wearable"}, false},
		{"wildcard in id", Device{ID: "a+", Type: "wearable"}, false},
		{"empty id", Device{ID: "", Type: "wearable"}, false},
		{"empty type", Device{ID: "a", Type: ""}, false},
		{"upper type", Device{ID: "a", Type: "Thermo"}, false},
		{"bad label", Device{ID: "a", Type: "t", Labels: map[string]string{"a b": "x"}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.dev.Validate()
			if tc.ok {
				require.NoError(t, err)
			} else {
				var ve *ValidationError
				require.ErrorAs(t, err, &ve)
			}
		})
	}
}

func TestSelector(t *testing.T) {
	labels := map[string]string{"room": "kitchen", "floor": "1"}
	for _, tc := range []struct {
		sel   string
		match bool
	}{
		{"", true},
		{"room=kitchen", true},
		{"room=kitchen,floor=1", true},
		{"room=hall", false},
		{"room!=hall", true},
		{"room!=kitchen", false},
		{"floor", true},
		{"!floor", false},
		{"!zone", true},
		{"zone", false},
	} {
		t.Run(tc.sel, func(t *testing.T) {
			s, err := ParseSelector(tc.sel)
			require.NoError(t, err)
			require.Equal(t, tc.match, s.Matches(labels))
		})
	}
	_, err := ParseSelector("a b=c")
	require.Error(t, err)
}

func TestUpdateDeleteAndChanges(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), 0o600, nil)
	require.NoError(t, err)
	defer db.Close()
	r, err := New(db)
	require.NoError(t, err)
	var changes []Change
	r.OnChange(func(c Change) { changes = append(changes, c) })
	_, _, err = r.Create(Device{ID: "d", Type: "thermostat"})
	require.NoError(t, err)
	name := "Kitchen"
	labels := map[string]string{"room": "kitchen"}
	d, err := r.Update("d", Patch{Name: &name, Labels: &labels})
	require.NoError(t, err)
	require.Equal(t, "Kitchen", d.Name)
	require.Equal(t, "kitchen", d.Labels["room"])
	bad := map[string]string{"a b": "x"}
	_, err = r.Update("d", Patch{Labels: &bad})
	var ve *ValidationError
	require.ErrorAs(t, err, &ve)
	_, err = r.Update("ghost", Patch{Name: &name})
	require.ErrorIs(t, err, ErrNotFound)
	_, _, err = r.RotateToken("d")
	require.NoError(t, err)
	require.NoError(t, r.Delete("d"))
	require.ErrorIs(t, r.Delete("d"), ErrNotFound)
	_, ok := r.Get("d")
	require.False(t, ok)
	require.Equal(t, []Change{{TokenRotated, "d"}, {Deleted, "d"}}, changes)
}

// BenchmarkAuthenticate is the cost of one device CONNECT's credential
// check: a reconnect storm of 10,000 devices costs 10,000 of these.
func BenchmarkAuthenticate(b *testing.B) {
	db, err := bolt.Open(filepath.Join(b.TempDir(), "state.db"), 0o600, nil)
	require.NoError(b, err)
	defer db.Close()
	r, err := New(db)
	require.NoError(b, err)
	tokens := make([]string, 1000)
	for i := range tokens {
		_, tokens[i], err = r.Create(Device{ID: fmt.Sprintf("d-%04d", i), Type: "thermostat"})
		require.NoError(b, err)
	}
	b.ResetTimer()
	for i := range b.N {
		if _, ok := r.Authenticate(fmt.Sprintf("d-%04d", i%1000), tokens[i%1000]); !ok {
			b.Fatal("refused")
		}
	}
}
