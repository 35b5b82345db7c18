// Package streaming owns the built-in runtime's streaming server: the HTTP
// endpoint behind the URLs that the CRI Exec, Attach and PortForward calls
// return, as upstream's CRI streaming server is for containerd. The kubelet
// resolves a pod's container, asks the runtime for a URL, and proxies the
// client's upgrade request to it, so the protocols are spoken here, between
// the client (kubectl through the API server and the kubelet) and the
// runtime:
//
//   - exec and attach: SPDY/3.1 with the remote-command subprotocols
//     channel.k8s.io and v2, v3, v4.channel.k8s.io; the client opens one
//     stream per channel (the streamType header: error, stdin, stdout,
//     stderr, resize); v4 ends with a metav1.Status on the error stream,
//     reason NonZeroExitCode with an ExitCode cause for a failed command.
//   - port-forward: SPDY/3.1 with portforward.k8s.io; the client opens an
//     error and a data stream per connection, paired by their requestID
//     header, the port in the port header.
//
// A URL holds a single-use token that expires after a minute (TokenTTL):
// whoever may call the CRI socket may stream, nobody else, and the server
// listens on loopback only. WebSocket is not spoken: the API server
// translates it to SPDY. What runs is the Runtime's business: this package
// only moves bytes and terminal sizes.
package streaming

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/util/httpstream"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TerminalSize is a resize event of a client's terminal.
type TerminalSize struct {
	Width  uint16
	Height uint16
}

// Streams are a session's channels; a nil member was not asked for. The
// runtime closes nothing: the server closes the streams after it returns.
type Streams struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Tty    bool
	// Resize delivers terminal sizes (tty only; nil otherwise). It is closed
	// when the client goes away.
	Resize <-chan TerminalSize
}

// ExitError is what Runtime.Exec returns for a command that ended with a
// non-zero code; the client exits with the same code.
type ExitError struct{ Code int }

func (e ExitError) Error() string {
	return fmt.Sprintf("command terminated with non-zero exit code: %d", e.Code)
}

// Runtime runs what a session asks for.
type Runtime interface {
	// Exec runs cmd in the container and returns when it has ended and
	// its output is copied: nil for code 0, an ExitError otherwise.
	Exec(ctx context.Context, containerID string, cmd []string, s Streams) error
	// Attach joins the container's own stdio until the client or the
	// container goes away.
	Attach(ctx context.Context, containerID string, s Streams) error
	// PortForward connects stream to port on the sandbox's loopback and
	// copies until either side ends.
	PortForward(ctx context.Context, sandboxID string, port int32, stream io.ReadWriteCloser) error
}

// Config is the server's address and token lifetime.
type Config struct {
	// Addr is where to listen; "" is 127.0.0.1:0 (a free port).
	Addr string
	// TokenTTL is how long an unused URL stays valid; 0 is a minute.
	TokenTTL time.Duration
	// StreamCreationTimeout bounds the wait for a client's streams after
	// the upgrade; 0 is 30 s, as upstream.
	StreamCreationTimeout time.Duration
}

// Server hands out URLs and serves them.
type Server struct {
	cfg  Config
	rt   Runtime
	ln   net.Listener
	base string
	http *http.Server

	mu     sync.Mutex
	tokens map[string]pending
	// conns are the upgraded sessions, which http.Server.Close leaves
	// alone: Serve closes them when it ends.
	conns  map[httpstream.Connection]bool
	closed bool
}

// pending is a request waiting for its client.
type pending struct {
	expires time.Time
	exec    *runtimeapi.ExecRequest
	attach  *runtimeapi.AttachRequest
	pf      *runtimeapi.PortForwardRequest
}

// New listens; Serve serves.
func New(cfg Config, rt Runtime) (*Server, error) {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.TokenTTL == 0 {
		cfg.TokenTTL = time.Minute
	}
	if cfg.StreamCreationTimeout == 0 {
		cfg.StreamCreationTimeout = 30 * time.Second
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("streaming server: %w", err)
	}
	s := &Server{cfg: cfg, rt: rt, ln: ln, base: "http://" + ln.Addr().String(), tokens: map[string]pending{}, conns: map[httpstream.Connection]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/exec/{token}", s.serveExec)
	mux.HandleFunc("/attach/{token}", s.serveAttach)
	mux.HandleFunc("/portforward/{token}", s.servePortForward)
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 30 * time.Second,
		ErrorLog: slog.NewLogLogger(slog.Default().Handler(), slog.LevelDebug)}
	return s, nil
}

// Addr is the listening address (host:port).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve serves until ctx ends; sessions in progress end with it.
func (s *Server) Serve(ctx context.Context) error {
	go func() {
		<-ctx.Done()
		s.http.Close()
		s.mu.Lock()
		s.closed = true
		conns := s.conns
		s.conns = nil
		s.mu.Unlock()
		for c := range conns {
			c.Close()
		}
	}()
	if err := s.http.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("streaming server: %w", err)
	}
	return nil
}

// Close stops listening (for a server that is never served).
func (s *Server) Close() error { return s.http.Close() }

// track registers a session's connection until it ends; false when the
// server is shutting down (the caller closes it).
func (s *Server) track(c httpstream.Connection) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = true
	go func() {
		<-c.CloseChan()
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.conns, c)
	}()
	return true
}

// GetExec validates an Exec request and returns its URL.
func (s *Server) GetExec(req *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	if req.GetContainerId() == "" {
		return nil, status.Error(codes.InvalidArgument, "exec: missing container id")
	}
	if len(req.GetCmd()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "exec: missing command")
	}
	if err := validStreams(req.GetStdin(), req.GetStdout(), req.GetStderr(), req.GetTty()); err != nil {
		return nil, err
	}
	u, err := s.issue("exec", pending{exec: req})
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ExecResponse{Url: u}, nil
}

// GetAttach validates an Attach request and returns its URL.
func (s *Server) GetAttach(req *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	if req.GetContainerId() == "" {
		return nil, status.Error(codes.InvalidArgument, "attach: missing container id")
	}
	if err := validStreams(req.GetStdin(), req.GetStdout(), req.GetStderr(), req.GetTty()); err != nil {
		return nil, err
	}
	u, err := s.issue("attach", pending{attach: req})
	if err != nil {
		return nil, err
	}
	return &runtimeapi.AttachResponse{Url: u}, nil
}

// GetPortForward validates a PortForward request and returns its URL.
func (s *Server) GetPortForward(req *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	if req.GetPodSandboxId() == "" {
		return nil, status.Error(codes.InvalidArgument, "portforward: missing sandbox id")
	}
	u, err := s.issue("portforward", pending{pf: req})
	if err != nil {
		return nil, err
	}
	return &runtimeapi.PortForwardResponse{Url: u}, nil
}

// validStreams applies upstream's rules: at least one stream, and stderr
// and tty exclude each other (a terminal has one output).
func validStreams(stdin, stdout, stderr, tty bool) error {
	if !stdin && !stdout && !stderr {
		return status.Error(codes.InvalidArgument, "one of stdin, stdout, or stderr must be set")
	}
	if tty && stderr {
		return status.Error(codes.InvalidArgument, "tty and stderr cannot both be true")
	}
	return nil
}

// maxPending bounds the tokens held, as upstream's cache does, so that a
// caller in a loop cannot grow the map without end.
const maxPending = 1000

func (s *Server) issue(kind string, p pending) (string, error) {
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	tok := base64.RawURLEncoding.EncodeToString(b)
	now := time.Now()
	p.expires = now.Add(s.cfg.TokenTTL)
	s.mu.Lock()
	defer s.mu.Unlock()
	for t, q := range s.tokens {
		if now.After(q.expires) {
			delete(s.tokens, t)
		}
	}
	if len(s.tokens) >= maxPending {
		return "", status.Error(codes.ResourceExhausted, "too many pending streaming requests")
	}
	s.tokens[tok] = p
	return s.base + "/" + kind + "/" + url.PathEscape(tok), nil
}

// take consumes a token: each URL serves one session.
func (s *Server) take(tok string) (pending, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.tokens[tok]
	delete(s.tokens, tok)
	if !ok || time.Now().After(p.expires) {
		return pending{}, false
	}
	return p, true
}

func (s *Server) serveExec(w http.ResponseWriter, r *http.Request) {
	p, ok := s.take(r.PathValue("token"))
	if !ok || p.exec == nil {
		http.Error(w, "streaming request not found or expired", http.StatusNotFound)
		return
	}
	req := p.exec
	s.serveRemoteCommand(w, r, opts{stdin: req.GetStdin(), stdout: req.GetStdout(), stderr: req.GetStderr(), tty: req.GetTty()},
		func(ctx context.Context, st Streams) error {
			return s.rt.Exec(ctx, req.GetContainerId(), req.GetCmd(), st)
		})
}

func (s *Server) serveAttach(w http.ResponseWriter, r *http.Request) {
	p, ok := s.take(r.PathValue("token"))
	if !ok || p.attach == nil {
		http.Error(w, "streaming request not found or expired", http.StatusNotFound)
		return
	}
	req := p.attach
	s.serveRemoteCommand(w, r, opts{stdin: req.GetStdin(), stdout: req.GetStdout(), stderr: req.GetStderr(), tty: req.GetTty()},
		func(ctx context.Context, st Streams) error { return s.rt.Attach(ctx, req.GetContainerId(), st) })
}

func (s *Server) servePortForward(w http.ResponseWriter, r *http.Request) {
	p, ok := s.take(r.PathValue("token"))
	if !ok || p.pf == nil {
		http.Error(w, "streaming request not found or expired", http.StatusNotFound)
		return
	}
	s.portForward(w, r, p.pf)
}
