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
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

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

// Server is the kubelet's HTTPS server: container logs for the API server's
// pods/log. Exec, attach and port-forward answer 501.
type Server struct {
	cfg  ServerConfig
	http *http.Server
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
	s := &Server{cfg: cfg}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /containerLogs/{namespace}/{pod}/{container}", s.containerLogs)
	for _, p := range []string{"/exec/", "/attach/", "/portForward/", "/run/"} {
		mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "navarch kubelet: "+p[1:len(p)-1]+" is not implemented yet", http.StatusNotImplemented)
		})
	}
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
