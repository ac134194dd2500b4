package auth

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
)

func TestTokensRolesRevokePersist(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := bolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	s, err := New(db)
	require.NoError(t, err)
	require.NoError(t, s.EnsureAdmin("boot"))
	require.NoError(t, s.EnsureAdmin("boot"), "idempotent")
	require.Len(t, s.List(), 1)

	tok, secret, err := s.Create("ops dashboard", Operator, "admin")
	require.NoError(t, err)
	got, ok := s.Authenticate(secret)
	require.True(t, ok)
	require.Equal(t, Operator, got.Role)
	require.Equal(t, tok.ID, got.ID)
	_, ok = s.Authenticate(secret + "x")
	require.False(t, ok)
	_, ok = s.Authenticate("")
	require.False(t, ok)

	_, _, err = s.Create("", Viewer, "")
	require.Error(t, err)
	_, _, err = s.Create("x", Role(9), "")
	require.Error(t, err)

	require.NoError(t, db.Close())
	db, err = bolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	defer db.Close()
	s, err = New(db)
	require.NoError(t, err)
	got, ok = s.Authenticate("boot")
	require.True(t, ok, "survives restart")
	require.Equal(t, Admin, got.Role)
	require.NoError(t, s.Delete(tok.ID))
	_, ok = s.Authenticate(secret)
	require.False(t, ok, "revoked")
	require.ErrorIs(t, s.Delete(tok.ID), ErrNotFound)
}

func TestParseRole(t *testing.T) {
	for _, n := range []string{"viewer", "operator", "admin"} {
		r, err := ParseRole(n)
		require.NoError(t, err)
		require.Equal(t, n, r.String())
	}
	_, err := ParseRole("root")
	require.Error(t, err)
	require.True(t, Admin > Operator && Operator > Viewer)
}

// Get answers with the token as it is now, Changed closes when a token is
// deleted (and is replaced by a fresh channel), HasAdmin sees admin tokens.
func TestGetChangedHasAdmin(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), 0o600, nil)
	require.NoError(t, err)
	defer db.Close()
	s, err := New(db)
	require.NoError(t, err)
	require.False(t, s.HasAdmin())
	v, _, err := s.Create("wall", Viewer, "")
	require.NoError(t, err)
	require.False(t, s.HasAdmin(), "a viewer is no admin")
	a, _, err := s.Create("root", Admin, "")
	require.NoError(t, err)
	require.True(t, s.HasAdmin())

	got, ok := s.Get(v.ID)
	require.True(t, ok)
	require.Equal(t, Viewer, got.Role)

	ch := s.Changed()
	select {
	case <-ch:
		t.Fatal("closed before any change")
	default:
	}
	require.NoError(t, s.Delete(v.ID))
	select {
	case <-ch:
	default:
		t.Fatal("not closed by the deletion")
	}
	next := s.Changed()
	require.NotEqual(t, ch, next, "a fresh channel for the next change")
	_, ok = s.Get(v.ID)
	require.False(t, ok)
	require.NoError(t, s.Delete(a.ID))
	require.False(t, s.HasAdmin())
	<-next
}
