package control

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/internal/testenv"
	"github.com/telehub/telehub/internal/wal"
)

// desiredRecorder stands in for the broker's retained publishes.
type desiredRecorder struct {
	mu  sync.Mutex
	got map[string][]string
}

func (d *desiredRecorder) PublishDesired(id string, payload []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.got[id] = append(d.got[id], string(payload))
	return nil
}

func (d *desiredRecorder) last(id string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.got[id]) == 0 {
		return ""
	}
	return d.got[id][len(d.got[id])-1]
}

func TestDelta(t *testing.T) {
	for _, tc := range []struct {
		name, desired, reported, delta string
	}{
		{"in sync", `{"setpoint":22,"mode":"heat"}`, `{"setpoint":22.0,"mode":"heat","extra":1}`, `{}`},
		{"differs", `{"setpoint":22,"mode":"heat"}`, `{"setpoint":21,"mode":"heat"}`, `{"setpoint":22}`},
		{"missing", `{"mode":"off"}`, `{}`, `{"mode":"off"}`},
		{"nested", `{"fan":{"speed":2,"on":true}}`, `{"fan":{"speed":1,"on":true}}`, `{"fan":{"speed":2}}`},
		{"object against scalar", `{"fan":{"speed":2}}`, `{"fan":3}`, `{"fan":{"speed":2}}`},
		{"null desired, missing reported", `{"x":null}`, `{}`, `{}`},
		{"arrays compare whole", `{"days":[1,2]}`, `{"days":[1,2,3]}`, `{"days":[1,2]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := decodeObject([]byte(tc.desired))
			require.NoError(t, err)
			r, err := decodeObject([]byte(tc.reported))
			require.NoError(t, err)
			got, err := json.Marshal(Delta(d, r))
			require.NoError(t, err)
			require.JSONEq(t, tc.delta, string(got))
		})
	}
}

type oneDevice struct{}

func (oneDevice) Get(id string) (devices.Device, bool) {
	return devices.Device{ID: id, Type: "thermostat"}, id == "t1"
}

func TestStatesDesiredReportedAndPersistence(t *testing.T) {
	dir := t.TempDir()
	db := openStateDB(t, dir)
	rec := &liveRecorder{}
	s, err := NewStates(DefaultStateConfig(), db, oneDevice{}, rec, nil, discard())
	require.NoError(t, err)
	pub := &desiredRecorder{got: map[string][]string{}}
	s.Start(context.Background(), pub)

	_, err = s.SetDesired("ghost", json.RawMessage(`{}`), nil, "op")
	require.ErrorIs(t, err, devices.ErrNotFound)
	for _, bad := range []string{`[1]`, `"x"`, `{`, `null`} {
		_, err = s.SetDesired("t1", json.RawMessage(bad), nil, "op")
		var ve *devices.ValidationError
		require.ErrorAs(t, err, &ve, bad)
	}

	st, err := s.SetDesired("t1", json.RawMessage(`{"setpoint": 22, "mode": "heat"}`), nil, "op (1)")
	require.NoError(t, err)
	require.Equal(t, uint64(1), st.DesiredVersion)
	require.False(t, st.InSync)
	require.Equal(t, "op (1)", st.DesiredBy)
	var msg DesiredMessage
	require.NoError(t, json.Unmarshal([]byte(pub.last("t1")), &msg))
	require.Equal(t, uint64(1), msg.Version)
	require.Equal(t, 22.0, msg.State["setpoint"])

	v0 := uint64(0)
	_, err = s.SetDesired("t1", json.RawMessage(`{"setpoint":23}`), &v0, "op")
	require.ErrorIs(t, err, ErrVersionConflict)

	require.Error(t, report(s, "t1", []byte(`not json`), time.Now()))
	require.Error(t, report(s, "t1", []byte(`[1]`), time.Now()))
	require.NoError(t, report(s, "t1", []byte(`{"setpoint":22.0,"mode":"heat"}`), time.Now()))
	require.NoError(t, report(s, "t1", []byte(`{"mode":"heat","setpoint":22}`), time.Now()), "the same state again")
	st, ok := s.Get("t1")
	require.True(t, ok)
	require.True(t, st.InSync)
	require.Equal(t, uint64(1), st.ReportedVersion, "an unchanged report is no new version")
	require.Len(t, rec.msgs, 2, "one event for the desired change, one for the reported change")
	_, ok = s.Get("ghost")
	require.False(t, ok)

	s.Stop()
	require.NoError(t, db.Close())

	// Both halves survive a restart; Start publishes the desired state again.
	db = openStateDB(t, dir)
	defer db.Close()
	s, err = NewStates(DefaultStateConfig(), db, oneDevice{}, nil, nil, discard())
	require.NoError(t, err)
	pub = &desiredRecorder{got: map[string][]string{}}
	s.Start(context.Background(), pub)
	defer s.Stop()
	st, _ = s.Get("t1")
	require.True(t, st.InSync)
	require.Equal(t, uint64(1), st.ReportedVersion)
	require.Equal(t, json.Number("22"), st.Desired["setpoint"])
	testenv.Eventually(t, 5*time.Second, "the desired state is published", func() bool { return pub.last("t1") != "" })

	s.RetainedExpired("t1")
	testenv.Eventually(t, 5*time.Second, "the desired state is published again when its retained copy expires", func() bool { pub.mu.Lock(); defer pub.mu.Unlock(); return len(pub.got["t1"]) == 2 })

	s.Forget("t1")
	testenv.Eventually(t, 5*time.Second, "an empty retained message clears the desired state",
		func() bool { return pub.last("t1") == "" && len(pub.got["t1"]) == 3 })
	st, _ = s.Get("t1")
	require.Zero(t, st.DesiredVersion)
}

func TestStatesRefuseLargeDocuments(t *testing.T) {
	db := openStateDB(t, t.TempDir())
	defer db.Close()
	s, err := NewStates(StateConfig{MaxBytes: 256}, db, oneDevice{}, nil, nil, discard())
	require.NoError(t, err)
	big := `{"x":"` + string(make([]byte, 300)) + `"}`
	require.Error(t, report(s, "t1", []byte(big), time.Now()))
	_, err = s.SetDesired("t1", json.RawMessage(big), nil, "op")
	var ve *devices.ValidationError
	require.ErrorAs(t, err, &ve)
}

// report takes a reported state, not waiting for it to be stored.
func report(s *States, deviceID string, payload []byte, at time.Time) error {
	_, err := s.Reported(deviceID, payload, at)
	return err
}

// storedReport reads a device's reported state from the database itself.
func storedReport(t *testing.T, db *bolt.DB, id string) string {
	t.Helper()
	var rec stateRecord
	require.NoError(t, db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(stateBucket).Get([]byte(id))
		if v == nil {
			return nil
		}
		return json.Unmarshal(v, &rec)
	}))
	return string(rec.Reported)
}

// TestReportCommitMeansStored checks the promise the broker's PUBACK of a
// state report rests on: the commit Reported returns completes only once
// the report is in the state database. A write transaction held by the
// test keeps the flusher from writing meanwhile.
func TestReportCommitMeansStored(t *testing.T) {
	db := openStateDB(t, t.TempDir())
	defer db.Close()
	s, err := NewStates(DefaultStateConfig(), db, oneDevice{}, nil, nil, discard())
	require.NoError(t, err)
	s.Start(context.Background(), &desiredRecorder{got: map[string][]string{}})

	tx, err := db.Begin(true) // the flusher cannot write until it ends
	require.NoError(t, err)
	c1, err := s.Reported("t1", []byte(`{"n":1}`), time.Now())
	require.NoError(t, err)
	c2, err := s.Reported("t1", []byte(`{"n":2}`), time.Now())
	require.NoError(t, err)
	for _, c := range []wal.Commit{c1, c2} {
		done, _ := c.TryWait()
		require.False(t, done, "a report is not acknowledged before it is stored")
	}
	require.NoError(t, tx.Rollback())
	for _, c := range []wal.Commit{c1, c2} {
		_, err := c.Wait()
		require.NoError(t, err)
	}
	require.JSONEq(t, `{"n":2}`, storedReport(t, db, "t1"), "the last acknowledged report is stored")

	s.Stop()
	c3, err := s.Reported("t1", []byte(`{"n":3}`), time.Now())
	require.NoError(t, err)
	_, err = c3.Wait()
	require.ErrorIs(t, err, errStatesStopped, "after Stop nothing is stored, so nothing may be acknowledged")
}
