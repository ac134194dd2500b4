package firmwaresim

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// maxSummaryRows bounds the per-device rows of a text summary; larger fleets
// list only the devices with errors.
const maxSummaryRows = 50

// Stats is a snapshot of a fleet's counters. Every reading a device takes
// counts as sent; it ends up acknowledged or as an error by the time Run
// returns (in between it may be neither: waiting for its acknowledgement).
type Stats struct {
	// Sent is the number of readings taken and attempted.
	Sent int64 `json:"sent"`
	// Acked is the number of readings acknowledged: a PUBACK (QoS 1) or
	// PUBCOMP (QoS 2) was received, or for QoS 0 the publish was written.
	Acked int64 `json:"acked"`
	// Errors is the number of readings that failed or were dropped.
	Errors int64 `json:"errors"`
	// Connected is the number of devices with an open MQTT connection.
	Connected int `json:"connected"`
	// ProvisionFailed is the number of devices the hub did not provision.
	ProvisionFailed int `json:"provision_failed"`
	// Devices holds the provisioned devices' counters, thermostats first.
	Devices []DeviceStats `json:"devices"`
}

// DeviceStats holds one device's counters.
type DeviceStats struct {
	// ID is the device ID.
	ID string `json:"id"`
	// Type is the hub device type, e.g. TypeThermostat.
	Type string `json:"type"`
	// Sent is the number of readings taken and attempted.
	Sent int64 `json:"sent"`
	// Acked is the number of readings acknowledged.
	Acked int64 `json:"acked"`
	// Errors is the number of readings that failed or were dropped.
	Errors int64 `json:"errors"`
	// Connected reports whether the MQTT connection is open.
	Connected bool `json:"connected"`
}

// WriteText writes a human-readable summary: totals, then a table of devices
// (only those with errors when the fleet is large).
func (s Stats) WriteText(w io.Writer) error {
	if _, err := fmt.Fprintf(w, "fleet: %d devices (%d failed to provision): sent %d, acked %d, errors %d\n",
		len(s.Devices), s.ProvisionFailed, s.Sent, s.Acked, s.Errors); err != nil {
		return err
	}
	rows := s.Devices
	if len(rows) > maxSummaryRows {
		rows = nil
		for _, d := range s.Devices {
			if d.Errors > 0 {
				rows = append(rows, d)
			}
		}
		if len(rows) == 0 {
			return nil
		}
		if _, err := fmt.Fprintf(w, "devices with errors: %d\n", len(rows)); err != nil {
			return err
		}
	}
	if len(rows) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if _, err := fmt.Fprintln(tw, "ID\tTYPE\tSENT\tACKED\tERRORS"); err != nil {
		return err
	}
	for _, d := range rows {
		if _, err := fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\n", d.ID, d.Type, d.Sent, d.Acked, d.Errors); err != nil {
			return err
		}
	}
	return tw.Flush()
}

// ReportProgress writes a one-line progress update (see ProgressLine) to w
// every interval until ctx is done, once the fleet has provisioned devices.
// It blocks; the caller owns the goroutine.
func (f *Fleet) ReportProgress(ctx context.Context, w io.Writer, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	prev, prevAt := f.Stats(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			cur := f.Stats()
			if len(cur.Devices) > 0 {
				_, _ = fmt.Fprintln(w, ProgressLine(prev, cur, now.Sub(prevAt)))
			}
			prev, prevAt = cur, now
		}
	}
}

// ProgressLine formats the change from prev to cur over elapsed as one line:
// connected devices, totals and rates.
func ProgressLine(prev, cur Stats, elapsed time.Duration) string {
	rate := func(a, b int64) float64 {
		if elapsed <= 0 {
			return 0
		}
		return float64(b-a) / elapsed.Seconds()
	}
	return fmt.Sprintf("fleet: %d/%d connected, sent %d (%.1f/s), acked %d (%.1f/s), errors %d",
		cur.Connected, len(cur.Devices), cur.Sent, rate(prev.Sent, cur.Sent),
		cur.Acked, rate(prev.Acked, cur.Acked), cur.Errors)
}
