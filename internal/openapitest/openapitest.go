// Package openapitest checks the hub's HTTP API against its description,
// docs/openapi.yaml, in tests: the answer to every request a test makes to
// the API is validated (kin-openapi's openapi3filter: the route is
// described, the status is described for it, the body matches its
// schema), so the description cannot drift from the code unnoticed. Test
// tooling only.
package openapitest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
)

// maxBody bounds the answer body read for validation.
const maxBody = 64 << 20

// Doc is a loaded and validated API description. Safe for concurrent use.
type Doc struct {
	router routers.Router
}

// Load reads an OpenAPI document, checks it and prepares its routes. The
// document's servers are ignored: routes match by path alone, whatever the
// address the test's server listens on.
func Load(path string) (*Doc, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	doc.Servers = nil
	r, err := legacy.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &Doc{router: r}, nil
}

var (
	repoOnce sync.Once
	repoDoc  *Doc
	repoErr  error
)

// Repo returns the repository's docs/openapi.yaml, loaded once.
func Repo() (*Doc, error) {
	repoOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		repoDoc, repoErr = Load(filepath.Join(filepath.Dir(file), "..", "..", "docs", "openapi.yaml"))
	})
	return repoDoc, repoErr
}

// Described reports whether a request is one the description must cover:
// a request for the API under /api/v1/ or for /healthz, /readyz and
// /metrics. Anything else (InfluxDB, a webhook receiver, the dashboard's
// files) passes unchecked.
func Described(r *http.Request) bool {
	p := r.URL.Path
	return strings.HasPrefix(p, "/api/v1/") || p == "/healthz" || p == "/readyz" || p == "/metrics"
}

// Check validates the answer to a request (with its body; nil for a
// stream, whose body is not read):
//   - the route must be described, unless the answer is 404 or 405 (a test
//     probing what does not exist);
//   - the answer's status must be described for the operation, and its
//     body must match the schema of that status and content type.
//
// Requests are not held to the description: tests send bad ones on
// purpose, and the server's answer to them is what is checked.
func (d *Doc) Check(req *http.Request, resp *http.Response, respBody []byte) error {
	route, params, err := d.router.FindRoute(req)
	if err != nil {
		if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed {
			return nil
		}
		return fmt.Errorf("openapi: %s %s answered %d but is not in docs/openapi.yaml: %w", req.Method, req.URL.Path, resp.StatusCode, err)
	}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route}
	opts := &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true, ExcludeResponseBody: respBody == nil}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode,
		Header: resp.Header, Options: opts}
	if respBody != nil {
		out.SetBodyBytes(respBody)
	}
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		return fmt.Errorf("openapi: %s %s answered %d not as docs/openapi.yaml describes: %w\nbody: %s",
			req.Method, req.URL.Path, resp.StatusCode, err, clip(respBody))
	}
	return nil
}

func clip(b []byte) string {
	if len(b) > 512 {
		return string(b[:512]) + "…"
	}
	return string(b)
}

// Transport is an http.RoundTripper that sends requests through Next and
// checks those the description covers (Described) with Doc: an answer
// that disagrees with docs/openapi.yaml fails the round trip with an
// error saying how, so the test that made it fails where it calls the API.
// Streams (text/event-stream, WebSocket upgrades) are checked by status and
// headers only. Safe for concurrent use.
type Transport struct {
	Doc  *Doc
	Next http.RoundTripper // nil: http.DefaultTransport
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	next := t.Next
	if next == nil {
		next = http.DefaultTransport
	}
	if !Described(req) {
		return next.RoundTrip(req)
	}
	resp, err := next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	var respBody []byte
	if !streaming(resp) {
		respBody, err = io.ReadAll(io.LimitReader(resp.Body, maxBody))
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		resp.Body = io.NopCloser(bytes.NewReader(respBody))
		if respBody == nil {
			respBody = []byte{}
		}
	}
	if err := t.Doc.Check(req, resp, respBody); err != nil {
		if respBody == nil {
			resp.Body.Close()
		}
		return nil, err
	}
	return resp, nil
}

func streaming(resp *http.Response) bool {
	return resp.StatusCode == http.StatusSwitchingProtocols ||
		strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")
}

// ValidateDefaultClient makes http.DefaultClient check every API call
// against the repository's docs/openapi.yaml, for a package's TestMain: the
// tests' API helpers use http.DefaultClient. It exits the test binary when
// the description does not load.
func ValidateDefaultClient() {
	doc, err := Repo()
	if err != nil {
		fmt.Fprintln(os.Stderr, "openapitest:", err)
		os.Exit(2)
	}
	http.DefaultClient.Transport = &Transport{Doc: doc, Next: http.DefaultClient.Transport}
}
