package forward

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
)

// TestSameDocument: the desired state here (decoded with json.Number, as
// control.States keeps it) and a document from the upstream are the same
// when their members are, numbers compared by value and keys in any order.
func TestSameDocument(t *testing.T) {
	decode := func(s string) map[string]any {
		dec := json.NewDecoder(bytes.NewReader([]byte(s)))
		dec.UseNumber()
		var m map[string]any
		require.NoError(t, dec.Decode(&m))
		return m
	}
	tests := []struct {
		name, cur, doc string
		same           bool
	}{
		{"equal", `{"setpoint":21.5,"mode":"heat"}`, `{"mode":"heat","setpoint":21.5}`, true},
		{"number forms", `{"setpoint":21.50}`, `{"setpoint":2.15e1}`, true},
		{"nested", `{"a":{"b":[1,2,{"c":null}]}}`, `{"a":{"b":[1,2,{"c":null}]}}`, true},
		{"both empty", `{}`, `{}`, true},
		{"value differs", `{"setpoint":21.5}`, `{"setpoint":21}`, false},
		{"member missing", `{"setpoint":21.5,"mode":"heat"}`, `{"setpoint":21.5}`, false},
		{"type differs", `{"setpoint":"21.5"}`, `{"setpoint":21.5}`, false},
		{"not an object", `{}`, `[1]`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.same, sameDocument(decode(tc.cur), json.RawMessage(tc.doc)))
		})
	}
}

// TestDesiredQueueKeepsTheNewest: the messages of one connection are
// handled on several goroutines, so an older version may come after a
// newer one; it is dropped, whether or not the newer one was applied yet.
func TestDesiredQueueKeepsTheNewest(t *testing.T) {
	q := newDesiredQueue()
	q.put("t1", desiredUpdate{version: 3, state: json.RawMessage(`{"v":3}`)})
	q.put("t1", desiredUpdate{version: 2, state: json.RawMessage(`{"v":2}`)})
	q.put("t2", desiredUpdate{version: 1, state: json.RawMessage(`{"v":1}`)})
	got := q.take()
	require.Len(t, got, 2)
	require.Equal(t, uint64(3), got["t1"].version)
	require.JSONEq(t, `{"v":3}`, string(got["t1"].state))
	require.Nil(t, q.take(), "taken")

	q.put("t1", desiredUpdate{version: 3, state: json.RawMessage(`{"v":3}`)}) // a redelivery
	q.put("t1", desiredUpdate{version: 1, state: json.RawMessage(`{"v":1}`)}) // late
	require.Nil(t, q.take(), "nothing newer than what was taken")
	q.put("t1", desiredUpdate{version: 4, state: json.RawMessage(`{"v":4}`)})
	require.Equal(t, uint64(4), q.take()["t1"].version)
}

// TestAnswerBook: pending answers are kept until struck out, across a
// reopening of the database.
func TestAnswerBook(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := bolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	f := &Forwarder{routed: make(chan struct{})}
	require.NoError(t, f.KeepAnswers(db))
	close(f.routed)
	f.noteAnswer("t1", "up-1", "local-1")
	f.noteAnswer("t1", "up-2", "local-2")
	f.noteAnswer("t2", "up-1", "local-3")
	f.noteAnswer("t1", "up-1", "local-1") // a redelivered command
	f.answered("t1", "up-2")
	require.NoError(t, db.Close())

	db, err = bolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	defer db.Close()
	f = &Forwarder{routed: make(chan struct{})}
	require.NoError(t, f.KeepAnswers(db))
	got, err := f.answers.list()
	require.NoError(t, err)
	require.ElementsMatch(t, []pendingAnswer{{"t1", "up-1", "local-1"}, {"t2", "up-1", "local-3"}}, got)
}
