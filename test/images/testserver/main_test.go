package main

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestMain lets tests run the real main in a child process (the test binary
// re-executed with TESTSERVER_MAIN=1), for the modes that exit.
func TestMain(m *testing.M) {
	if os.Getenv("TESTSERVER_MAIN") == "1" {
		os.Args = append([]string{"testserver"}, strings.Fields(os.Getenv("TESTSERVER_ARGS"))...)
		main()
		return
	}
	os.Exit(m.Run())
}

func get(t *testing.T, srv *httptest.Server, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestHandlers(t *testing.T) {
	srv := httptest.NewServer(newHandler())
	defer srv.Close()

	host, _ := os.Hostname()
	if code, body := get(t, srv, "GET", "/hostname", ""); code != 200 || body != host+"\n" {
		t.Errorf("/hostname = %d %q, want %q", code, body, host)
	}
	t.Setenv("TESTSERVER_PROBE", "visible")
	if code, body := get(t, srv, "GET", "/env", ""); code != 200 || !strings.Contains(body, "\nTESTSERVER_PROBE=visible\n") && !strings.HasPrefix(body, "TESTSERVER_PROBE=visible\n") {
		t.Errorf("/env = %d, no TESTSERVER_PROBE=visible line in %q", code, body)
	}
	if code, body := get(t, srv, "POST", "/echo", "hello, pod"); code != 200 || body != "hello, pod" {
		t.Errorf("/echo = %d %q", code, body)
	}

	// Health fails after POST /fail and recovers after POST /recover.
	if code, _ := get(t, srv, "GET", "/healthz", ""); code != 200 {
		t.Errorf("/healthz = %d before /fail", code)
	}
	if code, _ := get(t, srv, "GET", "/fail", ""); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /fail = %d, want 405 (only POST changes health)", code)
	}
	if code, _ := get(t, srv, "POST", "/fail", ""); code != 200 {
		t.Fatalf("POST /fail = %d", code)
	}
	if code, body := get(t, srv, "GET", "/healthz", ""); code != 500 {
		t.Errorf("/healthz = %d %q after /fail, want 500", code, body)
	}
	if code, _ := get(t, srv, "POST", "/recover", ""); code != 200 {
		t.Fatalf("POST /recover = %d", code)
	}
	if code, _ := get(t, srv, "GET", "/healthz", ""); code != 200 {
		t.Errorf("/healthz = %d after /recover", code)
	}
	if code, _ := get(t, srv, "GET", "/nope", ""); code != 404 {
		t.Errorf("/nope = %d, want 404", code)
	}
}

func runMain(t *testing.T, args string, env ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append([]string{"TESTSERVER_MAIN=1", "TESTSERVER_ARGS=-addr 127.0.0.1:0 " + args}, env...)...)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, string(out)
}

func TestExitCode(t *testing.T) {
	if code, out := runMain(t, "-exit-code 3 -exit-after 50ms"); code != 3 || !strings.Contains(out, "exiting with code 3") {
		t.Errorf("-exit-code 3: exit %d, output %q", code, out)
	}
	if code, out := runMain(t, "", "EXIT_CODE=7", "EXIT_AFTER=10ms"); code != 7 {
		t.Errorf("EXIT_CODE=7: exit %d, output %q", code, out)
	}
}

func TestAllocate(t *testing.T) {
	code, out := runMain(t, "-alloc-mib 16 -exit-code 0 -exit-after 100ms")
	if code != 0 || !strings.Contains(out, "allocated 16 MiB") || !strings.Contains(out, "listening on 127.0.0.1:") {
		t.Errorf("-alloc-mib 16: exit %d, output %q", code, out)
	}
	if b := allocate(2); len(b) != 2<<20 || b[4096] != 1 {
		t.Errorf("allocate(2): %d bytes", len(b))
	}
}
