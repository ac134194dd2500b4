package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const module = "github.com/telehub/telehub/"

// floors are the top-level folders from the ground up (docs/architecture.md,
// "The house"). A package's own imports point to its floor or one below.
var floors = []string{"firmware-sim", "internal", "devices", "ingest", "broker", "web", "cmd"}

// shell is the application shell: the composition root, the command line
// and config loading of the telehub binary.
const shell = "cmd/telehub"

func floor(pkg string) int {
	top, _, _ := strings.Cut(pkg, "/")
	for i, f := range floors {
		if top == f {
			return i
		}
	}
	return -1
}

func under(pkg, dir string) bool { return pkg == dir || strings.HasPrefix(pkg, dir+"/") }

// layoutViolations lists the imports of pkgs that break the house's rules:
// a package's own imports never point up a floor, and nothing outside cmd/
// imports the shell, not even its tests. Tests may use tooling above them
// (web's fan-out benchmark drives dashboards with cmd/loadgen/load).
func layoutViolations(pkgs []listedPackage) []string {
	var out []string
	for _, p := range pkgs {
		from := strings.TrimPrefix(p.ImportPath, module)
		fl := floor(from)
		if fl < 0 {
			out = append(out, from+": not on a floor: add its folder to floors")
			continue
		}
		for _, imp := range p.Imports {
			to, ok := strings.CutPrefix(imp, module)
			if ok && floor(to) > fl {
				out = append(out, from+" imports "+to+", a floor up")
			}
		}
		if under(from, "cmd") {
			continue
		}
		for _, imp := range append(append(append([]string{}, p.Imports...), p.TestImports...), p.XTestImports...) {
			if to, ok := strings.CutPrefix(imp, module); ok && under(to, shell) {
				out = append(out, from+" (or its tests) imports "+to+", the shell")
			}
		}
	}
	return out
}

type listedPackage struct {
	ImportPath                         string
	Imports, TestImports, XTestImports []string
}

// TestLayout: the ground never imports the shell, and imports point down
// the floors. go list reads the imports of every package of the module.
func TestLayout(t *testing.T) {
	cmd := exec.Command("go", "list", "-json=ImportPath,Imports,TestImports,XTestImports", module+"...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	require.NoError(t, err, stderr.String())
	var pkgs []listedPackage
	dec := json.NewDecoder(bytes.NewReader(b))
	for {
		var p listedPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else {
			require.NoError(t, err)
		}
		pkgs = append(pkgs, p)
	}
	require.Greater(t, len(pkgs), 20, "go list found the module's packages")
	require.Empty(t, layoutViolations(pkgs))

	// The rules catch what they are for.
	require.Equal(t, []string{
		"internal/wal imports ingest, a floor up",
		"web (or its tests) imports cmd/telehub/config, the shell",
	}, layoutViolations([]listedPackage{
		{ImportPath: module + "internal/wal", Imports: []string{"fmt", module + "ingest"}},
		{ImportPath: module + "web", TestImports: []string{module + "cmd/telehub/config"}, XTestImports: []string{module + "cmd/loadgen/load"}},
		{ImportPath: module + "cmd/loadgen/load", XTestImports: []string{module + "cmd/telehub/app"}},
	}))
}
