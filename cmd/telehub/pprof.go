//go:build pprof

package main

import (
	"net/http"
	_ "net/http/pprof" // the profiling endpoints, in builds for profiling only
	"os"
)

// Builds with -tags pprof serve net/http/pprof on $TELEHUB_PPROF_ADDR (for
// example 127.0.0.1:6060), for profiling the hub under load (see
// BENCHMARKS.md, "How to profile"). Release builds do not contain it.
func init() {
	if addr := os.Getenv("TELEHUB_PPROF_ADDR"); addr != "" {
		go http.ListenAndServe(addr, nil) //nolint:errcheck // a debugging aid that lives as long as the process
	}
}
