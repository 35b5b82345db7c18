package kubelet

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
	utilexec "k8s.io/client-go/util/exec"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/ptr"

	"github.com/navarch/navarch/controlplane/apiserver"
	"github.com/navarch/navarch/controlplane/apiserver/apiservertest"
	"github.com/navarch/navarch/internal/pki"
)

// logNode is a test node whose kubelet serves HTTPS on loopback, and whose
// API server proxies pods/log to it with a client certificate of a test CA.
func logNode(t *testing.T) (*testNode, *pki.Bundle, int32) {
	certs, err := pki.Ensure(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	n := startNode(t, func(c *apiserver.Config) {
		c.KubeletClientCertPEM, c.KubeletClientKeyPEM = certs.KubeletClientCertPEM, certs.KubeletClientKeyPEM
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(ServerConfig{Listener: ln, Runtime: runtimeapi.NewRuntimeServiceClient(n.conn),
		CertDir: filepath.Join(n.dataDir, "pki"), Hosts: []string{"127.0.0.1"}, ClientCAPEM: certs.CACertPEM})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("kubelet server: %v", err)
		}
	})
	// The kubelet publishes the port and the loopback address from its
	// next start on. The first one is let finish registering: stopped
	// mid-create, its Node may appear after the next one found none.
	apiservertest.Eventually(t, 10*time.Second, "node registered", func() error {
		_, err := n.client.CoreV1().Nodes().Get(context.Background(), n.node, metav1.GetOptions{})
		return err
	})
	n.kubeletPort, n.nodeIP = srv.Port(), "127.0.0.1"
	n.stopKubelet()
	n.startKubelet()
	apiservertest.Eventually(t, 10*time.Second, "node publishes the kubelet endpoint", func() error {
		node, err := n.client.CoreV1().Nodes().Get(context.Background(), n.node, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if node.Status.DaemonEndpoints.KubeletEndpoint.Port != srv.Port() {
			return fmt.Errorf("kubelet endpoint %+v", node.Status.DaemonEndpoints)
		}
		return nil
	})
	return n, certs, srv.Port()
}

func (n *testNode) logs(pod string, o *corev1.PodLogOptions) (string, error) {
	rc, err := n.client.CoreV1().Pods("default").GetLogs(pod, o).Stream(context.Background())
	if err != nil {
		return "", err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	return string(b), err
}

func TestKubeletServerLogs(t *testing.T) {
	n, certs, port := logNode(t)
	ctx := context.Background()

	// A pod that prints three lines, then ticks until told to stop.
	n.createAndWait(busyboxPod("printer", corev1.RestartPolicyNever,
		`echo one; echo two; echo three; i=0; while [ $i -lt 40 ]; do sleep 0.2; echo tick $i; i=$((i+1)); done`), corev1.PodRunning)
	apiservertest.Eventually(t, 10*time.Second, "all lines", func() error {
		out, err := n.logs("printer", &corev1.PodLogOptions{})
		if err != nil || !strings.HasPrefix(out, "one\ntwo\nthree\ntick 0\n") {
			return fmt.Errorf("logs %q, %v", out, err)
		}
		return nil
	})
	out, err := n.logs("printer", &corev1.PodLogOptions{Container: "main", TailLines: ptr.To[int64](1)})
	if err != nil || strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "tick ") {
		t.Fatalf("tail 1: %q, %v", out, err)
	}
	out, err = n.logs("printer", &corev1.PodLogOptions{Timestamps: true, LimitBytes: ptr.To[int64](200)})
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := strings.Cut(out, "\n")
	ts, msg, _ := strings.Cut(first, " ")
	if _, perr := time.Parse(time.RFC3339Nano, ts); perr != nil || msg != "one" {
		t.Fatalf("timestamps: first line %q", first)
	}
	if len(out) > 200 {
		t.Fatalf("limitBytes 200: got %d bytes", len(out))
	}

	// Follow from the last line: the next tick is printed after the
	// kubelet read the file, so it reaches the client only by following.
	rc, err := n.client.CoreV1().Pods("default").GetLogs("printer", &corev1.PodLogOptions{Follow: true, TailLines: ptr.To[int64](1)}).Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(rc)
	l1, err := r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	var k int
	if _, err := fmt.Sscanf(l1, "tick %d", &k); err != nil {
		t.Fatalf("follow: first line %q", l1)
	}
	l2, err := r.ReadString('\n')
	if want := fmt.Sprintf("tick %d\n", k+1); err != nil || l2 != want {
		t.Fatalf("follow: next line %q (%v), want %q", l2, err, want)
	}
	rc.Close() // the client goes away mid-stream

	// Followed to the end, the stream ends when the container exits.
	done := make(chan string, 1)
	go func() {
		out, _ := n.logs("printer", &corev1.PodLogOptions{Follow: true})
		done <- out
	}()
	select {
	case out := <-done:
		if !strings.HasSuffix(out, "tick 39\n") {
			t.Fatalf("followed to the exit: ends %q", out[max(0, len(out)-40):])
		}
	case <-time.After(30 * time.Second):
		t.Fatal("follow did not end when the container exited")
	}

	// previous: the exited attempt; the current one is the restart.
	pod := busyboxPod("restarter", corev1.RestartPolicyAlways,
		`n=$(cat /data/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /data/n; echo attempt $n; if [ $n -ge 2 ]; then exec sleep 3600; fi; exit 1`)
	pod.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	pod.Spec.TerminationGracePeriodSeconds = ptr.To[int64](0)
	if _, err := n.client.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	apiservertest.Eventually(t, 30*time.Second, "restarted pod logs", func() error {
		cur, err := n.logs("restarter", &corev1.PodLogOptions{})
		if err != nil || cur != "attempt 2\n" {
			return fmt.Errorf("current %q, %v", cur, err)
		}
		prev, err := n.logs("restarter", &corev1.PodLogOptions{Previous: true})
		if err != nil || prev != "attempt 1\n" {
			return fmt.Errorf("previous %q, %v", prev, err)
		}
		return nil
	})
	if _, err := n.logs("printer", &corev1.PodLogOptions{Previous: true}); err == nil || !strings.Contains(err.Error(), `previous terminated container "main" in pod "printer" not found`) {
		t.Errorf("previous of a pod that never restarted: %v", err)
	}

	// The kubelet serves only clients of the cluster CA.
	base := fmt.Sprintf("https://127.0.0.1:%d", port)
	anon := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	if resp, err := anon.Get(base + "/containerLogs/default/printer/main"); err == nil {
		resp.Body.Close()
		t.Errorf("a client without a certificate got %s", resp.Status)
	}
	cert, err := tls.X509KeyPair(certs.AdminCertPEM, certs.AdminKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	admin := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{cert}}}}
	resp, err := admin.Get(base + "/containerLogs/default/printer/main")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("logs with a client certificate: %s", resp.Status)
	}
	if resp, err := admin.Get(base + "/healthz"); err != nil {
		t.Errorf("healthz: %v", err)
	} else {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != "ok" {
			t.Errorf("healthz: %s %q", resp.Status, body)
		}
	}
	for _, name := range []string{"printer", "restarter"} {
		n.deleteAndWait(name)
	}
}

// kubeletClient is a client of the kubelet's HTTPS server with the admin
// certificate of the test CA (the API server uses its kubelet-client one).
func kubeletClient(certs *pki.Bundle, port int32) *rest.Config {
	return &rest.Config{Host: fmt.Sprintf("https://127.0.0.1:%d", port), TLSClientConfig: rest.TLSClientConfig{
		Insecure: true, CertData: certs.AdminCertPEM, KeyData: certs.AdminKeyPEM}}
}

// sizeQueue hands terminal sizes to the executor.
type sizeQueue chan remotecommand.TerminalSize

func (q sizeQueue) Next() *remotecommand.TerminalSize {
	s, ok := <-q
	if !ok {
		return nil
	}
	return &s
}

// kubeletStream runs one exec or attach session against the kubelet, the
// way the API server's proxy does: SPDY to the kubelet's path and query.
func kubeletStream(cfg *rest.Config, path string, q url.Values, o remotecommand.StreamOptions) error {
	u, err := url.Parse(cfg.Host + path)
	if err != nil {
		return err
	}
	u.RawQuery = q.Encode()
	ex, err := remotecommand.NewSPDYExecutor(cfg, http.MethodPost, u)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return ex.StreamWithContext(ctx, o)
}

func streamQuery(stdin, stdout, stderr, tty bool, cmd ...string) url.Values {
	q := url.Values{"command": cmd}
	for name, on := range map[string]bool{"input": stdin, "output": stdout, "error": stderr, "tty": tty} {
		if on {
			q.Set(name, "1")
		}
	}
	return q
}

func exitCodeOf(err error) int {
	var ce utilexec.CodeExitError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return -1
}

func TestKubeletServerStreaming(t *testing.T) {
	n, certs, port := logNode(t)
	cfg := kubeletClient(certs, port)
	shell := busyboxPod("shell", corev1.RestartPolicyNever, "exec sleep 3600")
	shell.Spec.TerminationGracePeriodSeconds = ptr.To[int64](0) // sleep as PID 1 ignores SIGTERM
	n.createAndWait(shell, corev1.PodRunning)
	const execPath = "/exec/default/shell/main"

	// stdout, stderr and the exit code, as kubectl exec reports them.
	var out, errOut bytes.Buffer
	err := kubeletStream(cfg, execPath, streamQuery(false, true, true, false, "sh", "-c", "echo out; echo err >&2; exit 7"),
		remotecommand.StreamOptions{Stdout: &out, Stderr: &errOut})
	if exitCodeOf(err) != 7 || out.String() != "out\n" || errOut.String() != "err\n" {
		t.Errorf("exec: %v, stdout %q, stderr %q", err, out.String(), errOut.String())
	}

	// kubectl cp both ways: a tar on stdin to `tar xf -` (which ends only
	// when stdin's end reaches it), and `tar cf -` read back.
	var tarball bytes.Buffer
	tw := tar.NewWriter(&tarball)
	content := strings.Repeat("copied through exec\n", 5000)
	if err := tw.WriteHeader(&tar.Header{Name: "dir/file.txt", Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write([]byte(content)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	errOut.Reset()
	if err := kubeletStream(cfg, execPath, streamQuery(true, false, true, false, "tar", "xf", "-", "-C", "/tmp"),
		remotecommand.StreamOptions{Stdin: &tarball, Stderr: &errOut}); err != nil {
		t.Fatalf("tar xf - through exec: %v: %s", err, errOut.String())
	}
	out.Reset()
	if err := kubeletStream(cfg, execPath, streamQuery(false, true, true, false, "tar", "cf", "-", "-C", "/tmp", "dir"),
		remotecommand.StreamOptions{Stdout: &out, Stderr: &errOut}); err != nil {
		t.Fatalf("tar cf - through exec: %v: %s", err, errOut.String())
	}
	tr := tar.NewReader(&out)
	h, err := tr.Next()
	for err == nil && h.Name != "dir/file.txt" {
		h, err = tr.Next()
	}
	if err != nil {
		t.Fatalf("tar read back: %v", err)
	}
	if b, _ := io.ReadAll(tr); string(b) != content {
		t.Errorf("file read back: %d bytes, want %d", len(b), len(content))
	}

	// A terminal: the first size from the start, then a resize.
	sizes := make(sizeQueue, 2)
	sizes <- remotecommand.TerminalSize{Width: 100, Height: 40}
	inR, inW := io.Pipe()
	var tout syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- kubeletStream(cfg, execPath, streamQuery(true, true, false, true, "sh", "-c", `stty size; while read l; do [ "$l" = q ] && exit 3; stty size; done`),
			remotecommand.StreamOptions{Stdin: inR, Stdout: &tout, Tty: true, TerminalSizeQueue: sizes})
	}()
	apiservertest.Eventually(t, 10*time.Second, "tty output with the first size", func() error {
		if !strings.Contains(tout.String(), "40 100") {
			return fmt.Errorf("tty output %q", tout.String())
		}
		return nil
	})
	sizes <- remotecommand.TerminalSize{Width: 120, Height: 50}
	apiservertest.Eventually(t, 10*time.Second, "tty output after a resize", func() error {
		if _, err := inW.Write([]byte("x\n")); err != nil {
			return err
		}
		if !strings.Contains(tout.String(), "50 120") {
			return fmt.Errorf("tty output %q", tout.String())
		}
		return nil
	})
	if _, err := inW.Write([]byte("q\n")); err != nil {
		t.Fatal(err)
	}
	if err := <-done; exitCodeOf(err) != 3 {
		t.Errorf("tty exec: %v, want exit code 3", err)
	}
	close(sizes)
	inW.Close()

	// Attach to a container that reads its stdin (stdin, stdinOnce).
	pod := busyboxPod("reader", corev1.RestartPolicyNever, `while read l; do echo got $l; done; echo stdin closed`)
	pod.Spec.Containers[0].Stdin, pod.Spec.Containers[0].StdinOnce = true, true
	n.createAndWait(pod, corev1.PodRunning)
	out.Reset()
	if err := kubeletStream(cfg, "/attach/default/reader/main", streamQuery(true, true, true, false),
		remotecommand.StreamOptions{Stdin: strings.NewReader("one\ntwo\n"), Stdout: &out, Stderr: &errOut}); err != nil {
		t.Errorf("attach: %v", err)
	}
	if got := out.String(); got != "got one\ngot two\nstdin closed\n" {
		t.Errorf("attach output %q", got)
	}
	n.createAndWaitPhase("reader", corev1.PodSucceeded)

	// Port-forward to the testserver's HTTP port on the pod's loopback.
	n.createAndWait(testPod("web", corev1.RestartPolicyAlways), corev1.PodRunning)
	var body string
	apiservertest.Eventually(t, 10*time.Second, "GET /hostname through port-forward", func() error {
		var err error
		body, err = kubeletPortForwardGet(cfg, "/portForward/default/web", 8080, "/hostname")
		return err
	})
	if body != "web\n" {
		t.Errorf("GET /hostname through port-forward: %q", body)
	}
	if _, err := kubeletPortForwardGet(cfg, "/portForward/default/web", 8081, "/hostname"); err == nil {
		t.Error("port-forward to a closed port worked")
	}

	// Errors before the upgrade: upstream's codes and messages.
	admin, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path string
		code int
		msg  string
	}{
		{"/exec/default/nosuch/main?command=ls&output=1", http.StatusNotFound, "pod does not exist"},
		{"/exec/default/shell/other?command=ls&output=1", http.StatusNotFound, `container not found ("other")`},
		{"/exec/default/shell/main?command=ls", http.StatusBadRequest, "you must specify at least 1 of stdin, stdout, stderr"},
		{"/exec/default/reader/main?command=ls&output=1", http.StatusBadRequest, `container "main" in pod "reader" is not running`},
		{"/portForward/default/nosuch", http.StatusNotFound, "pod does not exist"},
	} {
		resp, err := admin.Post(cfg.Host+c.path, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.code || !strings.Contains(string(b), c.msg) {
			t.Errorf("POST %s: %s %q, want %d %q", c.path, resp.Status, b, c.code, c.msg)
		}
	}
	// run: a command's output in the response.
	resp, err := admin.Post(cfg.Host+"/run/default/shell/main?cmd="+url.QueryEscape("echo ran here"), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(b) != "ran here\n" {
		t.Errorf("POST /run: %s %q", resp.Status, b)
	}
	for _, name := range []string{"shell", "reader", "web"} {
		n.deleteAndWait(name)
	}
}

// createAndWaitPhase waits for an existing pod to reach phase.
func (n *testNode) createAndWaitPhase(name string, phase corev1.PodPhase) {
	apiservertest.Eventually(n.t, 30*time.Second, "pod "+name+" "+string(phase), func() error {
		p, err := n.client.CoreV1().Pods("default").Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.Phase != phase {
			return fmt.Errorf("phase %s", p.Status.Phase)
		}
		return nil
	})
}

// kubeletPortForwardGet sends one HTTP GET to port of the pod through a
// port-forward session with the kubelet.
func kubeletPortForwardGet(cfg *rest.Config, pfPath string, port int, path string) (string, error) {
	u, err := url.Parse(cfg.Host + pfPath)
	if err != nil {
		return "", err
	}
	transport, upgrader, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		return "", err
	}
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, u)
	stop, ready := make(chan struct{}), make(chan struct{})
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", port)}, stop, ready, io.Discard, io.Discard)
	if err != nil {
		return "", err
	}
	fwDone := make(chan error, 1)
	go func() { fwDone <- fw.ForwardPorts() }()
	defer func() {
		close(stop)
		<-fwDone
	}()
	select {
	case <-ready:
	case err := <-fwDone:
		return "", fmt.Errorf("port-forward: %w", err)
	}
	ports, err := fw.GetPorts()
	if err != nil {
		return "", err
	}
	c := &http.Client{Timeout: 10 * time.Second}
	r, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d%s", ports[0].Local, path))
	if err != nil {
		return "", err
	}
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	return string(b), err
}

// Real kubectl through the API server (its pods/exec, attach and
// portforward proxy; kubectl 1.30+ speaks WebSocket to it, which it turns
// into SPDY) to the kubelet and the built-in runtime.
func TestKubeletKubectlStreams(t *testing.T) {
	bin, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("no kubectl on this machine")
	}
	n, _, _ := logNode(t)
	shell := busyboxPod("shell", corev1.RestartPolicyNever, "echo started; exec sleep 3600")
	shell.Spec.TerminationGracePeriodSeconds = ptr.To[int64](0)
	n.createAndWait(shell, corev1.PodRunning)
	reader := busyboxPod("reader", corev1.RestartPolicyNever, `while read l; do echo got $l; done`)
	reader.Spec.Containers[0].Stdin, reader.Spec.Containers[0].StdinOnce = true, true
	reader.Spec.TerminationGracePeriodSeconds = ptr.To[int64](0)
	n.createAndWait(reader, corev1.PodRunning)
	n.createAndWait(testPod("web", corev1.RestartPolicyAlways), corev1.PodRunning)

	dir := t.TempDir()
	kubeconfig := writeKubeconfig(t, n)
	kubectl := func(stdin string, args ...string) (string, string, int) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, append([]string{"--kubeconfig", kubeconfig}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("kubectl %v: %v", args, err)
		}
		return out.String(), errOut.String(), cmd.ProcessState.ExitCode()
	}

	if out, errOut, code := kubectl("", "exec", "shell", "--", "sh", "-c", "echo hello; echo warn >&2"); out != "hello\n" || errOut != "warn\n" || code != 0 {
		t.Errorf("kubectl exec: %q %q %d", out, errOut, code)
	}
	if _, errOut, code := kubectl("", "exec", "shell", "--", "sh", "-c", "exit 3"); code != 3 || !strings.Contains(errOut, "command terminated with exit code 3") {
		t.Errorf("kubectl exec exit 3: %q %d", errOut, code)
	}
	if out, errOut, code := kubectl("typed\n", "exec", "-i", "shell", "--", "sh", "-c", "cat; echo [eof]"); out != "typed\n[eof]\n" || code != 0 {
		t.Errorf("kubectl exec -i: %q %q %d", out, errOut, code)
	}
	local := filepath.Join(dir, "local.txt")
	content := strings.Repeat("from kubectl cp\n", 10000)
	if err := os.WriteFile(local, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := kubectl("", "cp", local, "shell:/tmp/remote.txt"); code != 0 {
		t.Fatalf("kubectl cp to the pod: %q %q %d", out, errOut, code)
	}
	back := filepath.Join(dir, "back.txt")
	if out, errOut, code := kubectl("", "cp", "shell:/tmp/remote.txt", back); code != 0 {
		t.Errorf("kubectl cp from the pod: %q %q %d", out, errOut, code)
	} else if b, err := os.ReadFile(back); err != nil || string(b) != content {
		t.Errorf("kubectl cp round trip: %d bytes (%v), want %d", len(b), err, len(content))
	}
	if out, errOut, code := kubectl("one\n", "attach", "-i", "reader"); !strings.Contains(out, "got one\n") || code != 0 {
		t.Errorf("kubectl attach -i: %q %q %d", out, errOut, code)
	}

	pf := exec.Command(bin, "--kubeconfig", kubeconfig, "port-forward", "pod/web", ":8080")
	stdout, err := pf.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var pfErr syncBuffer
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
		t.Fatalf("kubectl port-forward did not start: %s", pfErr.String())
	}
	for range 2 {
		if body, err := httpGet("http://127.0.0.1:" + port + "/hostname"); err != nil || body != "web\n" {
			t.Errorf("GET /hostname through kubectl port-forward: %q, %v (%s)", body, err, pfErr.String())
		}
	}
	for _, name := range []string{"shell", "reader", "web"} {
		n.deleteAndWait(name)
	}
}

// Interactive kubectl (-it) on a terminal of the test's: kubectl reads
// the terminal's size and its changes (SIGWINCH), and the command in the
// pod sees them; attach -it types into a tty container's shell.
func TestKubeletKubectlTerminal(t *testing.T) {
	bin, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("no kubectl on this machine")
	}
	n, _, _ := logNode(t)
	shell := busyboxPod("shell", corev1.RestartPolicyNever, "exec sleep 3600")
	shell.Spec.TerminationGracePeriodSeconds = ptr.To[int64](0)
	n.createAndWait(shell, corev1.PodRunning)
	tty := busyboxPod("tty", corev1.RestartPolicyNever, "exec sh")
	tty.Spec.Containers[0].Stdin, tty.Spec.Containers[0].TTY = true, true
	tty.Spec.TerminationGracePeriodSeconds = ptr.To[int64](0)
	n.createAndWait(tty, corev1.PodRunning)
	kubeconfig := writeKubeconfig(t, n)

	interactive := func(args ...string) (*os.File, *syncBuffer, *exec.Cmd) {
		master, slave := openTestPty(t)
		if err := unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 40, Col: 100}); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, append([]string{"--kubeconfig", kubeconfig}, args...)...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		slave.Close()
		out := &syncBuffer{}
		go func() { _, _ = io.Copy(out, master) }()
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			master.Close()
		})
		return master, out, cmd
	}
	waitFor := func(out *syncBuffer, want string, poke func()) {
		t.Helper()
		apiservertest.Eventually(t, 20*time.Second, fmt.Sprintf("terminal shows %q", want), func() error {
			if poke != nil {
				poke()
			}
			if !strings.Contains(out.String(), want) {
				return fmt.Errorf("terminal: %q", out.String())
			}
			return nil
		})
	}

	master, out, cmd := interactive("exec", "-it", "shell", "--", "sh", "-c", `stty size; while read l; do [ "$l" = q ] && exit 4; stty size; done`)
	waitFor(out, "40 100", nil)
	if err := unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 50, Col: 120}); err != nil {
		t.Fatal(err)
	}
	waitFor(out, "50 120", func() { _, _ = master.Write([]byte("x\r")) })
	_, _ = master.Write([]byte("q\r"))
	if err := cmd.Wait(); cmd.ProcessState.ExitCode() != 4 {
		t.Errorf("kubectl exec -it: %v, want exit code 4; terminal %q", err, out.String())
	}

	master, out, _ = interactive("attach", "-it", "tty")
	waitFor(out, "a42b", func() { _, _ = master.Write([]byte("echo a$((6*7))b\r")) })

	// kubectl run -it --rm: create, attach to the new tty container, and
	// delete the pod when its shell exits.
	master, out, cmd = interactive("run", "-it", "--rm", "oneshot", "--image=navarch.io/busybox:1", "--restart=Never",
		`--overrides={"apiVersion":"v1","spec":{"nodeName":"kubelet-test","terminationGracePeriodSeconds":0}}`, "--", "sh")
	waitFor(out, "b56c", func() { _, _ = master.Write([]byte("echo b$((7*8))c\r")) })
	_, _ = master.Write([]byte("exit 0\r"))
	if err := cmd.Wait(); err != nil {
		t.Errorf("kubectl run -it --rm: %v; terminal %q", err, out.String())
	}
	// kubectl's last words may still be in the pty when it has exited.
	waitFor(out, `pod "oneshot" deleted`, nil)
	for _, name := range []string{"shell", "tty"} {
		n.deleteAndWait(name)
	}
}

// writeKubeconfig writes a kubeconfig for the node's API server.
func writeKubeconfig(t *testing.T, n *testNode) string {
	api := n.client.CoreV1().RESTClient().Get().URL()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q}}]
users: [{name: u, user: {}}]
contexts: [{name: c, context: {cluster: c, user: u, namespace: default}}]
current-context: c
`, api.Scheme+"://"+api.Host)), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// openTestPty makes a pseudo-terminal pair.
func openTestPty(t *testing.T) (master, slave *os.File) {
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	master = os.NewFile(uintptr(m), "ptmx")
	if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	num, err := unix.IoctlGetUint32(m, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", num), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	return master, slave
}

// The same HTTPS server in front of containerd's CRI: containerd's own
// streaming server answers the URLs, so exec and port-forward work through
// the kubelet with nothing of the built-in runtime.
func TestKubeletServerContainerd(t *testing.T) {
	c, rt, img, cgroupRoot := containerdCRI(t)

	srv := apiservertest.Start(t)
	dataDir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	k, err := New(Config{Client: srv.Client, NodeName: "kubelet-test", DataDir: dataDir, Runtime: rt, Images: img,
		DefaultPodCIDR: c.subnet.String(), Version: "v1.34.0", RelistInterval: 200 * time.Millisecond,
		BackoffInitial: time.Second, ImageGCInterval: time.Hour, CgroupRoot: cgroupRoot})
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() { ran <- k.Run(ctx) }()
	certs, err := pki.Ensure(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ks, err := NewServer(ServerConfig{Listener: ln, Runtime: rt, CertDir: filepath.Join(dataDir, "pki"), Hosts: []string{"127.0.0.1"}, ClientCAPEM: certs.CACertPEM})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- ks.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-ran; err != nil {
			t.Errorf("kubelet: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("kubelet server: %v", err)
		}
	})

	n := &testNode{t: t, client: srv.Client, node: "kubelet-test"}
	shell := busyboxPod("shell", corev1.RestartPolicyNever, "exec sleep 3600")
	shell.Spec.TerminationGracePeriodSeconds = ptr.To[int64](0)
	shell.Spec.Containers[0].ImagePullPolicy = corev1.PullNever
	n.createAndWait(shell, corev1.PodRunning)
	web := testPod("web", corev1.RestartPolicyAlways)
	web.Spec.Containers[0].ImagePullPolicy = corev1.PullNever
	n.createAndWait(web, corev1.PodRunning)

	cfg := kubeletClient(certs, ks.Port())
	var out, errOut bytes.Buffer
	err = kubeletStream(cfg, "/exec/default/shell/main", streamQuery(true, true, true, false, "sh", "-c", "cat; echo err >&2; exit 5"),
		remotecommand.StreamOptions{Stdin: strings.NewReader("in\n"), Stdout: &out, Stderr: &errOut})
	if exitCodeOf(err) != 5 || out.String() != "in\n" || errOut.String() != "err\n" {
		t.Errorf("exec on containerd: %v, stdout %q, stderr %q", err, out.String(), errOut.String())
	}
	var body string
	apiservertest.Eventually(t, 10*time.Second, "GET /hostname through port-forward on containerd", func() error {
		var err error
		body, err = kubeletPortForwardGet(cfg, "/portForward/default/web", 8080, "/hostname")
		return err
	})
	if body != "web\n" {
		t.Errorf("GET /hostname through port-forward on containerd: %q", body)
	}
	for _, name := range []string{"shell", "web"} {
		n.deleteAndWait(name)
	}
}
