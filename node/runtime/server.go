// Package runtime owns Navarch's built-in container runtime: a CRI
// RuntimeService (k8s.io/cri-api runtime/v1) served on a unix socket, which
// runs containers with runc's command line: by default the OCI runtime built
// into the binary (`navarch runc`, runc's libcontainer: node/runtime/libct),
// so that a node needs nothing installed, or a runc or crun binary
// (Config.Runc; the agent's --oci-runtime). All of its state lives under one
// directory (the agent uses DATA_DIR/runtime): per-sandbox and per-container
// JSON records, pinned namespace files, OCI bundles and runc's own state, so
// that a restarted runtime re-adopts what is running without asking anyone.
//
// Layout under Config.StateDir:
//
//	sandboxes/<id>/sandbox.json   the sandbox record
//	sandboxes/<id>/{net,ipc,uts}  bind-mounted namespace files
//	sandboxes/<id>/shm            the pod's /dev/shm (tmpfs)
//	sandboxes/<id>/{hosts,resolv.conf,hostname}
//	containers/<id>/container.json, bundle/config.json, bundle/rootfs (overlay),
//	containers/<id>/{upper,work}, exit.json (written by the shim)
//	runc/                         runc --root
//
// Exec, Attach and PortForward return URLs of a streaming server
// (node/streaming) on loopback that Serve starts with the CRI socket
// (stream.go): exec runs `runc exec`, attach goes through the container's
// shim (attach.go), port-forward dials inside the pod's network namespace.
package runtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/navarch/navarch/node/streaming"
)

// Version of this runtime as reported by the CRI Version call.
const runtimeVersion = "0.1.0"

// Config is what the runtime needs from its caller.
type Config struct {
	// StateDir holds every record, bundle and namespace file of the runtime.
	StateDir string
	// Runc is the OCI runtime the containers are run with, driven by runc's
	// command line: a path, or a name looked up in PATH ("runc", "crun");
	// "" is the one built into ShimBinary (`ShimBinary runc ...`, on runc's
	// libcontainer: node/runtime/libct), so a node needs none installed.
	Runc string
	// ShimBinary is re-executed as `ShimBinary runtime-shim ...` for each
	// container (and for a pod's PID namespace holder); "" is os.Executable().
	ShimBinary string
	// Images resolves image references to layers and config.
	Images Images
	// ImageService, when set, is served next to the RuntimeService.
	ImageService runtimeapi.ImageServiceServer
	// CgroupParent is the cgroup (v1 path, the same in every hierarchy) under
	// which containers are placed when the sandbox names none; "" is /navarch.
	CgroupParent string
	// PidsLimit caps each container's process count (pids.max) unless its
	// resources say otherwise (unified "pids.max"); 0 is no limit.
	PidsLimit int64
	// NetworkSetup attaches a new sandbox's network namespace to the pod
	// network and returns the pod's IP; nil leaves the pod with loopback only.
	NetworkSetup func(ctx context.Context, sandboxID, netnsPath string, config *runtimeapi.PodSandboxConfig) (ip string, err error)
	// NetworkTeardown undoes NetworkSetup; it must tolerate being called twice.
	NetworkTeardown func(ctx context.Context, sandboxID, netnsPath string, config *runtimeapi.PodSandboxConfig) error
	// NetworkStatus, when set, reports whether the pod network is ready.
	NetworkStatus func() error
	// StreamAddress is where the streaming server behind Exec, Attach and
	// PortForward listens (node/streaming); "" is 127.0.0.1 on a free port.
	StreamAddress string
}

// Server implements runtimeapi.RuntimeServiceServer.
type Server struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	cfg Config

	// mu guards the maps and every record file write; long waits (stopping a
	// container, running runc) happen outside it.
	mu         sync.Mutex
	sandboxes  map[string]*sandbox
	containers map[string]*container
	// hostCaps are the capabilities a privileged container gets.
	hostCaps []string
	// stream serves the streaming URLs; Serve starts it.
	stream *streaming.Server
	// runcArgv starts every runc command: the binary, and "runc" when it
	// is the built-in one.
	runcArgv []string
}

// New loads the records under cfg.StateDir, re-adopting the sandboxes and
// containers a previous runtime process left.
func New(cfg Config) (*Server, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("runtime: no state directory")
	}
	if cfg.ShimBinary == "" {
		p, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("runtime: %w", err)
		}
		cfg.ShimBinary = p
	}
	runcArgv := []string{cfg.ShimBinary, "runc"}
	if cfg.Runc != "" {
		p, err := exec.LookPath(cfg.Runc)
		if err != nil {
			return nil, fmt.Errorf("runtime: OCI runtime: %w", err)
		}
		cfg.Runc, runcArgv = p, []string{p}
	}
	if cfg.CgroupParent == "" {
		cfg.CgroupParent = "/navarch"
	}
	for _, d := range []string{"sandboxes", "containers", "runc"} {
		if err := os.MkdirAll(filepath.Join(cfg.StateDir, d), 0o711); err != nil {
			return nil, fmt.Errorf("runtime: %w", err)
		}
	}
	s := &Server{cfg: cfg, sandboxes: map[string]*sandbox{}, containers: map[string]*container{}, hostCaps: hostCapabilities(), runcArgv: runcArgv}
	if err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Server) load() error {
	dirs, _ := os.ReadDir(filepath.Join(s.cfg.StateDir, "sandboxes"))
	for _, d := range dirs {
		sb := &sandbox{}
		if err := readJSON(filepath.Join(s.sandboxDir(d.Name()), "sandbox.json"), sb); err != nil {
			// A crash before the first record write: nothing refers to it.
			slog.Warn("runtime removes sandbox without a record", "id", d.Name(), "err", err)
			dir := s.sandboxDir(d.Name())
			s.teardownSandbox(context.Background(), &sandbox{ID: d.Name(), NetNS: filepath.Join(dir, "netns"),
				UTSNS: filepath.Join(dir, "utsns"), IPCNS: filepath.Join(dir, "ipcns"), Shm: filepath.Join(dir, "shm")})
			_ = os.RemoveAll(dir)
			continue
		}
		// After a reboot the namespace bind mounts are gone: such a sandbox
		// can no longer run containers, and says so.
		if sb.Ready && sb.NetNS != "" && !isNamespaceFile(sb.NetNS) {
			sb.Ready = false
		}
		s.sandboxes[sb.ID] = sb
	}
	dirs, _ = os.ReadDir(filepath.Join(s.cfg.StateDir, "containers"))
	for _, d := range dirs {
		c := &container{}
		if err := readJSON(filepath.Join(s.containerDir(d.Name()), "container.json"), c); err != nil {
			slog.Warn("runtime removes container without a record", "id", d.Name(), "err", err)
			s.cleanupContainer(d.Name())
			continue
		}
		s.containers[c.ID] = c
	}
	return nil
}

// Serve answers CRI calls on the unix socket at path until ctx ends.
func (s *Server) Serve(ctx context.Context, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("runtime socket %s: %w", path, err)
	}
	_ = os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("runtime socket %s: %w", path, err)
	}
	if err := s.startStreaming(ctx); err != nil {
		l.Close()
		return err
	}
	g := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(g, s)
	if s.cfg.ImageService != nil {
		runtimeapi.RegisterImageServiceServer(g, s.cfg.ImageService)
	}
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			g.Stop()
		case <-done:
		}
	}()
	err = g.Serve(l)
	close(done)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// Version answers the CRI version handshake.
func (s *Server) Version(context.Context, *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{Version: "0.1.0", RuntimeName: "navarch", RuntimeVersion: runtimeVersion, RuntimeApiVersion: "v1"}, nil
}

// Status reports RuntimeReady (the OCI runtime's binary present) and NetworkReady.
func (s *Server) Status(context.Context, *runtimeapi.StatusRequest) (*runtimeapi.StatusResponse, error) {
	rt := &runtimeapi.RuntimeCondition{Type: runtimeapi.RuntimeReady, Status: true}
	if _, err := os.Stat(s.runcArgv[0]); err != nil {
		rt.Status, rt.Reason, rt.Message = false, "RuncMissing", err.Error()
	}
	nw := &runtimeapi.RuntimeCondition{Type: runtimeapi.NetworkReady, Status: true}
	if s.cfg.NetworkStatus != nil {
		if err := s.cfg.NetworkStatus(); err != nil {
			nw.Status, nw.Reason, nw.Message = false, "NetworkPluginNotReady", err.Error()
		}
	}
	return &runtimeapi.StatusResponse{Status: &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{rt, nw}}}, nil
}

func (s *Server) sandboxDir(id string) string {
	return filepath.Join(s.cfg.StateDir, "sandboxes", id)
}

func (s *Server) containerDir(id string) string {
	return filepath.Join(s.cfg.StateDir, "containers", id)
}

func (s *Server) runcRoot() string { return filepath.Join(s.cfg.StateDir, "runc") }

func newID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// writeJSON replaces path atomically, so a crash never leaves half a record.
func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func notFound(kind, id string) error {
	return status.Errorf(codes.NotFound, "%s %q not found", kind, id)
}

// matchLabels reports whether labels contain every pair of selector.
func matchLabels(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// isNamespaceFile reports whether path is a mounted namespace (nsfs).
func isNamespaceFile(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.NSFS_MAGIC
}
