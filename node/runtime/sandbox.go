package runtime

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// A sandbox is a pod's set of shared namespaces. There is no infra ("pause")
// container: the network, IPC and UTS namespaces are pinned by bind-mounting
// them onto files in the sandbox directory (as CRI-O's pinns does), and the
// containers join those files. That needs no image, costs no runc call, and
// leaves no process whose death would take the pod's network with it; the
// namespaces live exactly as long as their bind mounts. Only a shared PID
// namespace needs a live process (a PID namespace dies with its init), so
// with shareProcessNamespace a tiny `runtime-shim pause` child holds it.
type sandbox struct {
	ID        string `json:"id"`
	Config    []byte `json:"config"` // runtimeapi.PodSandboxConfig, protobuf
	CreatedAt int64  `json:"createdAt"`
	Ready     bool   `json:"ready"`
	IP        string `json:"ip,omitempty"`
	// NetNS, IPCNS and UTSNS are the pinned namespace files; "" means the host's.
	NetNS string `json:"netns,omitempty"`
	IPCNS string `json:"ipcns,omitempty"`
	UTSNS string `json:"utsns,omitempty"`
	// Shm is the pod's /dev/shm tmpfs ("" with hostIPC).
	Shm string `json:"shm,omitempty"`
	// PausePID holds the shared PID namespace (0 without shareProcessNamespace).
	PausePID int `json:"pausePid,omitempty"`
	// NetworkUp records that NetworkSetup succeeded and teardown is owed.
	NetworkUp      bool   `json:"networkUp,omitempty"`
	RuntimeHandler string `json:"runtimeHandler,omitempty"`
}

func (sb *sandbox) config() *runtimeapi.PodSandboxConfig {
	c := &runtimeapi.PodSandboxConfig{}
	_ = proto.Unmarshal(sb.Config, c)
	return c
}

func nsOptions(c *runtimeapi.PodSandboxConfig) *runtimeapi.NamespaceOption {
	if o := c.GetLinux().GetSecurityContext().GetNamespaceOptions(); o != nil {
		return o
	}
	// The zero NamespaceMode is POD; without options a pod still gets its
	// own PID namespace per container, as upstream's default.
	return &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER}
}

// RunPodSandbox pins the pod's namespaces, writes its /etc files and asks
// NetworkSetup for an IP.
func (s *Server) RunPodSandbox(ctx context.Context, req *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	cfg := req.GetConfig()
	if cfg.GetMetadata() == nil {
		return nil, status.Error(codes.InvalidArgument, "sandbox config has no metadata")
	}
	raw, err := proto.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	id := newID()
	dir := s.sandboxDir(id)
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return nil, err
	}
	// The sandbox joins the map only once set up, so no other call sees it
	// half-made; a crash half-way leaves its record for the next start.
	sb := &sandbox{ID: id, Config: raw, CreatedAt: time.Now().UnixNano(), RuntimeHandler: req.GetRuntimeHandler()}
	if err := s.setupSandbox(ctx, sb, cfg, dir); err != nil {
		s.teardownSandbox(ctx, sb)
		_ = os.RemoveAll(dir)
		m := cfg.GetMetadata()
		return nil, fmt.Errorf("sandbox %s/%s: %w", m.GetNamespace(), m.GetName(), err)
	}
	s.mu.Lock()
	s.sandboxes[id] = sb
	s.mu.Unlock()
	slog.Debug("runtime sandbox ready", "id", id, "pod", cfg.GetMetadata().GetName(), "ip", sb.IP)
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: id}, nil
}

func (s *Server) setupSandbox(ctx context.Context, sb *sandbox, cfg *runtimeapi.PodSandboxConfig, dir string) error {
	ns := nsOptions(cfg)
	hostNet := ns.GetNetwork() == runtimeapi.NamespaceMode_NODE
	hostIPC := ns.GetIpc() == runtimeapi.NamespaceMode_NODE
	// Record first: whatever gets made below is then found by teardown, even
	// after a crash half-way.
	if !hostNet {
		sb.NetNS, sb.UTSNS = filepath.Join(dir, "netns"), filepath.Join(dir, "utsns")
	}
	if !hostIPC {
		sb.IPCNS, sb.Shm = filepath.Join(dir, "ipcns"), filepath.Join(dir, "shm")
	}
	if err := s.saveSandbox(sb); err != nil {
		return err
	}
	hostname := cfg.GetHostname()
	if hostname == "" {
		hostname, _ = os.Hostname()
	}
	if err := pinNamespaces(sb, hostname); err != nil {
		return err
	}
	if sb.Shm != "" {
		if err := os.MkdirAll(sb.Shm, 0o755); err != nil {
			return err
		}
		if err := unix.Mount("shm", sb.Shm, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=1777,size=65536k"); err != nil {
			return fmt.Errorf("mount shm: %w", err)
		}
	}
	if ns.GetPid() == runtimeapi.NamespaceMode_POD {
		pid, err := s.startPause(sb.ID)
		if err != nil {
			return err
		}
		sb.PausePID = pid
		joinCgroup(pid, cfg.GetLinux().GetCgroupParent())
	}
	if err := writeEtcFiles(dir, hostname, "", cfg.GetDnsConfig()); err != nil {
		return err
	}
	if s.cfg.NetworkSetup != nil && !hostNet {
		sb.NetworkUp = true
		if err := s.saveSandbox(sb); err != nil {
			return err
		}
		ip, err := s.cfg.NetworkSetup(ctx, sb.ID, sb.NetNS, cfg)
		if err != nil {
			return fmt.Errorf("network setup: %w", err)
		}
		sb.IP = ip
		if err := writeEtcFiles(dir, hostname, ip, cfg.GetDnsConfig()); err != nil {
			return err
		}
	}
	sb.Ready = true
	return s.saveSandbox(sb)
}

func (s *Server) saveSandbox(sb *sandbox) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return writeJSON(filepath.Join(s.sandboxDir(sb.ID), "sandbox.json"), sb)
}

// pinNamespaces creates the sandbox's namespaces on a locked OS thread,
// bind-mounts them onto their files, and returns the thread to the host's
// namespaces. Should that return fail the thread stays locked, so Go ends it
// (or, for the main thread, parks it) instead of running other code in the
// pod's namespaces.
func pinNamespaces(sb *sandbox, hostname string) error {
	pins := []struct {
		ns, file string
		flag     int
	}{{"net", sb.NetNS, unix.CLONE_NEWNET}, {"uts", sb.UTSNS, unix.CLONE_NEWUTS}, {"ipc", sb.IPCNS, unix.CLONE_NEWIPC}}
	flags := 0
	for _, p := range pins {
		if p.file != "" {
			flags |= p.flag
		}
	}
	if flags == 0 {
		return nil
	}
	errc := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		self := fmt.Sprintf("/proc/%d/task/%d/ns/", os.Getpid(), unix.Gettid())
		var orig []*os.File
		for _, p := range pins {
			if p.file == "" {
				continue
			}
			f, err := os.Open(self + p.ns)
			if err != nil {
				errc <- err
				goruntime.UnlockOSThread()
				return
			}
			defer f.Close()
			orig = append(orig, f)
		}
		errc <- func() error {
			if err := unix.Unshare(flags); err != nil {
				return fmt.Errorf("unshare: %w", err)
			}
			if sb.UTSNS != "" {
				if err := unix.Sethostname([]byte(hostname)); err != nil {
					return fmt.Errorf("sethostname: %w", err)
				}
			}
			if sb.NetNS != "" {
				if err := loopbackUp(); err != nil {
					return err
				}
			}
			for _, p := range pins {
				if p.file == "" {
					continue
				}
				if err := os.WriteFile(p.file, nil, 0o444); err != nil {
					return err
				}
				if err := unix.Mount(self+p.ns, p.file, "", unix.MS_BIND, ""); err != nil {
					return fmt.Errorf("pin %s namespace: %w", p.ns, err)
				}
			}
			return nil
		}()
		for _, f := range orig {
			if err := unix.Setns(int(f.Fd()), 0); err != nil {
				slog.Error("runtime cannot return a thread to the host namespaces", "err", err)
				return
			}
		}
		goruntime.UnlockOSThread()
	}()
	return <-errc
}

// loopbackUp brings up lo in the calling thread's network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback up: %w", err)
	}
	return nil
}

// startPause starts the holder of a shared PID namespace. It runs in its own
// session so that it outlives a restart of the runtime.
func (s *Server) startPause(sandboxID string) (int, error) {
	cmd := exec.Command(s.cfg.ShimBinary, "runtime-shim", "pause", sandboxID)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Cloneflags: unix.CLONE_NEWPID}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("pid namespace holder: %w", err)
	}
	go func() { _ = cmd.Wait() }()
	return cmd.Process.Pid, nil
}

// joinCgroup moves pid into the pod's cgroup (the sandbox's CgroupParent)
// in each hierarchy that has it, so that the PID namespace holder counts
// against the pod as upstream's pause container does. The runtime makes no
// such directory: the kubelet does, and removes it with the pod.
func joinCgroup(pid int, parent string) {
	if parent == "" {
		return
	}
	hs, _ := os.ReadDir("/sys/fs/cgroup")
	for _, h := range hs {
		procs := filepath.Join("/sys/fs/cgroup", h.Name(), parent, "cgroup.procs")
		if _, err := os.Stat(procs); err != nil {
			continue
		}
		if err := os.WriteFile(procs, []byte(strconv.Itoa(pid)), 0o644); err != nil {
			slog.Warn("runtime cannot move pid namespace holder into the pod cgroup", "cgroup", procs, "err", err)
		}
	}
}

// processAlive reports whether pid runs and its command line mentions tag,
// which guards against a recycled pid after a restart.
func processAlive(pid int, tag string) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(string(b), tag)
}

// writeEtcFiles writes the sandbox's hostname, hosts and resolv.conf, which
// every container of the pod bind-mounts.
func writeEtcFiles(dir, hostname, ip string, dns *runtimeapi.DNSConfig) error {
	hosts := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
	if ip != "" {
		hosts += ip + "\t" + hostname + "\n"
	}
	var resolv []byte
	if dns == nil || len(dns.GetServers())+len(dns.GetSearches())+len(dns.GetOptions()) == 0 {
		// Without DNS settings the pod gets the node's resolver, as upstream's
		// runtimes do.
		resolv, _ = os.ReadFile("/etc/resolv.conf")
	} else {
		var b strings.Builder
		if len(dns.GetSearches()) > 0 {
			fmt.Fprintf(&b, "search %s\n", strings.Join(dns.GetSearches(), " "))
		}
		for _, ns := range dns.GetServers() {
			fmt.Fprintf(&b, "nameserver %s\n", ns)
		}
		if len(dns.GetOptions()) > 0 {
			fmt.Fprintf(&b, "options %s\n", strings.Join(dns.GetOptions(), " "))
		}
		resolv = []byte(b.String())
	}
	for name, content := range map[string][]byte{"hostname": []byte(hostname + "\n"), "hosts": []byte(hosts), "resolv.conf": resolv} {
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// teardownSandbox releases the network and the namespaces; it is idempotent.
// The fields it changes are written under s.mu, as List reads them.
func (s *Server) teardownSandbox(ctx context.Context, sb *sandbox) {
	s.mu.Lock()
	pause, networkUp := sb.PausePID, sb.NetworkUp
	s.mu.Unlock()
	if pause != 0 && processAlive(pause, sb.ID) {
		_ = unix.Kill(pause, unix.SIGKILL)
	}
	if networkUp && s.cfg.NetworkTeardown != nil {
		if err := s.cfg.NetworkTeardown(ctx, sb.ID, sb.NetNS, sb.config()); err != nil {
			slog.Warn("runtime network teardown failed", "sandbox", sb.ID, "err", err)
		} else {
			networkUp = false
		}
	} else {
		networkUp = false
	}
	s.mu.Lock()
	sb.PausePID, sb.NetworkUp = 0, networkUp
	s.mu.Unlock()
	for _, f := range []string{sb.NetNS, sb.UTSNS, sb.IPCNS, sb.Shm} {
		if f == "" {
			continue
		}
		if err := unix.Unmount(f, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
			slog.Warn("runtime unmount failed", "path", f, "err", err)
		}
		_ = os.Remove(f)
	}
}

// StopPodSandbox kills the pod's containers and releases its network and
// namespaces. The record stays until RemovePodSandbox.
func (s *Server) StopPodSandbox(ctx context.Context, req *runtimeapi.StopPodSandboxRequest) (*runtimeapi.StopPodSandboxResponse, error) {
	s.mu.Lock()
	sb := s.sandboxes[req.GetPodSandboxId()]
	s.mu.Unlock()
	if sb == nil {
		// Upstream runtimes answer a stop of an unknown sandbox with success.
		return &runtimeapi.StopPodSandboxResponse{}, nil
	}
	for _, c := range s.sandboxContainers(sb.ID) {
		if err := s.stopContainer(c, 0); err != nil {
			return nil, fmt.Errorf("sandbox %s: %w", sb.ID, err)
		}
	}
	s.teardownSandbox(ctx, sb)
	s.mu.Lock()
	sb.Ready = false
	s.mu.Unlock()
	if err := s.saveSandbox(sb); err != nil {
		return nil, fmt.Errorf("sandbox %s: %w", sb.ID, err)
	}
	return &runtimeapi.StopPodSandboxResponse{}, nil
}

// RemovePodSandbox stops the sandbox if needed and removes its containers and
// every file it had.
func (s *Server) RemovePodSandbox(ctx context.Context, req *runtimeapi.RemovePodSandboxRequest) (*runtimeapi.RemovePodSandboxResponse, error) {
	id := req.GetPodSandboxId()
	s.mu.Lock()
	sb := s.sandboxes[id]
	s.mu.Unlock()
	if sb == nil {
		return &runtimeapi.RemovePodSandboxResponse{}, nil
	}
	for _, c := range s.sandboxContainers(id) {
		if err := s.removeContainer(c); err != nil {
			return nil, fmt.Errorf("sandbox %s: %w", id, err)
		}
	}
	s.teardownSandbox(ctx, sb)
	if err := os.RemoveAll(s.sandboxDir(id)); err != nil {
		return nil, fmt.Errorf("sandbox %s: %w", id, err)
	}
	s.mu.Lock()
	delete(s.sandboxes, id)
	s.mu.Unlock()
	return &runtimeapi.RemovePodSandboxResponse{}, nil
}

func (s *Server) sandboxContainers(id string) []*container {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*container
	for _, c := range s.containers {
		if c.SandboxID == id {
			out = append(out, c)
		}
	}
	return out
}

func (sb *sandbox) state() runtimeapi.PodSandboxState {
	if sb.Ready {
		return runtimeapi.PodSandboxState_SANDBOX_READY
	}
	return runtimeapi.PodSandboxState_SANDBOX_NOTREADY
}

// PodSandboxStatus reports the sandbox's state, IP and namespace modes.
func (s *Server) PodSandboxStatus(ctx context.Context, req *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	s.mu.Lock()
	sb := s.sandboxes[req.GetPodSandboxId()]
	s.mu.Unlock()
	if sb == nil {
		return nil, notFound("sandbox", req.GetPodSandboxId())
	}
	cfg := sb.config()
	st := &runtimeapi.PodSandboxStatus{
		Id: sb.ID, Metadata: cfg.GetMetadata(), State: sb.state(), CreatedAt: sb.CreatedAt,
		Network:        &runtimeapi.PodSandboxNetworkStatus{Ip: sb.IP},
		Linux:          &runtimeapi.LinuxPodSandboxStatus{Namespaces: &runtimeapi.Namespace{Options: nsOptions(cfg)}},
		Labels:         cfg.GetLabels(),
		Annotations:    cfg.GetAnnotations(),
		RuntimeHandler: sb.RuntimeHandler,
	}
	resp := &runtimeapi.PodSandboxStatusResponse{Status: st}
	if req.GetVerbose() {
		resp.Info = map[string]string{"netns": sb.NetNS}
	}
	return resp, nil
}

// ListPodSandbox lists sandboxes matching the filter.
func (s *Server) ListPodSandbox(ctx context.Context, req *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	f := req.GetFilter()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*runtimeapi.PodSandbox
	for _, sb := range s.sandboxes {
		cfg := sb.config()
		if f.GetId() != "" && f.GetId() != sb.ID {
			continue
		}
		if f.GetState() != nil && f.GetState().GetState() != sb.state() {
			continue
		}
		if !matchLabels(f.GetLabelSelector(), cfg.GetLabels()) {
			continue
		}
		out = append(out, &runtimeapi.PodSandbox{
			Id: sb.ID, Metadata: cfg.GetMetadata(), State: sb.state(), CreatedAt: sb.CreatedAt,
			Labels: cfg.GetLabels(), Annotations: cfg.GetAnnotations(), RuntimeHandler: sb.RuntimeHandler,
		})
	}
	return &runtimeapi.ListPodSandboxResponse{Items: out}, nil
}
