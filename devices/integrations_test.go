package devices

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
)

func TestIntegrationValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   Integration
		ok   bool
	}{
		{"subscribe only", Integration{ID: "ha", Subscribe: []string{"devices/+/telemetry"}}, true},
		{"publish only", Integration{ID: "node-red", Publish: []string{"site/#"}}, true},
		{"everything", Integration{ID: "x", Subscribe: []string{"#", "$SYS/#"}}, true},
		{"no filters", Integration{ID: "ha"}, false},
		{"bad id", Integration{ID: "h a", Subscribe: []string{"#"}}, false},
		{"id with slash", Integration{ID: "a/b", Subscribe: []string{"#"}}, false},
		{"empty filter", Integration{ID: "ha", Subscribe: []string{""}}, false},
		{"# not last", Integration{ID: "ha", Subscribe: []string{"a/#/b"}}, false},
		{"partial wildcard", Integration{ID: "ha", Subscribe: []string{"a/b+"}}, false},
		{"shared", Integration{ID: "ha", Subscribe: []string{"$share/g/a"}}, false},
		{"not UTF-8", Integration{ID: "ha", Publish: []string{"a/\xff"}}, false},
		{"NUL", Integration{ID: "ha", Publish: []string{"a\x00"}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.in.Validate()
			if tc.ok {
				require.NoError(t, err)
			} else {
				var ve *ValidationError
				require.ErrorAs(t, err, &ve)
			}
		})
	}
}

func TestIntegrationsStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := bolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	s, err := NewIntegrations(db)
	require.NoError(t, err)
	var deleted []string
	s.OnDelete(func(id string) { deleted = append(deleted, id) })

	in, secret, err := s.Create(Integration{ID: "ha", Subscribe: []string{"devices/+/telemetry"}}, "admin (1)")
	require.NoError(t, err)
	require.Equal(t, "admin (1)", in.CreatedBy)
	require.Equal(t, []string{}, in.Publish)
	_, _, err = s.Create(Integration{ID: "ha", Subscribe: []string{"#"}}, "")
	require.ErrorIs(t, err, ErrIntegrationExists)

	_, ok := s.Authenticate("ha", secret)
	require.True(t, ok)
	_, ok = s.Authenticate("ha", secret+"x")
	require.False(t, ok)
	_, ok = s.Authenticate("ghost", secret)
	require.False(t, ok)

	// Only the hash is stored.
	require.NoError(t, db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(integrationBucket).Get([]byte("ha"))
		require.NotNil(t, v)
		require.False(t, bytes.Contains(v, []byte(secret)))
		return nil
	}))

	// Reopened, the integration and its secret are still there.
	require.NoError(t, db.Close())
	db, err = bolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	defer db.Close()
	s, err = NewIntegrations(db)
	require.NoError(t, err)
	s.OnDelete(func(id string) { deleted = append(deleted, id) })
	got, ok := s.Authenticate("ha", secret)
	require.True(t, ok)
	require.Equal(t, []string{"devices/+/telemetry"}, got.Subscribe)
	require.Len(t, s.List(), 1)

	require.NoError(t, s.Delete("ha"))
	require.ErrorIs(t, s.Delete("ha"), ErrIntegrationNotFound)
	require.Equal(t, []string{"ha"}, deleted)
	_, ok = s.Authenticate("ha", secret)
	require.False(t, ok)
	require.Empty(t, s.List())
}
