package control

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/internal/live"
	"github.com/telehub/telehub/internal/testenv"
	"github.com/telehub/telehub/internal/wal"
)

// fakeSender stands in for the broker: a device is reachable or not, and
// every send is recorded.
type fakeSender struct {
	mu        sync.Mutex
	reachable map[string]bool
	sent      []string
}

func (s *fakeSender) SendCommand(c Command) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.reachable[c.DeviceID] {
		return ErrUnreachable
	}
	s.sent = append(s.sent, c.ID)
	return nil
}

func (s *fakeSender) setReachable(dev string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reachable[dev] = ok
}

func (s *fakeSender) sends() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.sent)
}

// liveRecorder keeps the live stream messages.
type liveRecorder struct {
	mu   sync.Mutex
	msgs []live.Message
}

func (l *liveRecorder) Publish(msgs ...live.Message) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, msgs...)
}

// statuses returns the statuses the stream reported for a command.
func (l *liveRecorder) statuses(t *testing.T, id string) []CommandStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []CommandStatus
	for _, m := range l.msgs {
		var ev struct {
			Kind    string  `json:"kind"`
			Command Command `json:"command"`
		}
		require.NoError(t, json.Unmarshal(m.Body, &ev))
		if ev.Kind == live.KindCommand && ev.Command.ID == id {
			out = append(out, ev.Command.Status)
		}
	}
	return out
}

type cmdHarness struct {
	db     *bolt.DB
	c      *Commands
	sender *fakeSender
	live   *liveRecorder
	cancel context.CancelFunc
}

func openStateDB(t *testing.T, dir string) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, "state.db"), 0o600, nil)
	require.NoError(t, err)
	return db
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// startCommands runs a command service on the state database in dir.
func startCommands(t *testing.T, dir string, cfg CommandConfig) *cmdHarness {
	t.Helper()
	h := &cmdHarness{db: openStateDB(t, dir), sender: &fakeSender{reachable: map[string]bool{}}, live: &liveRecorder{}}
	store, err := NewBoltCommandStore(h.db)
	require.NoError(t, err)
	h.c, err = NewCommands(cfg, store, nil, nil, h.live, nil, discard())
	require.NoError(t, err)
	var ctx context.Context
	ctx, h.cancel = context.WithCancel(context.Background())
	h.c.Start(ctx, h.sender)
	return h
}

func (h *cmdHarness) stop() {
	h.c.Stop()
	h.cancel()
	h.db.Close()
}

func (h *cmdHarness) status(t *testing.T, dev, id string) CommandStatus {
	t.Helper()
	c, ok := h.c.Get(dev, id)
	require.True(t, ok)
	return c.Status
}

func submit(t *testing.T, c *Commands, dev, name string, timeout time.Duration) Command {
	t.Helper()
	cmd, replayed, err := c.Submit(CommandRequest{DeviceID: dev, Name: name, Timeout: timeout, By: "test"})
	require.NoError(t, err)
	require.False(t, replayed)
	return cmd
}

func TestCommandLifecycle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startCommands(t, t.TempDir(), DefaultCommandConfig())
		defer h.stop()

		ok := submit(t, h.c, "d1", "ping", time.Minute)
		bad := submit(t, h.c, "d1", "pong", time.Minute)
		synctest.Wait()
		require.Equal(t, StatusQueued, h.status(t, "d1", ok.ID), "the device is not reachable")
		require.Empty(t, h.sender.sends())

		h.sender.setReachable("d1", true)
		h.c.OnPresence(devices.PresenceEvent{DeviceID: "d1", Online: true})
		synctest.Wait()
		require.Equal(t, []string{ok.ID, bad.ID}, h.sender.sends(), "oldest first")
		require.Equal(t, StatusSent, h.status(t, "d1", ok.ID))

		h.c.Delivered("d1", ok.ID, true)
		synctest.Wait()
		require.Equal(t, StatusDelivered, h.status(t, "d1", ok.ID))
		require.NoError(t, answer(h.c, "d1", ok.ID, CommandResult{OK: true, Result: json.RawMessage(`{"pong":1}`), Via: ViaResultTopic}))
		require.NoError(t, answer(h.c, "d1", bad.ID, CommandResult{Error: "no such thing", Via: ViaResponseTopic}))
		synctest.Wait()

		got, _ := h.c.Get("d1", ok.ID)
		require.Equal(t, StatusSucceeded, got.Status)
		require.JSONEq(t, `{"pong":1}`, string(got.Result))
		require.Equal(t, uint64(4), got.Revision)
		require.NotNil(t, got.CompletedAt)
		require.Equal(t, []CommandStatus{StatusQueued, StatusSent, StatusDelivered, StatusSucceeded}, h.live.statuses(t, ok.ID))
		got, _ = h.c.Get("d1", bad.ID)
		require.Equal(t, StatusFailed, got.Status)
		require.Equal(t, "no such thing", got.Error)
		require.Equal(t, ViaResponseTopic, got.ResultVia)

		// Answers that complete nothing are refused, not applied.
		require.ErrorIs(t, answer(h.c, "d1", ok.ID, CommandResult{OK: true}), ErrLate)
		require.ErrorIs(t, answer(h.c, "d2", ok.ID, CommandResult{OK: true}), ErrCommandNotFound, "another device's command")
		require.ErrorIs(t, answer(h.c, "d1", "nope", CommandResult{OK: true}), ErrCommandNotFound)
		_, found := h.c.Get("d2", ok.ID)
		require.False(t, found)

		list := h.c.List("d1", CommandFilter{Statuses: []CommandStatus{StatusFailed}})
		require.Len(t, list, 1)
		require.Equal(t, bad.ID, list[0].ID)
		require.Len(t, h.c.List("d1", CommandFilter{}), 2)
		require.Len(t, h.c.List("d1", CommandFilter{Name: "ping"}), 1)
	})
}

// TestResultBeforePuback: a device that answers before its PUBACK of the
// command reached the hub (paho acknowledges once its handler returned,
// and the handler may publish the result) still has a delivered command:
// the result proves the delivery, and the late PUBACK changes nothing.
func TestResultBeforePuback(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startCommands(t, t.TempDir(), DefaultCommandConfig())
		defer h.stop()
		h.sender.setReachable("d1", true)
		cmd := submit(t, h.c, "d1", "ping", time.Minute)
		h.c.OnPresence(devices.PresenceEvent{DeviceID: "d1", Online: true})
		synctest.Wait()
		require.Equal(t, StatusSent, h.status(t, "d1", cmd.ID))

		require.NoError(t, answer(h.c, "d1", cmd.ID, CommandResult{OK: true, Via: ViaResultTopic}))
		synctest.Wait()
		h.c.Delivered("d1", cmd.ID, true) // the PUBACK, late
		synctest.Wait()

		got, _ := h.c.Get("d1", cmd.ID)
		require.Equal(t, StatusSucceeded, got.Status)
		require.NotNil(t, got.DeliveredAt)
		want := []CommandStatus{StatusQueued, StatusSent, StatusDelivered, StatusSucceeded}
		var history []CommandStatus
		for _, tr := range got.History {
			history = append(history, tr.Status)
		}
		require.Equal(t, want, history)
		require.Equal(t, want, h.live.statuses(t, cmd.ID))
	})
}

func TestCommandExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startCommands(t, t.TempDir(), DefaultCommandConfig())
		defer h.stop()
		queued := submit(t, h.c, "off", "a", 10*time.Second)
		h.sender.setReachable("on", true)
		delivered := submit(t, h.c, "on", "b", 20*time.Second)
		synctest.Wait()
		h.c.Delivered("on", delivered.ID, true)

		time.Sleep(9 * time.Second)
		synctest.Wait()
		require.Equal(t, StatusQueued, h.status(t, "off", queued.ID))
		time.Sleep(2 * time.Second)
		synctest.Wait()
		require.Equal(t, StatusExpired, h.status(t, "off", queued.ID))
		require.Equal(t, StatusDelivered, h.status(t, "on", delivered.ID))
		time.Sleep(10 * time.Second)
		synctest.Wait()
		require.Equal(t, StatusExpired, h.status(t, "on", delivered.ID), "delivered but never answered")

		// An expired command is not sent when its device comes back.
		h.sender.setReachable("off", true)
		h.c.Subscribed("off")
		synctest.Wait()
		require.Equal(t, []string{delivered.ID}, h.sender.sends())
		require.ErrorIs(t, answer(h.c, "on", delivered.ID, CommandResult{OK: true}), ErrLate, "a late answer changes nothing")
	})
}

func TestCommandWaitLongPoll(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startCommands(t, t.TempDir(), DefaultCommandConfig())
		defer h.stop()
		cmd := submit(t, h.c, "d", "x", time.Minute)
		synctest.Wait()

		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		got, ok := h.c.Wait(ctx, "d", cmd.ID, cmd.Revision)
		require.True(t, ok)
		require.Equal(t, cmd.Revision, got.Revision, "nothing changed within the wait")

		done := make(chan Command)
		go func() {
			c, _ := h.c.Wait(context.Background(), "d", cmd.ID, cmd.Revision)
			done <- c
		}()
		synctest.Wait()
		h.sender.setReachable("d", true)
		h.c.Subscribed("d")
		require.Equal(t, StatusSent, (<-done).Status)
		_, ok = h.c.Wait(ctx, "other", cmd.ID, 0)
		require.False(t, ok)
	})
}

func TestCommandIdempotencyLimitsAndValidation(t *testing.T) {
	cfg := DefaultCommandConfig()
	cfg.MaxPending = 2
	h := startCommands(t, t.TempDir(), cfg)
	defer h.stop()
	req := CommandRequest{DeviceID: "d", Name: "set", Params: json.RawMessage(`{"v": 1, "w": [1,2]}`), IdempotencyKey: "k"}
	first, replayed, err := h.c.Submit(req)
	require.NoError(t, err)
	require.False(t, replayed)
	require.JSONEq(t, `{"v":1,"w":[1,2]}`, string(first.Params))

	req.Params = json.RawMessage(`{"w":[1,2],"v":1.0}`) // the same parameters
	again, replayed, err := h.c.Submit(req)
	require.NoError(t, err)
	require.True(t, replayed)
	require.Equal(t, first.ID, again.ID)

	req.Params = json.RawMessage(`{"v":2}`)
	_, _, err = h.c.Submit(req)
	require.ErrorIs(t, err, ErrIdempotencyConflict)
	_, _, err = h.c.Submit(CommandRequest{DeviceID: "other", Name: "set", IdempotencyKey: "k"})
	require.NoError(t, err, "keys are per device")

	submit(t, h.c, "d", "second", 0)
	_, _, err = h.c.Submit(CommandRequest{DeviceID: "d", Name: "third"})
	require.ErrorIs(t, err, ErrQueueFull)

	for _, tc := range []struct {
		name string
		req  CommandRequest
	}{
		{"bad name", CommandRequest{DeviceID: "x", Name: "a b"}},
		{"params not an object", CommandRequest{DeviceID: "x", Name: "a", Params: json.RawMessage(`[1]`)}},
		{"params not JSON", CommandRequest{DeviceID: "x", Name: "a", Params: json.RawMessage(`{`)}},
		{"both expiries", CommandRequest{DeviceID: "x", Name: "a", Timeout: time.Second, ExpiresAt: time.Now().Add(time.Hour)}},
		{"expiry in the past", CommandRequest{DeviceID: "x", Name: "a", ExpiresAt: time.Now().Add(-time.Second)}},
		{"timeout above max", CommandRequest{DeviceID: "x", Name: "a", Timeout: cfg.MaxTimeout + time.Second}},
		{"bad idempotency key", CommandRequest{DeviceID: "x", Name: "a", IdempotencyKey: "a\nb"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := h.c.Submit(tc.req)
			var ve *devices.ValidationError
			require.ErrorAs(t, err, &ve)
		})
	}
}

// A restart keeps every command in its status; commands sent but never
// acknowledged are sent again (at least once), delivered ones are not.
func TestCommandsReloadAfterRestart(t *testing.T) {
	dir := t.TempDir()
	h := startCommands(t, dir, DefaultCommandConfig())
	h.sender.setReachable("d", true)
	delivered := submit(t, h.c, "d", "delivered", time.Hour)
	sent := submit(t, h.c, "d", "sent", time.Hour)
	testenv.Eventually(t, 5*time.Second, "the command is sent", func() bool { return h.status(t, "d", sent.ID) == StatusSent })
	h.c.Delivered("d", delivered.ID, true)
	testenv.Eventually(t, 5*time.Second, "the command is delivered", func() bool { return h.status(t, "d", delivered.ID) == StatusDelivered })
	h.sender.setReachable("d", false)
	queued := submit(t, h.c, "d", "queued", time.Hour)
	keyed, _, err := h.c.Submit(CommandRequest{DeviceID: "d", Name: "keyed", IdempotencyKey: "k", Timeout: time.Hour})
	require.NoError(t, err)
	h.stop()

	h = startCommands(t, dir, DefaultCommandConfig())
	defer h.stop()
	require.Equal(t, StatusDelivered, h.status(t, "d", delivered.ID))
	require.Equal(t, StatusSent, h.status(t, "d", sent.ID))
	require.Equal(t, StatusQueued, h.status(t, "d", queued.ID))
	again, replayed, err := h.c.Submit(CommandRequest{DeviceID: "d", Name: "keyed", IdempotencyKey: "k"})
	require.NoError(t, err)
	require.True(t, replayed)
	require.Equal(t, keyed.ID, again.ID)

	h.sender.setReachable("d", true)
	h.c.Subscribed("d")
	testenv.Eventually(t, 5*time.Second, "three commands sent after the restart", func() bool { return len(h.sender.sends()) == 3 })
	require.Equal(t, []string{sent.ID, queued.ID, keyed.ID}, h.sender.sends())
	c, _ := h.c.Get("d", sent.ID)
	require.Equal(t, 2, c.Attempts)
	require.Equal(t, "attempt 2", c.History[len(c.History)-1].Detail)
}

func TestCommandDroppedDeliveryIsSentAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startCommands(t, t.TempDir(), DefaultCommandConfig())
		defer h.stop()
		h.sender.setReachable("d", true)
		cmd := submit(t, h.c, "d", "x", time.Hour)
		synctest.Wait()
		h.sender.setReachable("d", false)
		h.c.Delivered("d", cmd.ID, false)
		synctest.Wait()
		require.Equal(t, StatusQueued, h.status(t, "d", cmd.ID))
		h.sender.setReachable("d", true)
		h.c.OnPresence(devices.PresenceEvent{DeviceID: "d", Online: true})
		synctest.Wait()
		require.Equal(t, []string{cmd.ID, cmd.ID}, h.sender.sends())
		require.Equal(t, []CommandStatus{StatusQueued, StatusSent, StatusQueued, StatusSent}, h.live.statuses(t, cmd.ID))
	})
}

func TestCommandPruneAndForget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := DefaultCommandConfig()
		cfg.KeepPerDevice, cfg.RetryInterval, cfg.Retention = 1, time.Minute, time.Hour
		dir := t.TempDir()
		h := startCommands(t, dir, cfg)
		defer h.stop()
		h.sender.setReachable("d", true)
		var ids []string
		for range 3 {
			c := submit(t, h.c, "d", "x", time.Hour)
			synctest.Wait()
			require.NoError(t, answer(h.c, "d", c.ID, CommandResult{OK: true}))
			ids = append(ids, c.ID)
		}
		pending := submit(t, h.c, "d", "pending", 2*time.Hour)
		time.Sleep(cfg.RetryInterval)
		synctest.Wait()
		got := h.c.List("d", CommandFilter{})
		require.Len(t, got, 2, "the pending command and the newest final one")
		require.Equal(t, []string{pending.ID, ids[2]}, []string{got[0].ID, got[1].ID})

		h.c.Forget("d")
		synctest.Wait()
		require.Empty(t, h.c.List("d", CommandFilter{}))
		require.Equal(t, StatusFailed, h.live.statuses(t, pending.ID)[len(h.live.statuses(t, pending.ID))-1])
		n := 0
		require.NoError(t, boltStore(t, h.db).Load(func(Command) error { n++; return nil }))
		require.Zero(t, n, "deleted from the store too")
	})
}

func boltStore(t *testing.T, db *bolt.DB) *BoltCommandStore {
	t.Helper()
	s, err := NewBoltCommandStore(db)
	require.NoError(t, err)
	return s
}

func TestParseResultAndResponse(t *testing.T) {
	for _, tc := range []struct {
		name, payload string
		ok            bool
		result, err   string
		invalid       bool
	}{
		{"ok", `{"status":"ok","result":{"a":1}}`, true, `{"a":1}`, "", false},
		{"ok without result", `{"status":"ok"}`, true, "", "", false},
		{"error", `{"status":"error","error":"too hot"}`, false, "", "too hot", false},
		{"error without reason", `{"status":"error"}`, false, "", "the device reported an error without a reason", false},
		{"unknown status", `{"status":"maybe"}`, false, "", "", true},
		{"not JSON", `ok`, false, "", "", true},
		{"array", `[]`, false, "", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseResult([]byte(tc.payload))
			if tc.invalid {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.ok, r.OK)
			require.Equal(t, tc.err, r.Error)
			if tc.result == "" {
				require.Empty(t, r.Result)
			} else {
				require.JSONEq(t, tc.result, string(r.Result))
			}
		})
	}
	// Responses: the result format, or any payload as a success.
	r := ParseResponse([]byte(`{"status":"error","error":"x"}`))
	require.False(t, r.OK)
	require.Equal(t, ViaResponseTopic, r.Via)
	r = ParseResponse([]byte(`{"pong":true}`))
	require.True(t, r.OK)
	require.JSONEq(t, `{"pong":true}`, string(r.Result))
	r = ParseResponse([]byte("plain text"))
	require.True(t, r.OK)
	require.JSONEq(t, `"plain text"`, string(r.Result))
}

func FuzzParseResult(f *testing.F) {
	for _, s := range []string{`{"status":"ok","result":{"a":1}}`, `{"status":"error","error":"x"}`, `{"status":1}`, `null`, "\xff"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, err := ParseResult(b); err == nil {
			require.True(t, r.OK || r.Error != "")
			require.LessOrEqual(t, len(r.Error), maxErrorLen)
		}
		r := ParseResponse(b)
		if len(r.Result) > 0 {
			require.True(t, json.Valid(r.Result))
		}
	})
}

func TestCommandIDsSortByTime(t *testing.T) {
	a := newCommandID(time.UnixMilli(1_700_000_000_000))
	b := newCommandID(time.UnixMilli(1_700_000_000_001))
	require.Len(t, a, 26)
	require.Less(t, a, b)
	require.Regexp(t, `^[0-9a-z]+$`, a)

	now := time.Now()
	prev := newCommandID(now)
	for range 1000 {
		id := newCommandID(now) // the same millisecond
		require.Less(t, prev, id, "IDs of one millisecond sort in creation order")
		prev = id
	}

	// A clock stepped back keeps the last millisecond.
	ahead := newCommandID(now.Add(5 * time.Millisecond))
	require.Less(t, ahead, newCommandID(now), "an ID made after a clock step back sorts after the earlier one")

	// The text is the ULID's 16 bytes as they are: the millisecond reads
	// back, and an ID stored by an earlier release (the greatest one of
	// 2025-12-01T00:00:00Z) sorts before every new one.
	raw, err := idEncoding.DecodeString(prev)
	require.NoError(t, err)
	var id ulid.ULID
	require.NoError(t, id.UnmarshalBinary(raw))
	require.GreaterOrEqual(t, id.Time(), ulid.Timestamp(now))
	require.Less(t, "06ddedc403zzzzzzzzzzzzzzzw", prev)
}

// answer reports a device's answer, not waiting for it to be stored.
func answer(c *Commands, deviceID, commandID string, r CommandResult) error {
	_, err := c.Result(deviceID, commandID, r)
	return err
}

// storedStatus reads a command's status from the database itself.
func storedStatus(t *testing.T, db *bolt.DB, id string) CommandStatus {
	t.Helper()
	store, err := NewBoltCommandStore(db)
	require.NoError(t, err)
	var st CommandStatus
	require.NoError(t, store.Load(func(c Command) error {
		if c.ID == id {
			st = c.Status
		}
		return nil
	}))
	return st
}

// TestResultCommitMeansStored checks the promise the broker's PUBACK of a
// command result rests on: the commit Result returns completes only once
// the command's final status is in the state database, for the answer
// and for a resend of it that finds the command final but not yet stored.
// A write transaction held by the test keeps the loop from writing.
func TestResultCommitMeansStored(t *testing.T) {
	h := startCommands(t, t.TempDir(), DefaultCommandConfig())
	defer h.stop()
	h.sender.setReachable("d", true)
	cmd := submit(t, h.c, "d", "ping", time.Minute)
	testenv.Eventually(t, 5*time.Second, "the command is sent", func() bool { return h.status(t, "d", cmd.ID) == StatusSent })

	tx, err := h.db.Begin(true) // the loop cannot store until it ends
	require.NoError(t, err)
	c1, err := h.c.Result("d", cmd.ID, CommandResult{OK: true, Via: ViaResultTopic})
	require.NoError(t, err)
	testenv.Eventually(t, 5*time.Second, "the answer is applied in memory",
		func() bool { return h.status(t, "d", cmd.ID) == StatusSucceeded })
	c2, err := h.c.Result("d", cmd.ID, CommandResult{OK: true, Via: ViaResultTopic})
	require.ErrorIs(t, err, ErrLate, "the resend of an answer")
	for _, c := range []wal.Commit{c1, c2} {
		done, _ := c.TryWait()
		require.False(t, done, "an answer is not acknowledged before it is stored")
	}
	require.NoError(t, tx.Rollback())
	for _, c := range []wal.Commit{c1, c2} {
		_, err := c.Wait()
		require.NoError(t, err)
	}
	require.Equal(t, StatusSucceeded, storedStatus(t, h.db, cmd.ID))

	c3, err := h.c.Result("d", cmd.ID, CommandResult{OK: true})
	require.ErrorIs(t, err, ErrLate)
	done, err := c3.TryWait()
	require.True(t, done, "a resend of a stored answer is acknowledged at once")
	require.NoError(t, err)

	other := submit(t, h.c, "d", "ping", time.Minute)
	h.c.Stop()
	c4, err := h.c.Result("d", other.ID, CommandResult{OK: true})
	require.NoError(t, err)
	_, err = c4.Wait()
	require.ErrorIs(t, err, ErrStopped, "after Stop nothing is stored, so nothing may be acknowledged")
}
