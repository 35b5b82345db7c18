package kubelet

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ServerConfig is what the kubelet's HTTPS server needs.
type ServerConfig struct {
	// Listener is where it serves (e.g. on :10250, upstream's port).
	Listener net.Listener
	Runtime  runtimeapi.RuntimeServiceClient
	// CertDir holds the serving certificate, self-signed and made on the
	// first start (kubelet.crt, kubelet.key), as upstream's kubelet does
	// without TLS bootstrap; Hosts are the names and IPs it is valid for.
	CertDir string
	Hosts   []string
	// ClientCAPEM verifies callers: only clients with a certificate of
	// the cluster CA (the API server) are served.
	ClientCAPEM []byte
}

// Server is the kubelet's HTTPS server: container logs for the API
// server's pods/log, and exec, attach, port-forward and run for
// pods/exec, pods/attach and pods/portforward.
type Server struct {
	cfg  ServerConfig
	http *http.Server
	// streams reaches the runtime's streaming server (loopback, plain HTTP).
	streams *http.Transport
}

// NewServer prepares the server and its certificate.
func NewServer(cfg ServerConfig) (*Server, error) {
	cert, err := selfSignedCert(cfg.CertDir, cfg.Hosts)
	if err != nil {
		return nil, fmt.Errorf("kubelet serving certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(cfg.ClientCAPEM) {
		return nil, errors.New("kubelet server: no client CA certificate")
	}
	s := &Server{cfg: cfg, streams: &http.Transport{DisableKeepAlives: true}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /containerLogs/{namespace}/{pod}/{container}", s.containerLogs)
	// /healthz answers "ok" while the server runs, as upstream's kubelet
	// (reached as nodes/NAME/proxy/healthz).
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	s.streamRoutes(mux)
	// Failed handshakes (a client without a certificate) are logged at
	// debug level: anyone reaching the port can cause them.
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 30 * time.Second,
		ErrorLog: slog.NewLogLogger(slog.Default().Handler(), slog.LevelDebug), TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert,
			MinVersion: tls.VersionTLS12,
		}}
	return s, nil
}

// Port is the port the server listens on (the Node's kubeletEndpoint).
func (s *Server) Port() int32 {
	if a, ok := s.cfg.Listener.Addr().(*net.TCPAddr); ok {
		return int32(a.Port)
	}
	return 0
}

// Serve serves until ctx ends.
func (s *Server) Serve(ctx context.Context) error {
	go func() {
		<-ctx.Done()
		s.http.Close() // ends followed logs too
	}()
	if err := s.http.ServeTLS(s.cfg.Listener, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("kubelet server: %w", err)
	}
	return nil
}

// containerLogs serves GET /containerLogs/{namespace}/{pod}/{container}.
func (s *Server) containerLogs(w http.ResponseWriter, r *http.Request) {
	ns, pod, name := r.PathValue("namespace"), r.PathValue("pod"), r.PathValue("container")
	q := r.URL.Query()
	o, err := parseLogOptions(q, time.Now())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	previous, err := boolParam(q, "previous")
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c, code, err := s.findContainer(r.Context(), ns, pod, name, previous)
	if err != nil {
		http.Error(w, err.Error(), code)
		return
	}
	ctx := r.Context()
	exited := func() bool {
		st, err := s.cfg.Runtime.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: c.GetId()})
		// Created (not started yet) is not an exit: its lines are to come.
		state := st.GetStatus().GetState()
		return err != nil || state == runtimeapi.ContainerState_CONTAINER_EXITED || state == runtimeapi.ContainerState_CONTAINER_UNKNOWN
	}
	if previous {
		o.follow = false // an exited container has nothing more to say
	}
	w.Header().Set("Content-Type", "text/plain")
	flush := func() {}
	if f, ok := w.(http.Flusher); ok {
		flush = f.Flush
	}
	if err := writeLog(ctx, c.GetLogPath(), o, w, flush, exited); err != nil && ctx.Err() == nil {
		slog.Warn("kubelet container log failed", "pod", ns+"/"+pod, "container", name, "err", err)
	}
}

// findContainer returns the status of the pod's container: the newest
// attempt, or with previous the one before it (an exited one: the kubelet
// keeps one for lastState), with an HTTP code and upstream's message when
// there is none.
func (s *Server) findContainer(ctx context.Context, ns, pod, name string, previous bool) (*runtimeapi.ContainerStatus, int, error) {
	list, err := s.cfg.Runtime.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{
		LabelSelector: map[string]string{labelPodNamespace: ns, labelPodName: pod, labelContainerName: name}}})
	if err != nil {
		return nil, http.StatusInternalServerError, fmt.Errorf("pod %s/%s container %s: %w", ns, pod, name, err)
	}
	cs := list.GetContainers()
	sort.Slice(cs, func(i, j int) bool {
		if a, b := cs[i].GetMetadata().GetAttempt(), cs[j].GetMetadata().GetAttempt(); a != b {
			return a > b
		}
		return cs[i].GetCreatedAt() > cs[j].GetCreatedAt()
	})
	i := 0
	if previous {
		i = 1
	}
	if len(cs) <= i {
		if previous {
			return nil, http.StatusBadRequest, fmt.Errorf("previous terminated container %q in pod %q not found", name, pod)
		}
		return nil, http.StatusBadRequest, fmt.Errorf("container %q in pod %q is waiting to start: ContainerCreating", name, pod)
	}
	st, err := s.cfg.Runtime.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: cs[i].GetId()})
	if err != nil {
		return nil, http.StatusInternalServerError, fmt.Errorf("pod %s/%s container %s: %w", ns, pod, name, err)
	}
	if st.GetStatus().GetLogPath() == "" {
		return nil, http.StatusBadRequest, fmt.Errorf("container %q in pod %q has no log", name, pod)
	}
	return st.GetStatus(), 0, nil
}

// selfSignedCert loads dir/kubelet.{crt,key}, or makes a self-signed
// certificate for hosts when they are missing, expire within 30 days or
// lack a host.
func selfSignedCert(dir string, hosts []string) (tls.Certificate, error) {
	certPath, keyPath := filepath.Join(dir, "kubelet.crt"), filepath.Join(dir, "kubelet.key")
	if pair, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil {
		if c, err := x509.ParseCertificate(pair.Certificate[0]); err == nil && time.Until(c.NotAfter) > 30*24*time.Hour && coversAll(c, hosts) {
			return pair, nil
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "navarch-kubelet@" + strconv.FormatInt(now.Unix(), 10)},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return tls.Certificate{}, err
	}
	// The key first: a certificate without its key would be unusable.
	if err := os.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		return tls.Certificate{}, err
	}
	if err := os.WriteFile(certPath, certPEM, 0o644); err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}

func coversAll(c *x509.Certificate, hosts []string) bool {
	for _, h := range hosts {
		if h != "" && c.VerifyHostname(h) != nil {
			return false
		}
	}
	return true
}

// streamRoutes serves exec, attach, port-forward and run at upstream's
// paths and with its query parameters, which is what the API server sends:
//
//	/exec/{namespace}/{pod}[/{uid}]/{container}?command=..&command=..&input=1&output=1&error=1&tty=1
//	/attach/{namespace}/{pod}[/{uid}]/{container}?input=1&output=1&error=1&tty=1
//	/portForward/{namespace}/{pod}[/{uid}][?port=N...]  (also /portforward/...)
//	/run/{namespace}/{pod}[/{uid}]/{container}?cmd=...  (POST: the output of a command)
//
// Exec, attach and port-forward ask the runtime (CRI Exec, Attach,
// PortForward) for a URL of its streaming server and proxy the client's
// upgrade request to it, so the protocol (SPDY) is spoken between the
// client and the runtime, and containerd's streaming server serves as
// well as the built-in one's.
func (s *Server) streamRoutes(mux *http.ServeMux) {
	for _, m := range []string{http.MethodGet, http.MethodPost} {
		for _, p := range []string{"/exec/{namespace}/{pod}/{container}", "/exec/{namespace}/{pod}/{uid}/{container}"} {
			mux.HandleFunc(m+" "+p, s.exec)
		}
		for _, p := range []string{"/attach/{namespace}/{pod}/{container}", "/attach/{namespace}/{pod}/{uid}/{container}"} {
			mux.HandleFunc(m+" "+p, s.attach)
		}
		for _, p := range []string{"/portForward/{namespace}/{pod}", "/portForward/{namespace}/{pod}/{uid}",
			"/portforward/{namespace}/{pod}", "/portforward/{namespace}/{pod}/{uid}"} {
			mux.HandleFunc(m+" "+p, s.portForward)
		}
	}
	for _, p := range []string{"/run/{namespace}/{pod}/{container}", "/run/{namespace}/{pod}/{uid}/{container}"} {
		mux.HandleFunc(http.MethodPost+" "+p, s.run)
	}
}

// streamOptions reads input, output, error and tty as upstream: a tty has
// one output, so error is dropped with it; one stream at least.
func streamOptions(q url.Values) (stdin, stdout, stderr, tty bool, err error) {
	for _, p := range []struct {
		name string
		v    *bool
	}{{"input", &stdin}, {"output", &stdout}, {"error", &stderr}, {"tty", &tty}} {
		if *p.v, err = boolParam(q, p.name); err != nil {
			return
		}
	}
	if tty {
		stderr = false
	}
	if !stdin && !stdout && !stderr {
		err = errors.New("you must specify at least 1 of stdin, stdout, stderr")
	}
	return
}

func (s *Server) exec(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	stdin, stdout, stderr, tty, err := streamOptions(q)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	cmd := q["command"]
	if len(cmd) == 0 {
		http.Error(w, "missing command", http.StatusBadRequest)
		return
	}
	id, code, err := s.runningContainer(r)
	if err != nil {
		http.Error(w, err.Error(), code)
		return
	}
	resp, err := s.cfg.Runtime.Exec(r.Context(), &runtimeapi.ExecRequest{ContainerId: id, Cmd: cmd,
		Stdin: stdin, Stdout: stdout, Stderr: stderr, Tty: tty})
	if err != nil {
		writeRuntimeError(w, err)
		return
	}
	s.proxyStream(w, r, resp.GetUrl())
}

func (s *Server) attach(w http.ResponseWriter, r *http.Request) {
	stdin, stdout, stderr, tty, err := streamOptions(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	id, code, err := s.runningContainer(r)
	if err != nil {
		http.Error(w, err.Error(), code)
		return
	}
	resp, err := s.cfg.Runtime.Attach(r.Context(), &runtimeapi.AttachRequest{ContainerId: id,
		Stdin: stdin, Stdout: stdout, Stderr: stderr, Tty: tty})
	if err != nil {
		writeRuntimeError(w, err)
		return
	}
	s.proxyStream(w, r, resp.GetUrl())
}

func (s *Server) portForward(w http.ResponseWriter, r *http.Request) {
	var ports []int32
	for _, v := range r.URL.Query()["port"] {
		p, err := strconv.ParseUint(v, 10, 16)
		if err != nil || p == 0 {
			http.Error(w, fmt.Sprintf("invalid port %q", v), http.StatusBadRequest)
			return
		}
		ports = append(ports, int32(p))
	}
	sb, code, err := s.findSandbox(r)
	if err != nil {
		http.Error(w, err.Error(), code)
		return
	}
	resp, err := s.cfg.Runtime.PortForward(r.Context(), &runtimeapi.PortForwardRequest{PodSandboxId: sb, Port: ports})
	if err != nil {
		writeRuntimeError(w, err)
		return
	}
	s.proxyStream(w, r, resp.GetUrl())
}

// run answers POST /run with the command's output (upstream's RunInContainer).
func (s *Server) run(w http.ResponseWriter, r *http.Request) {
	cmd := strings.Fields(r.URL.Query().Get("cmd"))
	if len(cmd) == 0 {
		http.Error(w, "missing cmd", http.StatusBadRequest)
		return
	}
	id, code, err := s.runningContainer(r)
	if err != nil {
		http.Error(w, err.Error(), code)
		return
	}
	resp, err := s.cfg.Runtime.ExecSync(r.Context(), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: cmd})
	if err != nil {
		writeRuntimeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write(resp.GetStdout())
	_, _ = w.Write(resp.GetStderr())
}

// findSandbox returns the sandbox of the request's pod, a ready one first:
// 404 with upstream's message when the pod has none here.
func (s *Server) findSandbox(r *http.Request) (string, int, error) {
	ns, pod, uid := r.PathValue("namespace"), r.PathValue("pod"), r.PathValue("uid")
	sel := map[string]string{labelPodNamespace: ns, labelPodName: pod}
	if uid != "" {
		sel[labelPodUID] = uid
	}
	list, err := s.cfg.Runtime.ListPodSandbox(r.Context(), &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{LabelSelector: sel}})
	if err != nil {
		return "", http.StatusInternalServerError, fmt.Errorf("pod %s/%s: %w", ns, pod, err)
	}
	// A finished pod's sandbox is no longer ready but still names the pod
	// (its containers then are not running, which is the better answer).
	ready := func(sb *runtimeapi.PodSandbox) bool { return sb.GetState() == runtimeapi.PodSandboxState_SANDBOX_READY }
	var newest *runtimeapi.PodSandbox
	for _, sb := range list.GetItems() {
		if newest == nil || ready(sb) && !ready(newest) || ready(sb) == ready(newest) && sb.GetCreatedAt() > newest.GetCreatedAt() {
			newest = sb
		}
	}
	if newest == nil {
		return "", http.StatusNotFound, errors.New("pod does not exist")
	}
	return newest.GetId(), 0, nil
}

// runningContainer returns the running container the request names in its
// pod: 404 when the pod or the container does not exist here, 400 when the
// container is not running.
func (s *Server) runningContainer(r *http.Request) (string, int, error) {
	sb, code, err := s.findSandbox(r)
	if err != nil {
		return "", code, err
	}
	pod, name := r.PathValue("pod"), r.PathValue("container")
	list, err := s.cfg.Runtime.ListContainers(r.Context(), &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{
		PodSandboxId: sb, LabelSelector: map[string]string{labelContainerName: name}}})
	if err != nil {
		return "", http.StatusInternalServerError, fmt.Errorf("pod %s container %s: %w", pod, name, err)
	}
	var best *runtimeapi.Container
	for _, c := range list.GetContainers() {
		if c.GetState() == runtimeapi.ContainerState_CONTAINER_RUNNING &&
			(best == nil || c.GetMetadata().GetAttempt() > best.GetMetadata().GetAttempt()) {
			best = c
		}
	}
	switch {
	case best != nil:
		return best.GetId(), 0, nil
	case len(list.GetContainers()) == 0:
		return "", http.StatusNotFound, fmt.Errorf("container not found (%q)", name)
	default:
		return "", http.StatusBadRequest, fmt.Errorf("container %q in pod %q is not running", name, pod)
	}
}

// writeRuntimeError answers for a failed CRI call as upstream's streaming
// errors do: NotFound 404, too many requests 429, a bad request 400.
func writeRuntimeError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch status.Code(err) {
	case codes.NotFound:
		code = http.StatusNotFound
	case codes.ResourceExhausted:
		w.Header().Set("Retry-After", "10")
		code = http.StatusTooManyRequests
	case codes.InvalidArgument, codes.FailedPrecondition:
		code = http.StatusBadRequest
	}
	msg := err.Error()
	if st, ok := status.FromError(err); ok {
		msg = st.Message()
	}
	http.Error(w, msg, code)
}

// proxyStream hands the client's request, upgrade headers and all, to the
// runtime's streaming URL; httputil.ReverseProxy switches to copying the
// raw connection both ways once the runtime answers 101.
func (s *Server) proxyStream(w http.ResponseWriter, r *http.Request, rawURL string) {
	target, err := url.Parse(rawURL)
	if err != nil || target.Host == "" {
		http.Error(w, fmt.Sprintf("the runtime returned a bad streaming URL %q", rawURL), http.StatusInternalServerError)
		return
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL = target
			pr.Out.Host = target.Host
		},
		Transport:     s.streams,
		FlushInterval: -1,
		ErrorLog:      slog.NewLogLogger(slog.Default().Handler(), slog.LevelDebug),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			slog.Warn("kubelet stream proxy failed", "path", r.URL.Path, "err", err)
			http.Error(w, "error proxying to the container runtime's streaming server: "+err.Error(), http.StatusBadGateway)
		},
	}
	rp.ServeHTTP(w, r)
}
