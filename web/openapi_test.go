package web

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

// Every API route the server registers is described in docs/openapi.yaml
// with the same method, and every operation described is a route the
// server registers, with a camelCase operationId of its own, so the
// description stays true to the code and client generators name their
// methods. (The answers themselves are checked against the description by
// the tests that call the API: see TestMain and internal/openapitest.)
func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	b, err := os.ReadFile("../docs/openapi.yaml")
	require.NoError(t, err)
	var doc struct {
		Paths map[string]map[string]any `yaml:"paths"`
	}
	require.NoError(t, yaml.Unmarshal(b, &doc))
	registered := map[string]bool{}

	files, err := filepath.Glob("*.go")
	require.NoError(t, err)
	route := regexp.MustCompile(`mux\.Handle(?:Func)?\("(GET|POST|PUT|PATCH|DELETE) (/[^"]*)"`)
	found := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		require.NoError(t, err)
		for _, m := range route.FindAllStringSubmatch(string(src), -1) {
			method, path := strings.ToLower(m[1]), m[2]
			found++
			registered[method+" "+path] = true
			ops, ok := doc.Paths[path]
			require.True(t, ok, "%s %s (in %s) is not in docs/openapi.yaml", m[1], path, f)
			_, ok = ops[method]
			require.True(t, ok, "%s %s (in %s) is in docs/openapi.yaml without that method", m[1], path, f)
		}
	}
	require.Greater(t, found, 10, "the route pattern still finds the routes")

	opID := regexp.MustCompile(`^[a-z][A-Za-z0-9]*$`)
	ids := map[string]string{}
	for path, ops := range doc.Paths {
		for method, op := range ops {
			if method == "parameters" {
				continue
			}
			where := strings.ToUpper(method) + " " + path
			require.True(t, registered[method+" "+path], "%s is in docs/openapi.yaml but the server has no such route", where)
			id, _ := op.(map[string]any)["operationId"].(string)
			require.Regexp(t, opID, id, "%s: operationId in camelCase", where)
			require.Empty(t, ids[id], "%s: operationId %q is also %s's", where, id, ids[id])
			ids[id] = where
		}
	}
}
