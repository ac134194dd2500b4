package forward

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/devices/control"
)

// TestResultPayloadIsWhatTheUpstreamParses: the answers the edge sends
// upstream decode, with the hub's own parser, to the local command's
// outcome; commands that did not succeed or fail send nothing.
func TestResultPayloadIsWhatTheUpstreamParses(t *testing.T) {
	tests := []struct {
		name   string
		cmd    control.Command
		send   bool
		wantOK bool
		want   string // result JSON or error
	}{
		{"succeeded", control.Command{Status: control.StatusSucceeded, Result: json.RawMessage(`{"setpoint":21.5}`)}, true, true, `{"setpoint":21.5}`},
		{"succeeded without result", control.Command{Status: control.StatusSucceeded}, true, true, ""},
		{"failed", control.Command{Status: control.StatusFailed, Error: `unknown command "x"`}, true, false, `unknown command "x"`},
		{"failed without reason", control.Command{Status: control.StatusFailed}, true, false, "the device reported an error without a reason"},
		{"expired", control.Command{Status: control.StatusExpired}, false, false, ""},
		{"pending", control.Command{Status: control.StatusDelivered}, false, false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, ok := finalResult(tc.cmd)
			require.Equal(t, tc.send, ok)
			if !ok {
				return
			}
			r, err := control.ParseResult(p)
			require.NoError(t, err, "%s", p)
			require.Equal(t, tc.wantOK, r.OK)
			if tc.wantOK {
				require.Equal(t, tc.want, string(r.Result))
			} else {
				require.Equal(t, tc.want, r.Error)
			}
		})
	}
}
