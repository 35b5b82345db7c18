package apiserver_test

import (
	"archive/tar"
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// kubectls are the kubectl binaries on this machine, by name.
func kubectls() map[string]string {
	found := map[string]string{}
	if p, err := exec.LookPath("kubectl"); err == nil {
		found["kubectl"] = p
	}
	matches, _ := filepath.Glob("/usr/lib/google-cloud-sdk/bin/kubectl.1.*")
	for _, m := range matches {
		found[filepath.Base(m)] = m
	}
	return found
}

// Real kubectl of every version at hand (1.27 speaks SPDY; 1.30+ tries
// WebSocket first for exec, attach and cp, 1.31+ for port-forward)
// drives exec, attach, cp both ways and port-forward through the API
// server to the stand-in kubelet.
func TestKubectlStreams(t *testing.T) {
	bins := kubectls()
	if len(bins) == 0 {
		t.Skip("no kubectl on this machine")
	}
	srv, k := streamCluster(t)
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q}}]
users: [{name: u, user: {}}]
contexts: [{name: c, context: {cluster: c, user: u, namespace: default}}]
current-context: c
`, srv.Config.Host)), 0o600); err != nil {
		t.Fatal(err)
	}
	local := filepath.Join(dir, "local.txt")
	if err := os.WriteFile(local, []byte("from kubectl"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, bin := range bins {
		t.Run(name, func(t *testing.T) {
			run := func(stdin string, args ...string) (string, string, int) {
				cmd := exec.Command(bin, append([]string{"--kubeconfig", kubeconfig}, args...)...)
				cmd.Stdin = strings.NewReader(stdin)
				var out, errOut bytes.Buffer
				cmd.Stdout, cmd.Stderr = &out, &errOut
				err := cmd.Run()
				code := 0
				if ee, ok := err.(*exec.ExitError); ok {
					code = ee.ExitCode()
				} else if err != nil {
					t.Fatal(err)
				}
				return out.String(), errOut.String(), code
			}
			if out, errOut, code := run("", "exec", "one", "--", "echo", "hello", "world"); out != "hello world\n" || errOut != "warn\n" || code != 0 {
				t.Errorf("exec echo: %q %q %d", out, errOut, code)
			}
			if _, errOut, code := run("", "exec", "one", "--", "exit", "3"); code != 3 || !strings.Contains(errOut, "command terminated with exit code 3") {
				t.Errorf("exec exit 3: %q %d", errOut, code)
			}
			if out, errOut, code := run("typed\n", "exec", "-i", "one", "--", "cat"); out != "typed\n[eof]" || code != 0 {
				t.Errorf("exec -i cat: %q %q %d", out, errOut, code)
			}
			if out, errOut, code := run("", "exec", "two-missing", "--", "echo"); code == 0 || !strings.Contains(errOut, `pods "two-missing" not found`) {
				t.Errorf("exec into a missing pod: %q %q %d", out, errOut, code)
			}
			if out, errOut, code := run("", "attach", "one"); out != "attached\n" || code != 0 {
				t.Errorf("attach: %q %q %d", out, errOut, code)
			}
			// cp to the pod: the archive arrives whole, which needs stdin's EOF.
			k.mu.Lock()
			k.untarred = nil
			k.mu.Unlock()
			if out, errOut, code := run("", "cp", local, "one:/tmp/remote.txt"); code != 0 {
				t.Fatalf("cp to the pod: %q %q %d", out, errOut, code)
			}
			k.mu.Lock()
			archives := k.untarred
			k.mu.Unlock()
			if len(archives) != 1 || !tarHolds(archives[0], "from kubectl") {
				t.Errorf("cp to the pod: the kubelet got %d archives", len(archives))
			}
			back := filepath.Join(dir, name+".txt")
			if out, errOut, code := run("", "cp", "one:/tmp/remote.txt", back); code != 0 {
				t.Errorf("cp from the pod: %q %q %d", out, errOut, code)
			} else if b, err := os.ReadFile(back); err != nil || string(b) != "payload" {
				t.Errorf("cp from the pod: %q, %v", b, err)
			}
			// port-forward: kubectl prints the local port it listens on.
			pf := exec.Command(bin, "--kubeconfig", kubeconfig, "port-forward", "pod/one", ":8080")
			stdout, err := pf.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var pfErr bytes.Buffer
			pf.Stderr = &pfErr
			if err := pf.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() {
				_ = pf.Process.Kill()
				_ = pf.Wait()
			}()
			ports := make(chan string, 1)
			go func() {
				sc := bufio.NewScanner(stdout)
				re := regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+) -> 8080`)
				for sc.Scan() {
					if m := re.FindStringSubmatch(sc.Text()); m != nil {
						ports <- m[1]
					}
				}
				close(ports)
			}()
			var port string
			select {
			case port = <-ports:
			case <-time.After(30 * time.Second):
			}
			if port == "" {
				t.Fatalf("port-forward did not start: %s", pfErr.String())
			}
			for i := range 2 {
				c, err := net.Dial("tcp", "127.0.0.1:"+port)
				if err != nil {
					t.Fatal(err)
				}
				msg := fmt.Sprintf("hello %d", i)
				c.Write([]byte(msg))
				want := "8080:" + strings.ToUpper(msg)
				buf := make([]byte, len(want))
				c.SetReadDeadline(time.Now().Add(20 * time.Second))
				if _, err := io.ReadFull(c, buf); err != nil || string(buf) != want {
					t.Errorf("port-forward: read %q, %v; want %q (%s)", buf, err, want, pfErr.String())
				}
				c.Close()
			}
		})
	}
}

// tarHolds reports whether the archive has a file with content want.
func tarHolds(archive []byte, want string) bool {
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		if _, err := tr.Next(); err != nil {
			return false
		}
		if b, _ := io.ReadAll(tr); string(b) == want {
			return true
		}
	}
}
