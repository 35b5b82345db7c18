package runtime

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/navarch/navarch/node/runtime/libct"
)

var testImages dirImages

func TestMain(m *testing.M) {
	// The runtime re-executes its binary as the shim; in tests that binary
	// is this test program.
	if len(os.Args) > 1 && os.Args[1] == "runtime-shim" {
		os.Exit(ShimMain(os.Args[2:]))
	}
	// It is the built-in OCI runtime too, and that one's container init.
	if libct.IsInit(os.Args) {
		libct.Init()
	}
	if len(os.Args) > 1 && os.Args[1] == "runc" {
		os.Exit(libct.Main(os.Args[2:]))
	}
	dir, err := os.MkdirTemp("", "navarch-runtime-image-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if _, err := os.Stat("/bin/busybox"); err == nil {
		if err := makeBusyboxRootfs(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	testImages = dirImages{"busybox": dir}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type testEnv struct {
	t            *testing.T
	state        string
	logDir       string
	cgroupParent string
	rt           runtimeapi.RuntimeServiceClient
	stopServer   func()
	configure    func(*Config)
}

func requireRuntime(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("runtime tests need root (namespaces, mounts, cgroups)")
	}
	// The built-in OCI runtime needs no binary; NAVARCH_OCI_RUNTIME names one.
	if rt := os.Getenv("NAVARCH_OCI_RUNTIME"); rt != "" {
		if _, err := exec.LookPath(rt); err != nil {
			tb.Skipf("NAVARCH_OCI_RUNTIME=%s is not in PATH", rt)
		}
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		tb.Skip("runtime tests need a static /bin/busybox (Debian's busybox-static)")
	}
}

// newEnv starts a runtime server over a fresh state dir, reached through a
// real gRPC client on its unix socket. Cleanup removes every sandbox left.
func newEnv(t *testing.T) *testEnv { return newEnvWith(t, nil) }

// newEnvWith is newEnv with configure applied to the server's Config.
func newEnvWith(t *testing.T, configure func(*Config)) *testEnv {
	requireRuntime(t)
	base := t.TempDir()
	e := &testEnv{t: t, state: filepath.Join(base, "state"), logDir: filepath.Join(base, "logs"),
		cgroupParent: "/navarch-test-" + newID()[:8], configure: configure}
	e.start()
	t.Cleanup(func() {
		ctx := context.Background()
		if resp, err := e.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}); err == nil {
			for _, sb := range resp.Items {
				if _, err := e.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
					t.Errorf("cleanup: remove sandbox %s: %v", sb.Id, err)
				}
			}
		}
		e.stopServer()
		for _, h := range cgroupHierarchies() {
			_ = os.Remove(filepath.Join(h, e.cgroupParent))
		}
	})
	return e
}

// start runs a new Server over e.state, as a restarted agent would.
func (e *testEnv) start() {
	t := e.t
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// NAVARCH_RUNTIME_SHIM names a built navarch binary to use as the shim
	// instead of this test program, to try `navarch runtime-shim` itself.
	if bin := os.Getenv("NAVARCH_RUNTIME_SHIM"); bin != "" {
		self = bin
	}
	// NAVARCH_OCI_RUNTIME picks an OCI runtime binary (runc, crun) instead
	// of the built-in one.
	cfg := Config{StateDir: e.state, ShimBinary: self, Images: testImages, CgroupParent: e.cgroupParent, Runc: os.Getenv("NAVARCH_OCI_RUNTIME")}
	if e.configure != nil {
		e.configure(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(e.state, "cri.sock")
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, sock) }()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	e.rt = runtimeapi.NewRuntimeServiceClient(conn)
	var once sync.Once
	e.stopServer = func() {
		once.Do(func() {
			conn.Close()
			cancel()
			if err := <-served; err != nil {
				t.Errorf("serve: %v", err)
			}
		})
	}
	eventually(t, 5*time.Second, func() error {
		_, err := e.rt.Version(context.Background(), &runtimeapi.VersionRequest{})
		return err
	})
}

func eventually(t testing.TB, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", d, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func (e *testEnv) podConfig(name string) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "default", Uid: newID()[:16]},
		Hostname:     name,
		LogDirectory: filepath.Join(e.logDir, name),
		Labels:       map[string]string{"app": name},
		DnsConfig:    &runtimeapi.DNSConfig{Servers: []string{"10.96.0.10"}, Searches: []string{"default.svc.cluster.local"}, Options: []string{"ndots:5"}},
	}
}

func (e *testEnv) runPod(cfg *runtimeapi.PodSandboxConfig) string {
	e.t.Helper()
	resp, err := e.rt.RunPodSandbox(context.Background(), &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		e.t.Fatalf("run sandbox: %v", err)
	}
	return resp.PodSandboxId
}

func ctrConfig(name string, cmd ...string) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: name},
		Image:    &runtimeapi.ImageSpec{Image: "busybox"},
		Command:  cmd,
		LogPath:  name + "/0.log",
		Labels:   map[string]string{"container": name},
	}
}

// run creates and starts a container.
func (e *testEnv) run(sbID string, sbCfg *runtimeapi.PodSandboxConfig, cfg *runtimeapi.ContainerConfig) string {
	e.t.Helper()
	ctx := context.Background()
	resp, err := e.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sbID, Config: cfg, SandboxConfig: sbCfg})
	if err != nil {
		e.t.Fatalf("create %s: %v", cfg.Metadata.Name, err)
	}
	if _, err := e.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: resp.ContainerId}); err != nil {
		e.t.Fatalf("start %s: %v", cfg.Metadata.Name, err)
	}
	return resp.ContainerId
}

func (e *testEnv) status(id string) *runtimeapi.ContainerStatus {
	e.t.Helper()
	resp, err := e.rt.ContainerStatus(context.Background(), &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		e.t.Fatalf("status %s: %v", id, err)
	}
	return resp.Status
}

func (e *testEnv) waitExited(id string) *runtimeapi.ContainerStatus {
	e.t.Helper()
	var st *runtimeapi.ContainerStatus
	eventually(e.t, 20*time.Second, func() error {
		st = e.status(id)
		if st.State != runtimeapi.ContainerState_CONTAINER_EXITED {
			return fmt.Errorf("container %s is %s", st.Metadata.Name, st.State)
		}
		return nil
	})
	return st
}

func (e *testEnv) exec(id string, timeout int64, cmd ...string) (*runtimeapi.ExecSyncResponse, error) {
	return e.rt.ExecSync(context.Background(), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: cmd, Timeout: timeout})
}

func (e *testEnv) mustExec(id string, cmd ...string) string {
	e.t.Helper()
	resp, err := e.exec(id, 10, cmd...)
	if err != nil {
		e.t.Fatalf("exec %q: %v", cmd, err)
	}
	if resp.ExitCode != 0 {
		e.t.Fatalf("exec %q: exit %d: %s%s", cmd, resp.ExitCode, resp.Stdout, resp.Stderr)
	}
	return strings.TrimSpace(string(resp.Stdout))
}

func TestPodContainersShareNamespaces(t *testing.T) {
	e := newEnv(t)
	cfg := e.podConfig("shared")
	sb := e.runPod(cfg)
	server := e.run(sb, cfg, ctrConfig("server", "httpd", "-f", "-p", "8080", "-h", "/www"))
	client := e.run(sb, cfg, ctrConfig("client", "sleep", "300"))

	for _, id := range []string{server, client} {
		if got := e.mustExec(id, "hostname"); got != "shared" {
			t.Errorf("hostname in container = %q, want the pod's hostname %q", got, "shared")
		}
	}
	for _, ns := range []string{"net", "ipc", "uts"} {
		a := e.mustExec(server, "readlink", "/proc/self/ns/"+ns)
		b := e.mustExec(client, "readlink", "/proc/self/ns/"+ns)
		if a != b {
			t.Errorf("%s namespace differs between the pod's containers: %s vs %s", ns, a, b)
		}
	}
	if a, b := e.mustExec(server, "readlink", "/proc/self/ns/pid"), e.mustExec(client, "readlink", "/proc/self/ns/pid"); a == b {
		t.Errorf("pid namespace is shared without shareProcessNamespace: %s", a)
	}
	host, _ := os.Readlink("/proc/self/ns/net")
	if got := e.mustExec(client, "readlink", "/proc/self/ns/net"); got == host {
		t.Errorf("pod runs in the host's network namespace %s", host)
	}
	// One /dev/shm for the pod, as its IPC namespace is one.
	e.mustExec(server, "sh", "-c", "echo seg > /dev/shm/x")
	if got := e.mustExec(client, "cat", "/dev/shm/x"); got != "seg" {
		t.Errorf("/dev/shm not shared: %q", got)
	}
	// localhost is the pod's: the client reaches the server's port.
	eventually(t, 10*time.Second, func() error {
		resp, err := e.exec(client, 5, "wget", "-q", "-O", "-", "http://127.0.0.1:8080/index.html")
		if err != nil {
			return err
		}
		if resp.ExitCode != 0 || !strings.Contains(string(resp.Stdout), "hello from the pod") {
			return fmt.Errorf("wget exit %d: %s%s", resp.ExitCode, resp.Stdout, resp.Stderr)
		}
		return nil
	})
	if got := e.mustExec(client, "cat", "/etc/resolv.conf"); !strings.Contains(got, "nameserver 10.96.0.10") || !strings.Contains(got, "search default.svc.cluster.local") || !strings.Contains(got, "options ndots:5") {
		t.Errorf("resolv.conf from DNSConfig: %q", got)
	}
	if got := e.mustExec(client, "cat", "/etc/hostname"); got != "shared" {
		t.Errorf("/etc/hostname = %q", got)
	}
	if got := e.mustExec(client, "cat", "/etc/hosts"); !strings.Contains(got, "localhost") {
		t.Errorf("/etc/hosts = %q", got)
	}

	list, err := e.rt.ListContainers(context.Background(), &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{
		PodSandboxId: sb, State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING},
		LabelSelector: map[string]string{"container": "client"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Containers) != 1 || list.Containers[0].Id != client {
		t.Errorf("filtered list = %v, want only the client", list.Containers)
	}
	st, err := e.rt.PodSandboxStatus(context.Background(), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: sb})
	if err != nil {
		t.Fatal(err)
	}
	if st.Status.State != runtimeapi.PodSandboxState_SANDBOX_READY || st.Status.Metadata.Name != "shared" || st.Status.Labels["app"] != "shared" {
		t.Errorf("sandbox status = %v", st.Status)
	}
}

func TestNetworkHookAndHostNetwork(t *testing.T) {
	var setups, teardowns []string
	var mu sync.Mutex
	e := newEnvWith(t, func(c *Config) {
		c.NetworkSetup = func(ctx context.Context, id, netns string, cfg *runtimeapi.PodSandboxConfig) (string, error) {
			if !isNamespaceFile(netns) {
				return "", fmt.Errorf("%s is not a network namespace", netns)
			}
			mu.Lock()
			defer mu.Unlock()
			setups = append(setups, id)
			return "10.244.0.7", nil
		}
		c.NetworkTeardown = func(ctx context.Context, id, netns string, cfg *runtimeapi.PodSandboxConfig) error {
			mu.Lock()
			defer mu.Unlock()
			teardowns = append(teardowns, id)
			return nil
		}
	})
	ctx := context.Background()
	cfg := e.podConfig("net")
	sb := e.runPod(cfg)
	st, err := e.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: sb})
	if err != nil {
		t.Fatal(err)
	}
	if st.Status.Network.GetIp() != "10.244.0.7" {
		t.Errorf("sandbox IP = %q, want the hook's 10.244.0.7", st.Status.Network.GetIp())
	}
	id := e.run(sb, cfg, ctrConfig("main", "sleep", "300"))
	if hosts := e.mustExec(id, "cat", "/etc/hosts"); !strings.Contains(hosts, "10.244.0.7\tnet") {
		t.Errorf("/etc/hosts lacks the pod IP: %q", hosts)
	}
	if _, err := e.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if len(setups) != 1 || len(teardowns) != 1 || teardowns[0] != sb {
		t.Errorf("setups %v teardowns %v, want one each for %s", setups, teardowns, sb)
	}
	mu.Unlock()

	// hostNetwork: the host's network and UTS namespaces, no hook call.
	hcfg := e.podConfig("hostnet")
	hcfg.Linux = &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
		NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_CONTAINER}}}
	hsb := e.runPod(hcfg)
	hid := e.run(hsb, hcfg, ctrConfig("main", "sleep", "300"))
	hostNet, _ := os.Readlink("/proc/self/ns/net")
	if got := e.mustExec(hid, "readlink", "/proc/self/ns/net"); got != hostNet {
		t.Errorf("hostNetwork container in %s, host is %s", got, hostNet)
	}
	hostName, _ := os.Hostname()
	if got := e.mustExec(hid, "hostname"); got != hostName {
		t.Errorf("hostNetwork hostname %q, want the node's %q", got, hostName)
	}
	mu.Lock()
	if len(setups) != 1 {
		t.Errorf("network hook called for a hostNetwork pod")
	}
	mu.Unlock()
}

func TestPrivileged(t *testing.T) {
	e := newEnv(t)
	cfg := e.podConfig("priv")
	sb := e.runPod(cfg)
	c := ctrConfig("main", "sh", "-c", "grep CapEff /proc/self/status")
	c.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{Privileged: true}}
	st := e.waitExited(e.run(sb, cfg, c))
	b, _ := os.ReadFile(st.LogPath)
	status, _ := os.ReadFile("/proc/self/status")
	bnd := regexp.MustCompile(`CapBnd:\t([0-9a-f]+)`).FindSubmatch(status)
	if len(bnd) < 2 || !strings.Contains(string(b), "CapEff:\t"+string(bnd[1])) {
		t.Errorf("privileged container: exit %d, log:\n%s", st.ExitCode, b)
	}
	d := ctrConfig("default", "sh", "-c", "grep CapEff /proc/self/status")
	st = e.waitExited(e.run(sb, cfg, d))
	b, _ = os.ReadFile(st.LogPath)
	// containerd's default set: chown dac_override fowner fsetid kill setgid
	// setuid setpcap net_bind_service net_raw sys_chroot mknod audit_write setfcap.
	if !strings.Contains(string(b), "CapEff:\t00000000a80425fb") {
		t.Errorf("default capabilities: %s", b)
	}
}

func TestShareProcessNamespace(t *testing.T) {
	e := newEnv(t)
	cfg := e.podConfig("sharedpid")
	cfg.Linux = &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
		NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD}}}
	sb := e.runPod(cfg)
	pidNS := &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
		NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD}}}
	a, b := ctrConfig("a", "sleep", "301"), ctrConfig("b", "sleep", "302")
	a.Linux, b.Linux = pidNS, pidNS
	ida, idb := e.run(sb, cfg, a), e.run(sb, cfg, b)
	if x, y := e.mustExec(ida, "readlink", "/proc/self/ns/pid"), e.mustExec(idb, "readlink", "/proc/self/ns/pid"); x != y {
		t.Errorf("pid namespaces differ with shareProcessNamespace: %s vs %s", x, y)
	}
	if ps := e.mustExec(ida, "ps"); !strings.Contains(ps, "sleep 302") {
		t.Errorf("container a does not see b's process:\n%s", ps)
	}
	if _, err := e.rt.RemovePodSandbox(context.Background(), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() error {
		if p := processesMentioning([]string{sb, ida, idb}); len(p) != 0 {
			return fmt.Errorf("processes left: %v", p)
		}
		return nil
	})
}

var criLine = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z (stdout|stderr) (F|P) (.*)$`)

func TestLogsExitCodesAndReasons(t *testing.T) {
	e := newEnv(t)
	cfg := e.podConfig("logs")
	sb := e.runPod(cfg)
	failing := e.run(sb, cfg, ctrConfig("failing", "sh", "-c", "echo hello; echo oops >&2; exit 3"))
	ok := e.run(sb, cfg, ctrConfig("ok", "true"))

	st := e.waitExited(failing)
	if st.ExitCode != 3 || st.Reason != "Error" {
		t.Errorf("failing: exit %d reason %q, want 3 Error", st.ExitCode, st.Reason)
	}
	if st.StartedAt == 0 || st.FinishedAt < st.StartedAt || st.CreatedAt > st.StartedAt {
		t.Errorf("failing: created %d started %d finished %d", st.CreatedAt, st.StartedAt, st.FinishedAt)
	}
	if want := filepath.Join(cfg.LogDirectory, "failing/0.log"); st.LogPath != want {
		t.Errorf("log path %q, want %q", st.LogPath, want)
	}
	b, err := os.ReadFile(st.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		m := criLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("log line not in CRI format: %q", line)
		}
		if m[2] != "F" {
			t.Errorf("short line tagged %s: %q", m[2], line)
		}
		got[m[1]] += m[3]
	}
	if got["stdout"] != "hello" || got["stderr"] != "oops" {
		t.Errorf("log streams = %v, want stdout hello and stderr oops", got)
	}
	if st := e.waitExited(ok); st.ExitCode != 0 || st.Reason != "Completed" {
		t.Errorf("ok: exit %d reason %q, want 0 Completed", st.ExitCode, st.Reason)
	}
	// A line longer than the split size comes as partial entries then a full one.
	long := e.run(sb, cfg, ctrConfig("long", "sh", "-c", "head -c 40000 /dev/zero | tr '\\0' x; echo"))
	st = e.waitExited(long)
	b, _ = os.ReadFile(st.LogPath)
	var text strings.Builder
	var tags []string
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		m := criLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("long log line not in CRI format: %.80q", line)
		}
		tags = append(tags, m[2])
		text.WriteString(m[3])
	}
	if text.Len() != 40000 || len(tags) < 3 || tags[len(tags)-1] != "F" || tags[0] != "P" {
		t.Errorf("long line: %d bytes in entries tagged %v", text.Len(), tags)
	}
}

func TestStopContainerGracePeriod(t *testing.T) {
	e := newEnv(t)
	cfg := e.podConfig("stop")
	sb := e.runPod(cfg)
	ctx := context.Background()

	// A process that exits on SIGTERM is stopped by it, not killed.
	polite := e.run(sb, cfg, ctrConfig("polite", "sh", "-c", "trap 'echo got TERM; exit 0' TERM; echo ready; while true; do sleep 1; done"))
	// One that ignores SIGTERM is killed once the grace period is over.
	stubborn := e.run(sb, cfg, ctrConfig("stubborn", "sh", "-c", "trap 'echo ignoring TERM' TERM; echo ready; while true; do sleep 1; done"))
	for _, id := range []string{polite, stubborn} {
		eventually(t, 10*time.Second, func() error {
			b, _ := os.ReadFile(e.status(id).LogPath)
			if !strings.Contains(string(b), "ready") {
				return fmt.Errorf("not ready yet")
			}
			return nil
		})
	}
	if _, err := e.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: polite, Timeout: 30}); err != nil {
		t.Fatal(err)
	}
	st := e.status(polite)
	if st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != 0 {
		t.Errorf("polite: %s exit %d, want exited 0 by its TERM trap", st.State, st.ExitCode)
	}
	b, _ := os.ReadFile(st.LogPath)
	if !strings.Contains(string(b), "got TERM") {
		t.Errorf("polite log lacks the trap's output: %s", b)
	}

	const grace = 2 * time.Second
	begin := time.Now()
	if _, err := e.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: stubborn, Timeout: int64(grace / time.Second)}); err != nil {
		t.Fatal(err)
	}
	took := time.Since(begin)
	st = e.status(stubborn)
	if st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != 137 || st.Reason != "Error" {
		t.Errorf("stubborn: %s exit %d %s, want exited 137 (SIGKILL) Error", st.State, st.ExitCode, st.Reason)
	}
	if took < grace {
		t.Errorf("stubborn killed after %s, before its grace period of %s", took, grace)
	}
	eventually(t, 5*time.Second, func() error {
		b, _ := os.ReadFile(st.LogPath)
		if !strings.Contains(string(b), "ignoring TERM") {
			return fmt.Errorf("stubborn log lacks the trap's output (SIGTERM first): %s", b)
		}
		return nil
	})
	// A container's own stop signal is sent instead of SIGTERM.
	quit := ctrConfig("quit", "sh", "-c", "trap 'echo got QUIT; exit 0' QUIT; trap '' TERM; echo ready; while true; do sleep 1; done")
	quit.StopSignal = runtimeapi.Signal_SIGQUIT
	qid := e.run(sb, cfg, quit)
	eventually(t, 10*time.Second, func() error {
		b, _ := os.ReadFile(e.status(qid).LogPath)
		if !strings.Contains(string(b), "ready") {
			return fmt.Errorf("not ready yet")
		}
		return nil
	})
	if _, err := e.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: qid, Timeout: 30}); err != nil {
		t.Fatal(err)
	}
	if st := e.status(qid); st.ExitCode != 0 || st.StopSignal != runtimeapi.Signal_SIGQUIT {
		t.Errorf("quit: exit %d stop signal %s, want 0 by its QUIT trap", st.ExitCode, st.StopSignal)
	}
	// Stopping again is a no-op.
	if _, err := e.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: stubborn, Timeout: 1}); err != nil {
		t.Errorf("second stop: %v", err)
	}
}

func TestMemoryLimitOOMKilled(t *testing.T) {
	e := newEnv(t)
	cfg := e.podConfig("oom")
	sb := e.runPod(cfg)
	hog := ctrConfig("hog", "sh", "-c", "a=x; while true; do a=$a$a; done")
	hog.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 32 << 20, CpuShares: 512, CpuQuota: 50000, CpuPeriod: 100000}}
	id := e.run(sb, cfg, hog)
	st := e.waitExited(id)
	if st.Reason != "OOMKilled" || st.ExitCode != 137 {
		t.Errorf("hog: exit %d reason %q, want 137 OOMKilled", st.ExitCode, st.Reason)
	}

	// The limits land in the container's cgroup (v1 paths under our parent).
	limited := ctrConfig("limited", "sleep", "300")
	limited.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 64 << 20, CpuShares: 256, CpuQuota: 20000, CpuPeriod: 100000,
		Unified: map[string]string{"pids.max": "100"}}}
	lid := e.run(sb, cfg, limited)
	cg := filepath.Join(e.cgroupParent, lid)
	for file, want := range map[string]string{
		"/sys/fs/cgroup/memory" + cg + "/memory.limit_in_bytes": fmt.Sprint(64 << 20),
		"/sys/fs/cgroup/cpu" + cg + "/cpu.shares":               "256",
		"/sys/fs/cgroup/cpu" + cg + "/cpu.cfs_quota_us":         "20000",
		"/sys/fs/cgroup/pids" + cg + "/pids.max":                "100",
	} {
		if b, err := os.ReadFile(file); err != nil || strings.TrimSpace(string(b)) != want {
			t.Errorf("%s = %q (%v), want %s", file, b, err, want)
		}
	}
	if _, err := e.rt.UpdateContainerResources(context.Background(), &runtimeapi.UpdateContainerResourcesRequest{ContainerId: lid,
		Linux: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 128 << 20, CpuShares: 300}}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile("/sys/fs/cgroup/memory" + cg + "/memory.limit_in_bytes"); strings.TrimSpace(string(b)) != fmt.Sprint(128<<20) {
		t.Errorf("memory limit after update = %s", b)
	}
	if got := e.status(lid).Resources.GetLinux().GetMemoryLimitInBytes(); got != 128<<20 {
		t.Errorf("status resources memory = %d after update", got)
	}
	stats, err := e.rt.ListContainerStats(context.Background(), &runtimeapi.ListContainerStatsRequest{Filter: &runtimeapi.ContainerStatsFilter{PodSandboxId: sb}})
	if err != nil {
		t.Fatal(err)
	}
	if len(stats.Stats) != 1 || stats.Stats[0].Attributes.Id != lid {
		t.Fatalf("stats of running containers: %v, want only %s", stats.Stats, lid)
	}
	if m := stats.Stats[0].Memory; m.GetUsageBytes().GetValue() == 0 || m.GetWorkingSetBytes() == nil {
		t.Errorf("memory stats = %v", m)
	}
	if stats.Stats[0].Cpu.GetUsageCoreNanoSeconds().GetValue() == 0 {
		t.Errorf("cpu stats = %v", stats.Stats[0].Cpu)
	}
}

func TestExecSync(t *testing.T) {
	e := newEnv(t)
	cfg := e.podConfig("exec")
	sb := e.runPod(cfg)
	id := e.run(sb, cfg, ctrConfig("main", "sleep", "300"))
	resp, err := e.exec(id, 10, "sh", "-c", "echo out; echo err >&2; exit 7")
	if err != nil {
		t.Fatal(err)
	}
	if string(resp.Stdout) != "out\n" || string(resp.Stderr) != "err\n" || resp.ExitCode != 7 {
		t.Errorf("exec = stdout %q stderr %q exit %d", resp.Stdout, resp.Stderr, resp.ExitCode)
	}
	// The exec'd process sees the container's environment.
	if got := e.mustExec(id, "sh", "-c", "echo $FROM_IMAGE"); got != "yes" {
		t.Errorf("exec env FROM_IMAGE = %q", got)
	}
	begin := time.Now()
	_, err = e.exec(id, 1, "sleep", "31")
	if status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("exec past its timeout: %v, want DeadlineExceeded", err)
	}
	if took := time.Since(begin); took > 10*time.Second {
		t.Errorf("timed-out exec returned after %s", took)
	}
	eventually(t, 5*time.Second, func() error {
		if ps := e.mustExec(id, "ps"); strings.Contains(ps, "sleep 31") {
			return fmt.Errorf("timed-out exec still runs:\n%s", ps)
		}
		return nil
	})
	if _, err := e.exec("nope", 1, "true"); status.Code(err) != codes.NotFound {
		t.Errorf("exec in unknown container: %v", err)
	}
}

func TestImageConfigAndSecurityContext(t *testing.T) {
	e := newEnv(t)
	cfg := e.podConfig("config")
	sb := e.runPod(cfg)
	c := ctrConfig("main", "sh", "-c")
	c.Args = []string{"id -u; id -g; id -G; echo $FROM_IMAGE $MINE; pwd; touch /x 2>/dev/null && echo writable || echo readonly; grep CapEff /proc/self/status"}
	c.Envs = []*runtimeapi.KeyValue{{Key: "MINE", Value: []byte("mine")}, {Key: "FROM_IMAGE", Value: []byte("overridden")}}
	c.WorkingDir = "/tmp"
	c.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
		RunAsUser: &runtimeapi.Int64Value{Value: 1000}, SupplementalGroups: []int64{2000},
		ReadonlyRootfs: true, NoNewPrivs: true,
		Capabilities: &runtimeapi.Capability{DropCapabilities: []string{"ALL"}},
	}}
	st := e.waitExited(e.run(sb, cfg, c))
	b, _ := os.ReadFile(st.LogPath)
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if m := criLine.FindStringSubmatch(line); m != nil {
			out = append(out, m[3])
		}
	}
	want := []string{"1000", "1001", "1001 2000", "overridden mine", "/tmp", "readonly", "CapEff:\t0000000000000000"}
	if strings.Join(out, "|") != strings.Join(want, "|") {
		t.Errorf("container saw\n%q\nwant\n%q", out, want)
	}
	// A host device given to the container is there and usable.
	dv := ctrConfig("device", "sh", "-c", "echo x > /dev/mynull && head -c 3 /dev/myzero | wc -c")
	dv.Devices = []*runtimeapi.Device{{HostPath: "/dev/null", ContainerPath: "/dev/mynull", Permissions: "rw"}, {HostPath: "/dev/zero", ContainerPath: "/dev/myzero", Permissions: "r"}}
	st = e.waitExited(e.run(sb, cfg, dv))
	if b, _ := os.ReadFile(st.LogPath); st.ExitCode != 0 || !strings.Contains(string(b), "stdout F 3") {
		t.Errorf("device container: exit %d, log %s", st.ExitCode, b)
	}
	// Kubernetes' merge: args replace the image's cmd under its entrypoint; a
	// command replaces the entrypoint and drops the cmd.
	for _, tc := range []struct {
		command, args []string
		want          int32
	}{
		{nil, nil, 5},
		{nil, []string{"exit 4"}, 4},
		{[]string{"sh", "-c", "exit 6"}, nil, 6},
		{[]string{"sh", "-c"}, []string{"exit 7"}, 7},
	} {
		d := ctrConfig(fmt.Sprintf("merge%d", tc.want))
		d.Image.Image = "busybox-entrypoint"
		d.Command, d.Args = tc.command, tc.args
		if st := e.waitExited(e.run(sb, cfg, d)); st.ExitCode != tc.want {
			t.Errorf("command %q args %q: exit %d, want %d", tc.command, tc.args, st.ExitCode, tc.want)
		}
	}
}

func TestRestartReadoptsRunningContainer(t *testing.T) {
	e := newEnv(t)
	cfg := e.podConfig("restart")
	sb := e.runPod(cfg)
	id := e.run(sb, cfg, ctrConfig("ticker", "sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done"))
	logPath := e.status(id).LogPath
	lines := func() int {
		b, _ := os.ReadFile(logPath)
		return bytes.Count(b, []byte("\n"))
	}
	eventually(t, 10*time.Second, func() error {
		if lines() < 1 {
			return fmt.Errorf("no log yet")
		}
		return nil
	})

	e.stopServer()
	before := lines()
	// Logs keep flowing while no runtime runs.
	eventually(t, 10*time.Second, func() error {
		if n := lines(); n <= before {
			return fmt.Errorf("log stuck at %d lines while the runtime is down", n)
		}
		return nil
	})
	e.start()

	list, err := e.rt.ListContainers(context.Background(), &runtimeapi.ListContainersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Containers) != 1 || list.Containers[0].Id != id || list.Containers[0].State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("after restart: %v, want %s running", list.Containers, id)
	}
	sbs, err := e.rt.ListPodSandbox(context.Background(), &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(sbs.Items) != 1 || sbs.Items[0].Id != sb || sbs.Items[0].State != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Fatalf("sandboxes after restart: %v", sbs.Items)
	}
	if got := e.mustExec(id, "hostname"); got != "restart" {
		t.Errorf("exec after restart: hostname %q", got)
	}
	after := lines()
	eventually(t, 10*time.Second, func() error {
		if n := lines(); n <= after {
			return fmt.Errorf("log stuck at %d lines after restart", n)
		}
		return nil
	})
	// The kubelet rotates by renaming the file and asking for a reopen.
	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.rt.ReopenContainerLog(context.Background(), &runtimeapi.ReopenContainerLogRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		if n := lines(); n < 1 {
			return fmt.Errorf("nothing written to the reopened log")
		}
		return nil
	})
	if _, err := e.rt.StopContainer(context.Background(), &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 1}); err != nil {
		t.Fatal(err)
	}
	// Whether the shell dies of SIGTERM (143) or of the SIGKILL (137) is its own business.
	if st := e.status(id); st.State != runtimeapi.ContainerState_CONTAINER_EXITED || (st.ExitCode != 137 && st.ExitCode != 143) {
		t.Errorf("stop of a re-adopted container: %s exit %d", st.State, st.ExitCode)
	}
}

func TestOrphansRemovedOnStart(t *testing.T) {
	e := newEnv(t)
	e.stopServer()
	// What a crash between mkdir and the first record write leaves.
	rootfs := filepath.Join(e.state, "containers", "orphan", "bundle", "rootfs")
	netns := filepath.Join(e.state, "sandboxes", "orphan", "netns")
	for _, d := range []string{rootfs, filepath.Dir(netns)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(netns, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	for _, m := range []struct{ src, dst, fstype string }{{"tmpfs", rootfs, "tmpfs"}, {"/proc/self/ns/net", netns, ""}} {
		flags := uintptr(0)
		if m.fstype == "" {
			flags = syscall.MS_BIND
		}
		if err := syscall.Mount(m.src, m.dst, m.fstype, flags, ""); err != nil {
			t.Fatal(err)
		}
	}
	e.start()
	for _, d := range []string{"containers", "sandboxes"} {
		if _, err := os.Stat(filepath.Join(e.state, d, "orphan")); !os.IsNotExist(err) {
			t.Errorf("orphan %s dir still there: %v", d, err)
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mounts), "orphan") {
		t.Errorf("orphan mounts left:\n%s", mounts)
	}
}

func TestRemovePodSandboxLeavesNothing(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cfg := e.podConfig("leaks")
	sb := e.runPod(cfg)
	running := e.run(sb, cfg, ctrConfig("running", "sleep", "300"))
	exited := e.run(sb, cfg, ctrConfig("exited", "true"))
	e.waitExited(exited)
	created, err := e.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sb, Config: ctrConfig("created", "sleep", "1"), SandboxConfig: cfg})
	if err != nil {
		t.Fatal(err)
	}
	var netns syscall.Stat_t
	if err := syscall.Stat(filepath.Join(e.state, "sandboxes", sb, "netns"), &netns); err != nil {
		t.Fatal(err)
	}
	if n := len(processesInNetns(netns.Ino)); n == 0 {
		t.Fatalf("no process found in the pod's network namespace before removal")
	}
	if _, err := e.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb}); err != nil {
		t.Fatal(err)
	}
	if st := e.status(running); st.State != runtimeapi.ContainerState_CONTAINER_EXITED {
		t.Errorf("after StopPodSandbox the container is %s", st.State)
	}
	if _, err := e.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb}); err != nil {
		t.Errorf("second remove: %v", err)
	}

	ids := []string{sb, running, exited, created.ContainerId}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mounts), "\n") {
		if strings.Contains(line, e.state) {
			t.Errorf("mount left: %s", line)
		}
	}
	out, err := exec.Command("runc", "--root", filepath.Join(e.state, "runc"), "list", "-q").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("runc containers left: %s (%v)", out, err)
	}
	for _, h := range cgroupHierarchies() {
		ents, _ := os.ReadDir(filepath.Join(h, e.cgroupParent))
		for _, d := range ents {
			if d.IsDir() {
				t.Errorf("cgroup left: %s", filepath.Join(h, e.cgroupParent, d.Name()))
			}
		}
	}
	for _, d := range []string{"sandboxes", "containers"} {
		if ents, _ := os.ReadDir(filepath.Join(e.state, d)); len(ents) != 0 {
			t.Errorf("%s left under the state dir: %v", d, ents)
		}
	}
	if pids := processesInNetns(netns.Ino); len(pids) != 0 {
		t.Errorf("processes left in the pod's network namespace: %v", pids)
	}
	if pids := processesMentioning(ids); len(pids) != 0 {
		t.Errorf("shim processes left: %v", pids)
	}
	list, _ := e.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if len(list.GetContainers()) != 0 {
		t.Errorf("containers still listed: %v", list.Containers)
	}
}

func cgroupHierarchies() []string {
	var out []string
	for _, s := range []string{"memory", "cpu", "cpuacct", "cpuset", "pids", "blkio", "devices", "freezer", "systemd", "unified", "net_cls", "perf_event", "hugetlb"} {
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", s)); err == nil {
			out = append(out, filepath.Join("/sys/fs/cgroup", s))
		}
	}
	return out
}

func processesInNetns(ino uint64) []string {
	var out []string
	procs, _ := filepath.Glob("/proc/[0-9]*/ns/net")
	for _, p := range procs {
		var st syscall.Stat_t
		if syscall.Stat(p, &st) == nil && st.Ino == ino {
			out = append(out, p)
		}
	}
	return out
}

func processesMentioning(ids []string) []string {
	var out []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		for _, id := range ids {
			if len(b) > 0 && bytes.Contains(b, []byte(id)) {
				out = append(out, p+": "+strings.ReplaceAll(string(b), "\x00", " "))
			}
		}
	}
	return out
}

// BenchmarkContainerLifecycle measures one container's create (overlay
// mount, bundle, shim, runc create), start, exit and remove through the CRI.
func BenchmarkContainerLifecycle(b *testing.B) {
	requireRuntime(b)
	base := b.TempDir()
	self, _ := os.Executable()
	// NAVARCH_RUNTIME_SHIM: a built navarch binary as shim (and built-in
	// OCI runtime), whose start-up costs more than this test program's.
	if bin := os.Getenv("NAVARCH_RUNTIME_SHIM"); bin != "" {
		self = bin
	}
	parent := "/navarch-bench-" + newID()[:8]
	srv, err := New(Config{StateDir: filepath.Join(base, "state"), ShimBinary: self, Images: testImages, CgroupParent: parent, Runc: os.Getenv("NAVARCH_OCI_RUNTIME")})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	cfg := &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "bench", Namespace: "default", Uid: "bench"}, Hostname: "bench", LogDirectory: filepath.Join(base, "logs")}
	sb, err := srv.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		_, _ = srv.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.PodSandboxId})
		for _, h := range cgroupHierarchies() {
			_ = os.Remove(filepath.Join(h, parent))
		}
	}()
	var create, start, exit, remove time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		c, err := srv.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sb.PodSandboxId, Config: ctrConfig("c", "true"), SandboxConfig: cfg})
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, err := srv.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c.ContainerId}); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		ctr, _ := srv.getContainer(c.ContainerId)
		if !srv.waitExit(ctr, 10*time.Second) {
			b.Fatal("container did not exit")
		}
		t3 := time.Now()
		if _, err := srv.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: c.ContainerId}); err != nil {
			b.Fatal(err)
		}
		create, start, exit, remove = create+t1.Sub(t0), start+t2.Sub(t1), exit+t3.Sub(t2), remove+time.Since(t3)
	}
	n := float64(b.N) * float64(time.Millisecond)
	b.ReportMetric(float64(create)/n, "create-ms/op")
	b.ReportMetric(float64(start)/n, "start-ms/op")
	b.ReportMetric(float64(exit)/n, "exit-ms/op")
	b.ReportMetric(float64(remove)/n, "remove-ms/op")
}

// BenchmarkRuncBare is the floor under BenchmarkContainerLifecycle: runc
// create, start, wait and delete of a busybox `true` with runc's default
// spec, no shim, overlay or CRI.
func BenchmarkRuncBare(b *testing.B) {
	requireRuntime(b)
	if _, err := exec.LookPath("runc"); err != nil {
		b.Skip("needs the runc binary in PATH")
	}
	base := b.TempDir()
	bundle := filepath.Join(base, "bundle")
	if err := os.MkdirAll(bundle, 0o755); err != nil {
		b.Fatal(err)
	}
	if out, err := exec.Command("runc", "spec", "--bundle", bundle).CombinedOutput(); err != nil {
		b.Fatalf("runc spec: %v: %s", err, out)
	}
	specPath := filepath.Join(bundle, "config.json")
	raw, _ := os.ReadFile(specPath)
	raw = bytes.Replace(raw, []byte(`"terminal": true`), []byte(`"terminal": false`), 1)
	raw = bytes.Replace(raw, []byte(`"sh"`), []byte(`"true"`), 1)
	raw = bytes.Replace(raw, []byte(`"path": "rootfs"`), []byte(`"path": "`+testImages["busybox"]+`"`), 1)
	if err := os.WriteFile(specPath, raw, 0o644); err != nil {
		b.Fatal(err)
	}
	root := filepath.Join(base, "runc")
	// Output goes to /dev/null: the container inherits runc's stdio, so a
	// pipe there would hold create's caller until the container ends.
	runc := func(args ...string) {
		if err := exec.Command("runc", append([]string{"--root", root}, args...)...).Run(); err != nil {
			b.Fatalf("runc %s: %v", args[0], err)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := fmt.Sprintf("bare%d", i)
		runc("create", "--bundle", bundle, id)
		runc("start", id)
		for {
			out, _ := exec.Command("runc", "--root", root, "state", id).Output()
			if bytes.Contains(out, []byte(`"stopped"`)) {
				break
			}
		}
		runc("delete", id)
	}
}
