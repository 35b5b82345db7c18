// Package e2e drives the real navarch binary with real kubectl binaries, as a
// user would: nothing is faked, every step goes through HTTPS and the CLI.
package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// navarchBin is the binary built once for the whole run.
var navarchBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "navarch-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	navarchBin = filepath.Join(dir, "navarch")
	build := exec.Command("go", "build", "-o", navarchBin, "./cmd/navarch")
	build.Dir = "../.."
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building navarch:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// server is a running `navarch server`.
type server struct {
	t          *testing.T
	dataDir    string
	port       int
	kubeconfig string
	cmd        *exec.Cmd
	log        *bytes.Buffer
	extraArgs  []string // appended to the server's command line
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startServer starts a server on a fresh data dir, with extraArgs added to
// its flags, and waits until it is ready.
func startServer(t *testing.T, extraArgs ...string) *server {
	t.Helper()
	s := &server{t: t, dataDir: t.TempDir(), port: freePort(t), extraArgs: extraArgs}
	s.kubeconfig = filepath.Join(s.dataDir, "admin.kubeconfig")
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *server) start() {
	s.t.Helper()
	s.log = &bytes.Buffer{}
	s.cmd = exec.Command(navarchBin, "server", "--data-dir", s.dataDir, "--bind-address", "127.0.0.1",
		"--secure-port", strconv.Itoa(s.port), "--write-kubeconfig", s.kubeconfig, "--disable-agent")
	s.cmd.Args = append(s.cmd.Args, s.extraArgs...)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := client.Get(s.url() + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				if _, err := os.Stat(s.kubeconfig); err == nil {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("server not ready after 60s; log:\n%s", s.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *server) url() string { return fmt.Sprintf("https://127.0.0.1:%d", s.port) }

// stop ends the server with SIGTERM, as a user's Ctrl-C or systemd would.
func (s *server) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		s.cmd.Process.Kill()
		<-done
		s.t.Errorf("server did not stop within 20s of SIGTERM")
	}
	s.cmd = nil
}

// client is one kubectl binary: a path and the arguments that precede
// kubectl's own ("navarch kubectl" for the bundled one).
type client struct {
	name string
	argv []string
}

func clients(t *testing.T) []client {
	cs := []client{{name: "bundled", argv: []string{navarchBin, "kubectl"}}}
	for _, v := range []string{"1.27", "1.30", "1.33"} {
		path := "/usr/lib/google-cloud-sdk/bin/kubectl." + v
		if _, err := os.Stat(path); err != nil {
			t.Logf("kubectl %s not installed at %s: skipping it", v, path)
			continue
		}
		cs = append(cs, client{name: "kubectl-" + v, argv: []string{path}})
	}
	return cs
}

// result is what one kubectl run printed.
type result struct {
	stdout, stderr string
	err            error
}

func (r result) String() string {
	return fmt.Sprintf("err=%v\nstdout:\n%s\nstderr:\n%s", r.err, r.stdout, r.stderr)
}

// kubectl runs a client against s with env added, stdin given.
func (s *server) kubectl(c client, stdin string, env []string, args ...string) result {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.argv[0], append(c.argv[1:], args...)...)
	cmd.Env = append(append(os.Environ(), "KUBECONFIG="+s.kubeconfig), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	err := cmd.Run()
	return result{stdout: out.String(), stderr: errb.String(), err: err}
}

// must runs kubectl and fails the test unless it succeeds.
func (s *server) must(t *testing.T, c client, args ...string) string {
	t.Helper()
	r := s.kubectl(c, "", nil, args...)
	if r.err != nil {
		t.Fatalf("kubectl %s: %s", strings.Join(args, " "), r)
	}
	return r.stdout
}

// eventually polls f until it returns nil or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
