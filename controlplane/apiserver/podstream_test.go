package apiserver_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/httpstream"
	spdyserver "k8s.io/apimachinery/pkg/util/httpstream/spdy"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
	"k8s.io/client-go/util/exec"

	"github.com/navarch/navarch/controlplane/apiserver"
	"github.com/navarch/navarch/controlplane/apiserver/apiservertest"
	"github.com/navarch/navarch/internal/pki"
)

// fakeKubelet stands in for a kubelet's streaming endpoints: SPDY exec,
// attach and port-forward as upstream's kubelet serves them, with a few
// canned commands, and a plain handler for everything else (nodes/proxy).
type fakeKubelet struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []*http.Request // the requests seen, for their URLs and headers
	// hungUp gets a value when a "sleep" session's connection closes.
	hungUp chan struct{}
	// untarred are the archives "tar" received on stdin.
	untarred [][]byte
}

func startFakeKubelet(t *testing.T) *fakeKubelet {
	k := &fakeKubelet{hungUp: make(chan struct{}, 8)}
	mux := http.NewServeMux()
	mux.HandleFunc("/exec/", k.serveExec)
	mux.HandleFunc("/attach/", k.serveExec)
	mux.HandleFunc("/portforward/", k.servePortForward)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		k.note(r)
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s?%s %s", r.Method, r.URL.Path, r.URL.RawQuery, body)
	})
	k.srv = httptest.NewUnstartedServer(mux)
	// The API server must present its client certificate.
	k.srv.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
	k.srv.StartTLS()
	t.Cleanup(func() {
		k.srv.CloseClientConnections()
		k.srv.Close()
	})
	return k
}

func (k *fakeKubelet) note(r *http.Request) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.got = append(k.got, r.Clone(context.Background()))
}

func (k *fakeKubelet) last() *http.Request {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.got) == 0 {
		return nil
	}
	return k.got[len(k.got)-1]
}

func (k *fakeKubelet) port() int32 {
	_, p, _ := net.SplitHostPort(k.srv.Listener.Addr().String())
	n, _ := strconv.Atoi(p)
	return int32(n)
}

// serveExec runs a canned command over SPDY: "echo ARGS" (stdout, and
// "warn" on stderr), "exit N", "cat" (stdin to stdout until stdin's EOF),
// "resize" (reads two terminal sizes), "sleep" (until the connection
// closes), "tar" (kubectl cp both ways); attach prints "attached".
func (k *fakeKubelet) serveExec(w http.ResponseWriter, r *http.Request) {
	k.note(r)
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		http.Error(w, "no client certificate", http.StatusUnauthorized)
		return
	}
	q := r.URL.Query()
	if _, err := httpstream.Handshake(r, w, []string{"v5.channel.k8s.io", "v4.channel.k8s.io"}); err != nil {
		return
	}
	arrived := make(chan httpstream.Stream, 8)
	conn := spdyserver.NewResponseUpgrader().UpgradeResponse(w, r, func(s httpstream.Stream, _ <-chan struct{}) error {
		arrived <- s
		return nil
	})
	if conn == nil {
		return
	}
	defer conn.Close()
	tty := q.Get("tty") == "1"
	want := 1
	for _, on := range []bool{q.Get("input") == "1", q.Get("output") == "1", q.Get("error") == "1" && !tty, tty} {
		if on {
			want++
		}
	}
	streams := map[string]httpstream.Stream{}
	for len(streams) < want {
		select {
		case s := <-arrived:
			streams[s.Headers().Get("streamType")] = s
		case <-time.After(10 * time.Second):
			return
		}
	}
	stdout, stderr := streams["stdout"], streams["stderr"]
	status := metav1.Status{Status: metav1.StatusSuccess}
	cmd := q["command"]
	switch {
	case strings.HasPrefix(r.URL.Path, "/attach/"):
		io.WriteString(stdout, "attached\n")
	case cmd[0] == "echo":
		io.WriteString(stdout, strings.Join(cmd[1:], " ")+"\n")
		if stderr != nil {
			io.WriteString(stderr, "warn\n")
		}
	case cmd[0] == "exit":
		status = metav1.Status{Status: metav1.StatusFailure, Reason: "NonZeroExitCode", Message: "exit " + cmd[1],
			Details: &metav1.StatusDetails{Causes: []metav1.StatusCause{{Type: "ExitCode", Message: cmd[1]}}}}
	case cmd[0] == "sleep":
		io.WriteString(stdout, "sleeping\n")
		<-conn.CloseChan()
		k.hungUp <- struct{}{}
		return
	case cmd[0] == "tar" && streams["stdin"] != nil:
		// kubectl cp to the pod: the archive, up to stdin's EOF.
		b, _ := io.ReadAll(streams["stdin"])
		k.mu.Lock()
		k.untarred = append(k.untarred, b)
		k.mu.Unlock()
	case cmd[0] == "tar":
		// kubectl cp from the pod: the path asked for, holding "payload".
		tw := tar.NewWriter(stdout)
		tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(cmd[len(cmd)-1], "/"), Mode: 0o644, Size: 7, Typeflag: tar.TypeReg})
		io.WriteString(tw, "payload")
		tw.Close()
	case cmd[0] == "cat":
		io.Copy(stdout, streams["stdin"])
		io.WriteString(stdout, "[eof]")
	case cmd[0] == "resize":
		dec := json.NewDecoder(streams["resize"])
		for range 2 {
			var size remotecommand.TerminalSize
			if err := dec.Decode(&size); err != nil {
				break
			}
			fmt.Fprintf(stdout, "%dx%d ", size.Width, size.Height)
		}
	}
	for _, s := range []httpstream.Stream{stdout, stderr} {
		if s != nil {
			s.Close()
		}
	}
	b, _ := json.Marshal(status)
	streams["error"].Write(b)
	streams["error"].Close()
	select {
	case <-conn.CloseChan():
	case <-time.After(10 * time.Second):
	}
}

// servePortForward answers each data stream with what it reads, upper-cased,
// prefixed with the stream's port.
func (k *fakeKubelet) servePortForward(w http.ResponseWriter, r *http.Request) {
	k.note(r)
	if _, err := httpstream.Handshake(r, w, []string{"portforward.k8s.io"}); err != nil {
		return
	}
	conn := spdyserver.NewResponseUpgrader().UpgradeResponse(w, r, func(s httpstream.Stream, _ <-chan struct{}) error {
		if s.Headers().Get("streamType") != "data" {
			return nil
		}
		go func() {
			defer s.Close()
			buf := make([]byte, 1024)
			for {
				n, err := s.Read(buf)
				if n > 0 {
					fmt.Fprintf(s, "%s:%s", s.Headers().Get("port"), bytes.ToUpper(buf[:n]))
				}
				if err != nil {
					return
				}
			}
		}()
		return nil
	})
	if conn == nil {
		return
	}
	defer conn.Close()
	<-conn.CloseChan()
}

// streamCluster is an API server whose node n1 is the fake kubelet, with a
// running pod "one" (container a) on it.
func streamCluster(t *testing.T) (*apiservertest.Server, *fakeKubelet) {
	t.Helper()
	bundle, err := pki.Ensure(t.TempDir(), []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := bundle.IssueClientCert("kube-apiserver-kubelet-client", []string{"kubeadm:cluster-admins"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srv := apiservertest.StartConfig(t, func(c *apiserver.Config) {
		c.KubeletClientCertPEM, c.KubeletClientKeyPEM = certPEM, keyPEM
	})
	k := startFakeKubelet(t)
	ctx := context.Background()
	node, err := srv.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}}
	node.Status.DaemonEndpoints.KubeletEndpoint.Port = k.port()
	if _, err := srv.Client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	pods := srv.Client.CoreV1().Pods("default")
	for name, phase := range map[string]corev1.PodPhase{"one": corev1.PodRunning, "done": corev1.PodSucceeded, "pending": corev1.PodPending} {
		pod, err := pods.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "a", Image: "busybox"}}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pod.Status.Phase = phase
		if _, err := pods.UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return srv, k
}

// execURL is the URL kubectl builds for pods/exec or pods/attach.
func execURL(srv *apiservertest.Server, pod, sub string, opts runtime.Object) *url.URL {
	return srv.Client.CoreV1().RESTClient().Post().Resource("pods").Namespace("default").Name(pod).
		SubResource(sub).VersionedParams(opts, scheme.ParameterCodec).URL()
}

// The executors kubectl uses: SPDY, WebSocket (v5) and the WebSocket with
// fallback to SPDY (kubectl 1.30+).
func executors(t *testing.T, cfg *rest.Config, u *url.URL) map[string]remotecommand.Executor {
	t.Helper()
	sp, err := remotecommand.NewSPDYExecutor(cfg, http.MethodPost, u)
	if err != nil {
		t.Fatal(err)
	}
	ws, err := remotecommand.NewWebSocketExecutor(cfg, http.MethodGet, u.String())
	if err != nil {
		t.Fatal(err)
	}
	fb, err := remotecommand.NewFallbackExecutor(ws, sp, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	if err != nil {
		t.Fatal(err)
	}
	// A WebSocket client offering only an old protocol is refused at the
	// handshake, and the fallback then speaks SPDY.
	old, err := remotecommand.NewWebSocketExecutorForProtocols(cfg, http.MethodGet, u.String(), "v3.channel.k8s.io")
	if err != nil {
		t.Fatal(err)
	}
	oldFB, err := remotecommand.NewFallbackExecutor(old, sp, httpstream.IsUpgradeFailure)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]remotecommand.Executor{"spdy": sp, "websocket": ws, "fallback": fb, "v3-fallback": oldFB}
}

// sizes is a TerminalSizeQueue with fixed sizes.
type sizes struct{ left []remotecommand.TerminalSize }

func (q *sizes) Next() *remotecommand.TerminalSize {
	if len(q.left) == 0 {
		return nil
	}
	s := q.left[0]
	q.left = q.left[1:]
	return &s
}

// exec and attach stream through the API server with every client
// protocol kubectl speaks: output, stderr, exit codes, stdin's EOF and
// terminal resizes reach the kubelet and back.
func TestPodExecAttach(t *testing.T) {
	srv, k := streamCluster(t)
	for _, c := range []struct {
		name   string
		opts   runtime.Object
		sub    string
		stdin  string
		sizes  []remotecommand.TerminalSize
		stdout string
		stderr string
		exit   int
	}{
		{name: "echo", sub: "exec", opts: &corev1.PodExecOptions{Command: []string{"echo", "hello", "world"}, Stdout: true, Stderr: true},
			stdout: "hello world\n", stderr: "warn\n"},
		{name: "exit", sub: "exec", opts: &corev1.PodExecOptions{Command: []string{"exit", "3"}, Stdout: true, Stderr: true}, exit: 3},
		{name: "stdin", sub: "exec", opts: &corev1.PodExecOptions{Command: []string{"cat"}, Stdin: true, Stdout: true, Stderr: true},
			stdin: "some input\n", stdout: "some input\n[eof]"},
		{name: "resize", sub: "exec", opts: &corev1.PodExecOptions{Command: []string{"resize"}, Stdin: true, Stdout: true, TTY: true},
			sizes: []remotecommand.TerminalSize{{Width: 80, Height: 24}, {Width: 120, Height: 40}}, stdout: "80x24 120x40 "},
		{name: "attach", sub: "attach", opts: &corev1.PodAttachOptions{Container: "a", Stdout: true, Stderr: true}, stdout: "attached\n"},
	} {
		for proto, ex := range executors(t, srv.Config, execURL(srv, "one", c.sub, c.opts)) {
			t.Run(c.name+"/"+proto, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				var stdout, stderr bytes.Buffer
				so := remotecommand.StreamOptions{Stdout: &stdout}
				if c.sizes == nil {
					so.Stderr = &stderr
				}
				if c.sizes != nil {
					so.Tty = true
					so.TerminalSizeQueue = &sizes{left: c.sizes}
					// With a terminal the client keeps stdin open; the
					// command ends after the sizes.
					pr, pw := io.Pipe()
					defer pw.Close()
					so.Stdin = pr
				} else if c.stdin != "" {
					so.Stdin = strings.NewReader(c.stdin)
				}
				err := ex.StreamWithContext(ctx, so)
				var exitErr exec.CodeExitError
				switch {
				case c.exit != 0 && (!errors.As(err, &exitErr) || exitErr.Code != c.exit):
					t.Fatalf("got %v, want exit code %d", err, c.exit)
				case c.exit == 0 && err != nil:
					t.Fatal(err)
				}
				if stdout.String() != c.stdout || stderr.String() != c.stderr {
					t.Errorf("stdout %q stderr %q, want %q %q", stdout.String(), stderr.String(), c.stdout, c.stderr)
				}
				got := k.last()
				if got == nil || got.Header.Get("Authorization") != "" {
					t.Errorf("kubelet request %v: the client's credentials must not reach the kubelet", got)
				}
			})
		}
	}
	// The kubelet URL carries the options in its own words.
	ex, err := remotecommand.NewSPDYExecutor(srv.Config, http.MethodPost, execURL(srv, "one", "exec",
		&corev1.PodExecOptions{Command: []string{"echo", "x", "y"}, Stdout: true}))
	if err != nil {
		t.Fatal(err)
	}
	if err := ex.StreamWithContext(context.Background(), remotecommand.StreamOptions{Stdout: io.Discard}); err != nil {
		t.Fatal(err)
	}
	if got := k.last().URL; got.Path != "/exec/default/one/a" || got.RawQuery != "command=echo&command=x&command=y&output=1" {
		t.Errorf("kubelet URL %s, want /exec/default/one/a?command=echo&command=x&command=y&output=1", got)
	}
}

// Port-forward reaches the kubelet over SPDY and over SPDY-in-WebSocket
// (kubectl 1.31+), bytes going both ways.
func TestPodPortForward(t *testing.T) {
	srv, k := streamCluster(t)
	u := srv.Client.CoreV1().RESTClient().Post().Resource("pods").Namespace("default").Name("one").SubResource("portforward").URL()
	transport, upgrader, err := spdy.RoundTripperFor(srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	spdyDialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, u)
	wsDialer, err := portforward.NewSPDYOverWebsocketDialer(u, srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	for name, dialer := range map[string]httpstream.Dialer{"spdy": spdyDialer, "websocket": wsDialer,
		"fallback": portforward.NewFallbackDialer(wsDialer, spdyDialer, httpstream.IsUpgradeFailure)} {
		t.Run(name, func(t *testing.T) {
			stop, ready := make(chan struct{}), make(chan struct{})
			var out, errOut bytes.Buffer
			fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{"0:8080"}, stop, ready, &out, &errOut)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- fw.ForwardPorts() }()
			defer func() {
				close(stop)
				if err := <-done; err != nil {
					t.Errorf("forward: %v", err)
				}
			}()
			select {
			case <-ready:
			case err := <-done:
				t.Fatalf("forward: %v", err)
			}
			ports, err := fw.GetPorts()
			if err != nil {
				t.Fatal(err)
			}
			for i := range 2 {
				c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(ports[0].Local))))
				if err != nil {
					t.Fatal(err)
				}
				msg := fmt.Sprintf("ping %d", i)
				if _, err := c.Write([]byte(msg)); err != nil {
					t.Fatal(err)
				}
				want := "8080:" + strings.ToUpper(msg)
				buf := make([]byte, len(want))
				c.SetReadDeadline(time.Now().Add(20 * time.Second))
				if _, err := io.ReadFull(c, buf); err != nil || string(buf) != want {
					t.Fatalf("read %q, %v; want %q", buf, err, want)
				}
				c.Close()
			}
			if got := k.last(); got.URL.Path != "/portforward/default/one" || got.Header.Get("X-Stream-Protocol-Version") != "portforward.k8s.io" {
				t.Errorf("kubelet request %s %v", got.URL, got.Header)
			}
		})
	}
}

// Requests a stream cannot serve are refused before the kubelet, with
// upstream's status and message.
func TestPodStreamErrors(t *testing.T) {
	srv, _ := streamCluster(t)
	ctx := context.Background()
	pods := srv.Client.CoreV1().Pods("default")
	if _, err := pods.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "two"}, Spec: corev1.PodSpec{NodeName: "n1",
		Containers: []corev1.Container{{Name: "a", Image: "busybox"}, {Name: "b", Image: "busybox"}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := pods.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "unscheduled"}, Spec: corev1.PodSpec{
		Containers: []corev1.Container{{Name: "a", Image: "busybox"}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// n2's kubelet does not listen.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadPort := int32(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	n2, err := srv.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n2"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n2.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}}
	n2.Status.DaemonEndpoints.KubeletEndpoint.Port = deadPort
	if _, err := srv.Client.CoreV1().Nodes().UpdateStatus(ctx, n2, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	lost, err := pods.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "lost"}, Spec: corev1.PodSpec{NodeName: "n2",
		Containers: []corev1.Container{{Name: "a", Image: "busybox"}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lost.Status.Phase = corev1.PodRunning
	if _, err := pods.UpdateStatus(ctx, lost, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	out := &corev1.PodExecOptions{Command: []string{"true"}, Stdout: true}
	for _, c := range []struct {
		pod, sub string
		opts     runtime.Object
		code     int32
		want     string
	}{
		{"missing", "exec", out, 404, `pods "missing" not found`},
		{"two", "exec", out, 400, "a container name must be specified for pod two, choose one of: [a b]"},
		{"one", "exec", &corev1.PodExecOptions{Container: "c", Command: []string{"true"}, Stdout: true}, 400, "container c is not valid for pod one"},
		{"unscheduled", "exec", out, 400, "pod unscheduled does not have a host assigned"},
		{"done", "exec", out, 400, "cannot exec into a container in a completed pod; current phase is Succeeded"},
		{"done", "attach", &corev1.PodAttachOptions{Stdout: true}, 400, "cannot attach a container in a completed pod; current phase is Succeeded"},
		{"one", "exec", &corev1.PodExecOptions{Command: []string{"true"}}, 400, "you must specify at least 1 of stdin, stdout, stderr"},
		{"pending", "portforward", &corev1.PodPortForwardOptions{Ports: []int32{80}}, 400, "unable to forward port because pod is not running. Current status=Pending"},
		// Without an upgrade there is nothing to stream.
		{"one", "exec", out, 400, "Upgrade request required"},
	} {
		err := srv.Client.CoreV1().RESTClient().Post().Resource("pods").Namespace("default").Name(c.pod).SubResource(c.sub).
			VersionedParams(c.opts, scheme.ParameterCodec).Do(ctx).Error()
		var st apierrors.APIStatus
		if !errors.As(err, &st) || st.Status().Code != c.code || st.Status().Message != c.want {
			t.Errorf("%s/%s: got %v, want %d %q", c.pod, c.sub, err, c.code, c.want)
		}
	}
	// kubectl sees the same through its executor (SPDY here, after the
	// WebSocket fails the same way).
	ex, err := remotecommand.NewSPDYExecutor(srv.Config, http.MethodPost, execURL(srv, "two", "exec", out))
	if err != nil {
		t.Fatal(err)
	}
	err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: io.Discard})
	if err == nil || !strings.Contains(err.Error(), "a container name must be specified for pod two") {
		t.Errorf("spdy executor: got %v", err)
	}
	// An unreachable kubelet, as kubectl shows it over each protocol.
	for proto, ex := range executors(t, srv.Config, execURL(srv, "lost", "exec", out)) {
		err := ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: io.Discard})
		if err == nil || !strings.Contains(err.Error(), "127.0.0.1:"+strconv.Itoa(int(deadPort))) {
			t.Errorf("%s, unreachable kubelet: got %v", proto, err)
		}
	}
	err = srv.Client.CoreV1().RESTClient().Get().AbsPath("/api/v1/nodes/n2/proxy/healthz").Do(ctx).Error()
	if st := (apierrors.APIStatus)(nil); !errors.As(err, &st) || st.Status().Code != 500 || !strings.HasPrefix(st.Status().Message, "error dialing backend: ") {
		t.Errorf("nodes/proxy, unreachable kubelet: got %v", err)
	}
}

// nodes/{name}/proxy/{path} reaches the kubelet with any method, the
// query and the body.
func TestNodeProxy(t *testing.T) {
	srv, k := streamCluster(t)
	ctx := context.Background()
	rc := srv.Client.CoreV1().RESTClient()
	got, err := rc.Get().AbsPath("/api/v1/nodes/n1/proxy/stats/summary").Param("only_cpu_and_memory", "true").DoRaw(ctx)
	if err != nil || string(got) != "GET /stats/summary?only_cpu_and_memory=true " {
		t.Errorf("GET: %q, %v", got, err)
	}
	got, err = rc.Post().AbsPath("/api/v1/nodes/n1/proxy/run").Body([]byte("payload")).DoRaw(ctx)
	if err != nil || string(got) != "POST /run? payload" {
		t.Errorf("POST: %q, %v", got, err)
	}
	got, err = rc.Get().AbsPath("/api/v1/nodes/n1/proxy").DoRaw(ctx)
	if err != nil || string(got) != "GET /? " {
		t.Errorf("GET root: %q, %v", got, err)
	}
	if r := k.last(); r.Header.Get("Authorization") != "" {
		t.Error("the client's credentials reached the kubelet")
	}
	if _, err := rc.Get().AbsPath("/api/v1/nodes/nope/proxy/x").DoRaw(ctx); !apierrors.IsNotFound(err) {
		t.Errorf("unknown node: got %v, want NotFound", err)
	}
}

// A client that goes away ends the kubelet session (over SPDY the proxy
// closes it; over a WebSocket the translation does).
func TestPodExecHangUp(t *testing.T) {
	srv, k := streamCluster(t)
	u := execURL(srv, "one", "exec", &corev1.PodExecOptions{Command: []string{"sleep"}, Stdin: true, Stdout: true})
	for proto, ex := range executors(t, srv.Config, u) {
		if proto != "spdy" && proto != "websocket" {
			continue
		}
		t.Run(proto, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			pr, pw := io.Pipe()
			defer pw.Close()
			out := &notifyWriter{wrote: make(chan struct{})}
			done := make(chan error, 1)
			go func() { done <- ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: pr, Stdout: out}) }()
			select {
			case <-out.wrote:
			case err := <-done:
				t.Fatalf("stream ended early: %v", err)
			}
			cancel()
			<-done
			select {
			case <-k.hungUp:
			case <-time.After(20 * time.Second):
				t.Fatal("the kubelet session outlived its client")
			}
		})
	}
}

// notifyWriter reports its first write.
type notifyWriter struct {
	once  sync.Once
	wrote chan struct{}
}

func (w *notifyWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.wrote) })
	return len(p), nil
}
