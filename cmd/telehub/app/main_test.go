package app

import (
	"os"
	"testing"

	"github.com/telehub/telehub/internal/openapitest"
)

// TestMain makes every API call the tests make through http.DefaultClient
// check the request and its answer against docs/openapi.yaml.
func TestMain(m *testing.M) {
	openapitest.ValidateDefaultClient()
	os.Exit(m.Run())
}
