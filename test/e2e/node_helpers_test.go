package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/navarch/navarch/internal/nodetest"
)

// This file runs real nodes for the node tests: `navarch agent` processes
// (the built-in runtime, or containerd) beside a `navarch server`, and
// removes whatever they leave when the test ends.

const (
	nodeTestserver = "navarch.io/testserver:1"
	nodeBusybox    = "navarch.io/busybox:1"
	nodePause      = "navarch.io/pause:1"
)

// nodeCluster is a server with real nodes.
type nodeCluster struct {
	t    *testing.T
	s    *server
	kc   client     // the bundled kubectl
	cidr *net.IPNet // the server's --cluster-cidr
	dir  string     // the test's temporary directory (agent logs, data dirs)
	// agents in the order they were started; the teardown stops them all.
	agents []*nodeAgent
	// cgroupNames are the pod (pod<uid>) and container cgroups' names of
	// the pods the test saw, for the leak check and the teardown.
	cgroupNames map[string]bool
}

// nodeAgent is one `navarch agent` process and its node.
type nodeAgent struct {
	n       *nodeCluster
	name    string
	dataDir string
	bridge  string // the built-in network's bridge, or containerd's CNI bridge
	podCIDR *net.IPNet
	args    []string
	logPath string
	cmd     *exec.Cmd
	exited  chan error
	// containerd is the runtime this agent uses instead of the built-in one.
	containerd *nodeContainerd
}

func nodeRandHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// nodeRequirements skips the test unless it can run real containers.
func nodeRequirements(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("node e2e tests need root (namespaces, mounts, cgroups, bridges)")
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("node e2e tests need /bin/busybox (busybox-static, make deps) for the busybox image")
	}
}

// nodeFreeCIDR picks a cluster CIDR that is free on this host.
func nodeFreeCIDR(t *testing.T) *net.IPNet {
	t.Helper()
	n, err := nodetest.FreeCIDR()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// nodeSubnet is the k-th /24 of cidr.
func nodeSubnet(cidr *net.IPNet, k int) *net.IPNet {
	ip := append(net.IP(nil), cidr.IP.To4()...)
	ip[2] = byte(k)
	return &net.IPNet{IP: ip, Mask: net.CIDRMask(24, 32)}
}

var (
	nodeImagesOnce sync.Once
	nodeImageTars  []string
	nodeImagesErr  error
)

// nodeImages returns the testserver and busybox tarballs: bin/images as
// `make images` leaves them, or else built as it does into the run's
// temporary directory (once per run).
func nodeImages(t *testing.T) []string {
	t.Helper()
	nodeImagesOnce.Do(func() {
		made := []string{"../../bin/images/testserver.tar", "../../bin/images/busybox.tar"}
		if _, err := os.Stat(made[0]); err == nil {
			if _, err := os.Stat(made[1]); err == nil {
				nodeImageTars = made
				return
			}
		}
		dir := filepath.Join(filepath.Dir(navarchBin), "images")
		bin := filepath.Join(dir, "testserver")
		build := exec.Command("go", "build", "-o", bin, "./test/images/testserver")
		build.Dir = "../.."
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			nodeImagesErr = fmt.Errorf("go build testserver: %v\n%s", err, out)
			return
		}
		pack := exec.Command("go", "run", "./test/images/pack", "-out", dir, "-testserver", bin, "-busybox", "/bin/busybox")
		pack.Dir = "../.."
		if out, err := pack.CombinedOutput(); err != nil {
			nodeImagesErr = fmt.Errorf("pack images: %v\n%s", err, out)
			return
		}
		nodeImageTars = []string{filepath.Join(dir, "testserver.tar"), filepath.Join(dir, "busybox.tar")}
	})
	if nodeImagesErr != nil {
		t.Fatal(nodeImagesErr)
	}
	return nodeImageTars
}

// startNodeCluster starts a server whose cluster CIDR is free on this host;
// the nodes come with startAgent. When the test ends every pod is deleted
// (while the agents still run, as their containers outlive them on
// purpose), the agents are stopped and what they left is removed;
// net.ipv4.ip_forward is put back as found.
func startNodeCluster(t *testing.T) *nodeCluster {
	t.Helper()
	nodeRequirements(t)
	nodeImages(t)
	// The built-in network's masquerade table (cni-NETWORK, the agents'
	// default network name), removed if this test made it; the runtime's
	// and the kubelet's cgroup parents, removed at the end unless they
	// were there before.
	host := nodetest.SaveHost("cni-navarch", "/sys/fs/cgroup/*/navarch", "/sys/fs/cgroup/*/kubepods", "/sys/fs/cgroup/*/kubepods/*")
	cidr := nodeFreeCIDR(t)
	s := startServer(t, "--cluster-cidr", cidr.String())
	n := &nodeCluster{t: t, s: s, kc: clients(t)[0], cidr: cidr, dir: t.TempDir(), cgroupNames: map[string]bool{}}
	t.Cleanup(func() {
		n.deleteAll()
		for _, a := range n.agents {
			a.stop()
			if t.Failed() {
				t.Logf("agent %s log (tail):\n%s", a.name, a.logTail(6000))
			}
			a.removeLeftovers()
		}
		cgs := nodeCgroups(n.cgroupNames)
		sort.Sort(sort.Reverse(sort.StringSlice(cgs)))
		for _, cg := range cgs {
			if err := os.Remove(cg); err != nil {
				t.Errorf("cleanup: cgroup %s: %v", cg, err)
			}
		}
		for _, h := range host.NewCgroups("/sys/fs/cgroup/*/navarch", "/sys/fs/cgroup/*/kubepods/*", "/sys/fs/cgroup/*/kubepods") {
			// Only an empty cgroup goes: another node on this host
			// may be using it.
			_ = os.Remove(h)
		}
		for _, err := range host.Restore() {
			t.Errorf("cleanup: %v", err)
		}
	})
	return n
}

// in is n for a subtest: its failures are t's (a subtest must not
// FailNow its parent).
func (n *nodeCluster) in(t *testing.T) *nodeCluster {
	m := *n
	m.t = t
	return &m
}

// deleteAll deletes the test's workloads and waits for their pods to go,
// which needs the agents running.
func (n *nodeCluster) deleteAll() {
	t := n.t
	if pods, err := n.pods(""); err == nil {
		n.remember(pods...)
	}
	r := n.s.kubectl(n.kc, "", nil, "delete", "deployments,replicasets,pods", "--all", "--wait=false")
	if r.err != nil {
		t.Logf("cleanup: delete pods: %s", r)
		return
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		r := n.s.kubectl(n.kc, "", nil, "get", "pods", "-A", "-o", "name")
		if r.err == nil && strings.TrimSpace(r.stdout) == "" {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Errorf("cleanup: pods not gone after 60s: %s", n.s.kubectl(n.kc, "", nil, "get", "pods", "-A", "-o", "wide").stdout)
}

// startAgent imports the test images into a fresh data dir and starts a
// built-in node named name on the k-th /24 of the cluster CIDR; it returns
// once the node is Ready.
func (n *nodeCluster) startAgent(name string, k int) *nodeAgent {
	t := n.t
	t.Helper()
	a := &nodeAgent{n: n, name: name, dataDir: filepath.Join(n.dir, name), bridge: "nve2e" + nodeRandHex(3), podCIDR: nodeSubnet(n.cidr, k)}
	if err := os.MkdirAll(a.dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"image", "import", "--data-dir", a.dataDir}, nodeImages(t)...)
	if out, err := exec.Command(navarchBin, args...).CombinedOutput(); err != nil {
		t.Fatalf("navarch %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	a.args = append(n.agentFlags(a), "--bridge-name", a.bridge, "--cluster-cidr", n.cidr.String(), "--pod-cidr", a.podCIDR.String())
	n.agents = append(n.agents, a)
	n.runAgent(a)
	return a
}

// agentFlags are the flags every agent of the test has.
func (n *nodeCluster) agentFlags(a *nodeAgent) []string {
	a.logPath = filepath.Join(n.dir, a.name+".log")
	// The API server reaches the kubelet's HTTPS server on the node's
	// InternalIP: loopback keeps that traffic on this host.
	return []string{"agent", "--kubeconfig", n.s.kubeconfig, "--data-dir", a.dataDir, "--node-name", a.name,
		"--kubelet-port", strconv.Itoa(freePort(n.t)), "--node-ip", "127.0.0.1"}
}

// runAgent starts a's process with its flags and waits for its node to be
// Ready.
func (n *nodeCluster) runAgent(a *nodeAgent) {
	t := n.t
	t.Helper()
	logf, err := os.OpenFile(a.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	a.cmd = exec.Command(navarchBin, a.args...)
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	// A group of its own, so that the teardown can end whatever it started.
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := a.cmd.Start(); err != nil {
		t.Fatalf("start agent %s: %v", a.name, err)
	}
	a.exited = make(chan error, 1)
	go func(cmd *exec.Cmd, ch chan error) { ch <- cmd.Wait(); logf.Close() }(a.cmd, a.exited)
	n.waitNodeReady(a)
}

// waitNodeReady waits for the node's Ready condition, failing early if the
// agent exits.
func (n *nodeCluster) waitNodeReady(a *nodeAgent) {
	t := n.t
	t.Helper()
	eventually(t, 60*time.Second, func() error {
		select {
		case err := <-a.exited:
			a.exited <- err
			t.Fatalf("agent %s exited: %v\n%s", a.name, err, a.logTail(4000))
		default:
		}
		r := n.s.kubectl(n.kc, "", nil, "get", "node", a.name, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		if r.err != nil || r.stdout != "True" {
			return fmt.Errorf("node %s not Ready: %s", a.name, r)
		}
		return nil
	})
}

func (a *nodeAgent) logTail(n int) string {
	b, _ := os.ReadFile(a.logPath)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// stop ends the agent with SIGTERM, as systemd or a Ctrl-C would (its
// containers keep running), and kills whatever remains of its process
// group.
func (a *nodeAgent) stop() error {
	if a.cmd == nil || a.cmd.Process == nil {
		return nil
	}
	pgid := a.cmd.Process.Pid
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case err = <-a.exited:
	case <-time.After(20 * time.Second):
		a.n.t.Errorf("agent %s did not stop within 20s of SIGTERM", a.name)
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		err = <-a.exited
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	a.cmd = nil
	return err
}

// restart stops the agent and starts it again with the same flags.
func (a *nodeAgent) restart() {
	t := a.n.t
	t.Helper()
	if err := a.stop(); err != nil {
		t.Errorf("agent %s exit after SIGTERM: %v", a.name, err)
	}
	a.n.runAgent(a)
}

// nodeProc is a process of the test's: pid and command line.
type nodeProc struct {
	pid  int
	args []string
}

// shims lists the built-in runtime's shims (`navarch runtime-shim ...` of
// this run's binary) of the agent's data dir.
func (a *nodeAgent) shims() []nodeProc {
	var out []nodeProc
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if len(args) < 3 || args[0] != navarchBin || args[1] != "runtime-shim" {
			continue
		}
		if args[2] == "pause" || strings.Contains(string(b), a.dataDir+"/") {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			out = append(out, nodeProc{pid, args})
		}
	}
	return out
}

// leftovers lists what pods leave on the node: veths on its bridge, mounts
// under its data dir (rootfs, namespace files, volumes), shims, runc
// containers, sandbox and container records, IP allocations; for a
// containerd node, containerd's sandboxes and containers.
func (a *nodeAgent) leftovers() []string {
	var out []string
	ports, _ := os.ReadDir("/sys/class/net/" + a.bridge + "/brif")
	for _, p := range ports {
		out = append(out, "veth "+p.Name())
	}
	for _, m := range nodetest.Mounts(a.dataDir) {
		out = append(out, "mount "+m)
	}
	if a.containerd != nil {
		c := a.containerd
		for _, m := range nodetest.Mounts(c.dir) {
			out = append(out, "mount "+m)
		}
		for _, what := range []string{"containers", "tasks"} {
			if ids := strings.Fields(c.ctr(false, what, "ls", "-q")); len(ids) > 0 {
				out = append(out, "containerd "+what+" "+strings.Join(ids, ","))
			}
		}
		ipam, _ := os.ReadDir(filepath.Join(c.dir, "ipam", c.network))
		for _, e := range ipam {
			if net.ParseIP(e.Name()) != nil {
				out = append(out, "ip allocation "+e.Name())
			}
		}
		return out
	}
	for _, p := range a.shims() {
		out = append(out, fmt.Sprintf("shim %d %s", p.pid, strings.Join(p.args, " ")))
	}
	// The OCI runtime's state root holds a directory per container (runc's
	// layout, which the built-in one shares); no runc binary is needed.
	if ids := runcContainers(filepath.Join(a.dataDir, "runtime", "runc")); len(ids) > 0 {
		out = append(out, "runc containers "+strings.Join(ids, ","))
	}
	for _, d := range []string{"sandboxes", "containers"} {
		es, _ := os.ReadDir(filepath.Join(a.dataDir, "runtime", d))
		for _, e := range es {
			out = append(out, d+" record "+e.Name())
		}
	}
	ipam, _ := os.ReadDir(filepath.Join(a.dataDir, "network", "ipam", "navarch"))
	for _, e := range ipam {
		if net.ParseIP(e.Name()) != nil {
			out = append(out, "ip allocation "+e.Name())
		}
	}
	return out
}

// runcContainers lists the containers under an OCI runtime state root.
func runcContainers(root string) []string {
	es, _ := os.ReadDir(root)
	var ids []string
	for _, e := range es {
		if e.IsDir() {
			ids = append(ids, e.Name())
		}
	}
	return ids
}

// removeLeftovers removes what the stopped agent's pods left: runc
// containers, shims, mounts, the containers' cgroups, the bridge; and stops
// its containerd.
func (a *nodeAgent) removeLeftovers() {
	t := a.n.t
	if a.containerd != nil {
		a.containerd.stop()
	} else {
		root := filepath.Join(a.dataDir, "runtime", "runc")
		for _, id := range runcContainers(root) {
			if out, err := exec.Command(navarchBin, "runc", "--root", root, "delete", "--force", id).CombinedOutput(); err != nil {
				t.Errorf("cleanup: runc delete %s: %v %s", id, err, out)
			}
		}
		for _, p := range a.shims() {
			_ = syscall.Kill(p.pid, syscall.SIGKILL)
		}
		// Containers' cgroups are named after them.
		es, _ := os.ReadDir(filepath.Join(a.dataDir, "runtime", "containers"))
		for _, e := range es {
			a.n.cgroupNames[e.Name()] = true
		}
	}
	for _, err := range nodetest.Unmount(a.dataDir) {
		t.Errorf("cleanup: %v", err)
	}
	if l, err := netlink.LinkByName(a.bridge); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			t.Errorf("cleanup: bridge %s: %v", a.bridge, err)
		}
	}
}

// apply sends a manifest to kubectl apply -f -, as a user would.
func (n *nodeCluster) apply(manifest string) {
	n.t.Helper()
	if r := n.s.kubectl(n.kc, manifest, nil, "apply", "-f", "-"); r.err != nil {
		n.t.Fatalf("kubectl apply:\n%s\n%s", manifest, r)
	}
}

// pod is kubectl get pod NAME -o json.
func (n *nodeCluster) pod(name string) (*corev1.Pod, error) {
	r := n.s.kubectl(n.kc, "", nil, "get", "pod", name, "-o", "json")
	if r.err != nil {
		return nil, fmt.Errorf("get pod %s: %s", name, r)
	}
	var p corev1.Pod
	if err := json.Unmarshal([]byte(r.stdout), &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// remember notes the cgroups' names of pods (pod<uid>, container ids).
func (n *nodeCluster) remember(pods ...corev1.Pod) {
	for _, p := range pods {
		n.cgroupNames["pod"+string(p.UID)] = true
		for _, cs := range append(append([]corev1.ContainerStatus(nil), p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
			if _, id, ok := strings.Cut(cs.ContainerID, "://"); ok {
				n.cgroupNames[id] = true
			}
			if t := cs.LastTerminationState.Terminated; t != nil {
				if _, id, ok := strings.Cut(t.ContainerID, "://"); ok {
					n.cgroupNames[id] = true
				}
			}
		}
	}
}

// nodeCgroups lists the cgroup directories, in every hierarchy, that have
// one of names.
func nodeCgroups(names map[string]bool) []string {
	var out []string
	hs, _ := filepath.Glob("/sys/fs/cgroup/*")
	hs = append(hs, "/sys/fs/cgroup/unified")
	seen := map[string]bool{}
	for _, h := range hs {
		if seen[h] {
			continue
		}
		seen[h] = true
		// A symlinked hierarchy (cpu -> cpu,cpuacct) is not descended.
		_ = filepath.WalkDir(h, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			if d.IsDir() && names[d.Name()] {
				out = append(out, p)
			}
			return nil
		})
	}
	return out
}

// pods is kubectl get pods [-l SELECTOR] -o json.
func (n *nodeCluster) pods(selector string) ([]corev1.Pod, error) {
	args := []string{"get", "pods", "-o", "json"}
	if selector != "" {
		args = append(args, "-l", selector)
	}
	r := n.s.kubectl(n.kc, "", nil, args...)
	if r.err != nil {
		return nil, fmt.Errorf("get pods -l %s: %s", selector, r)
	}
	var l corev1.PodList
	if err := json.Unmarshal([]byte(r.stdout), &l); err != nil {
		return nil, err
	}
	return l.Items, nil
}

// waitPod polls the pod until ok accepts it and returns it.
func (n *nodeCluster) waitPod(name string, timeout time.Duration, ok func(*corev1.Pod) error) *corev1.Pod {
	n.t.Helper()
	var last *corev1.Pod
	eventually(n.t, timeout, func() error {
		p, err := n.pod(name)
		if err != nil {
			return err
		}
		last = p
		if err := ok(p); err != nil {
			return fmt.Errorf("pod %s: %v; status %s", name, err, nodeStatusJSON(p))
		}
		return nil
	})
	return last
}

func nodeStatusJSON(p *corev1.Pod) string {
	b, _ := json.Marshal(p.Status)
	return string(b)
}

// nodeRunning accepts a Running pod whose containers all run.
func nodeRunning(p *corev1.Pod) error {
	if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
		return fmt.Errorf("phase %s, IP %q", p.Status.Phase, p.Status.PodIP)
	}
	for _, cs := range p.Status.ContainerStatuses {
		if cs.State.Running == nil {
			return fmt.Errorf("container %s not running", cs.Name)
		}
	}
	return nil
}

// nodeGet GETs url from the host.
func nodeGet(url string) (string, error) {
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), err
}

// waitHostname waits until http://IP:8080/hostname answers want from the
// host.
func (n *nodeCluster) waitHostname(ip, want string) {
	n.t.Helper()
	nodeWaitHostname(n.t, ip, want)
}

// nodeWaitHostname is waitHostname for a test without a nodeCluster.
func nodeWaitHostname(t *testing.T, ip, want string) {
	t.Helper()
	eventually(t, 15*time.Second, func() error {
		body, err := nodeGet("http://" + net.JoinHostPort(ip, "8080") + "/hostname")
		if err != nil {
			return err
		}
		if strings.TrimSpace(body) != want {
			return fmt.Errorf("hostname of %s: %q, want %q", ip, body, want)
		}
		return nil
	})
}

// nodeBusyboxPod is a busybox pod on node that runs script; with idle it
// then waits for SIGTERM (sh as PID 1 would otherwise ignore it for the
// whole grace period), without it the pod ends (restartPolicy Never).
func nodeBusyboxPod(name, node, script string, idle bool) string {
	restart := "Never"
	if idle {
		restart = "Always"
		if script != "" {
			script += "; "
		}
		script += `trap "exit 0" TERM; while true; do sleep 1; done`
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
  labels: {app: %s}
spec:
  nodeName: %q
  restartPolicy: %s
  terminationGracePeriodSeconds: 5
  containers:
  - name: sh
    image: %s
    command: ["sh", "-c", %q]
`, name, name, node, restart, nodeBusybox, script)
}

// nodeContainerd is a containerd the test started, confined to a
// temporary directory (root, state, sockets, runc root, CNI configuration,
// IPAM), with a bridge of its own for its pods.
type nodeContainerd struct {
	t       *testing.T
	dir     string
	sock    string
	network string
	cd      *nodetest.Containerd
}

// startContainerdAgent starts a containerd with the test images and a
// CNI bridge on the k-th /24 of the cluster CIDR, and an agent named name
// using it as its runtime.
func (n *nodeCluster) startContainerdAgent(name string, k int) *nodeAgent {
	t := n.t
	t.Helper()
	for _, bin := range []string{"containerd", "containerd-shim-runc-v2", "ctr"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("the containerd node needs %s in PATH (make deps installs Debian's containerd)", bin)
		}
	}
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		if _, err := os.Stat(filepath.Join("/usr/lib/cni", p)); err != nil {
			t.Skipf("the containerd node needs /usr/lib/cni/%s (containernetworking-plugins)", p)
		}
	}
	a := &nodeAgent{n: n, name: name, dataDir: filepath.Join(n.dir, name), bridge: "nvc2e" + nodeRandHex(3), podCIDR: nodeSubnet(n.cidr, k)}
	if err := os.MkdirAll(a.dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	c := &nodeContainerd{t: t, dir: filepath.Join(n.dir, name+"-containerd"), network: a.bridge}
	c.cd = nodetest.NewContainerd(c.dir)
	c.sock = c.cd.Sock
	a.containerd = c
	// In the agents list before anything can fail, so that the teardown
	// stops containerd and removes the bridge.
	n.agents = append(n.agents, a)
	c.start(a.bridge, a.podCIDR)
	for _, tar := range append(nodeImages(t), nodePauseImage(t, n.dir)) {
		c.ctr(true, "images", "import", tar)
	}
	a.args = append(n.agentFlags(a), "--container-runtime-endpoint", "unix://"+c.sock, "--pod-cidr", a.podCIDR.String())
	n.runAgent(a)
	return a
}

func (c *nodeContainerd) start(bridge string, subnet *net.IPNet) {
	if err := c.cd.Start(bridge, c.network, subnet, nodePause); err != nil {
		c.t.Fatal(err)
	}
}

// ctr runs ctr against the test's containerd in CRI's namespace; with must
// a failure fails the test.
func (c *nodeContainerd) ctr(must bool, args ...string) string {
	c.t.Helper()
	out, err := exec.Command("ctr", append([]string{"--address", c.sock, "-n", "k8s.io"}, args...)...).CombinedOutput()
	if err != nil {
		if must {
			c.t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return ""
	}
	return string(out)
}

// stop removes the sandboxes containerd still has (so that it tears down
// their netns, mounts and shims), stops it, and removes what remains.
func (c *nodeContainerd) stop() {
	t := c.t
	if !c.cd.Running() {
		return
	}
	if conn, err := grpc.NewClient("unix://"+c.sock, grpc.WithTransportCredentials(insecure.NewCredentials())); err == nil {
		rt := runtimeapi.NewRuntimeServiceClient(conn)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if sbs, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}); err == nil {
			for _, sb := range sbs.Items {
				_, _ = rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.Id})
				if _, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
					t.Errorf("cleanup: containerd sandbox %s: %v", sb.Id, err)
				}
			}
		}
		cancel()
		conn.Close()
	}
	for _, err := range c.cd.Stop() {
		t.Errorf("cleanup: %v", err)
	}
	c.cd.RestoreHost()
}

// nodePauseImage builds node/kubelet/testdata/pause (the sandbox image
// containerd needs, with no registry to pull registry.k8s.io/pause from)
// and writes it as an OCI tarball of nodePause into dir.
func nodePauseImage(t *testing.T, dir string) string {
	t.Helper()
	p, err := nodetest.PauseImage("../../node/kubelet/testdata/pause", dir, nodePause)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// nodePTY opens a pseudo-terminal pair of 24x80.
func nodePTY() (master, slave *os.File, err error) {
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	fd := int(m.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		return nil, nil, fmt.Errorf("unlock pty: %w", err)
	}
	num, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		m.Close()
		return nil, nil, fmt.Errorf("pty number: %w", err)
	}
	if err := unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: 24, Col: 80}); err != nil {
		m.Close()
		return nil, nil, fmt.Errorf("pty size: %w", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", num), os.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		m.Close()
		return nil, nil, err
	}
	return m, s, nil
}

// nodeTerminal is what a program under a pseudo-terminal printed so far.
type nodeTerminal struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *nodeTerminal) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *nodeTerminal) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// execTTY runs `kubectl exec -it POD -- sh` under a pseudo-terminal, as a
// user at a terminal: it waits for the shell's prompt, types each line
// (with Enter) once the screen shows what precedes it in expect, and
// returns the screen and kubectl's exit.
func (n *nodeCluster) execTTY(c client, pod string, steps [][2]string) (string, error) {
	m, sl, err := nodePTY()
	if err != nil {
		return "", err
	}
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.argv[0], append(c.argv[1:], "exec", "-it", pod, "--", "sh")...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+n.s.kubeconfig, "TERM=xterm")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = sl, sl, sl
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		sl.Close()
		return "", err
	}
	sl.Close()
	screen := &nodeTerminal{}
	copied := make(chan struct{})
	go func() { _, _ = io.Copy(screen, m); close(copied) }()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	waitFor := func(s string) error {
		for !strings.Contains(screen.String(), s) {
			select {
			case err := <-exited:
				exited <- err
				return fmt.Errorf("kubectl exited (%v) before the terminal showed %q:\n%s", err, s, screen)
			case <-time.After(20 * time.Millisecond):
			}
			if ctx.Err() != nil {
				return fmt.Errorf("the terminal did not show %q:\n%s", s, screen)
			}
		}
		return nil
	}
	for _, st := range steps {
		if err := waitFor(st[0]); err != nil {
			return screen.String(), err
		}
		if _, err := m.Write([]byte(st[1] + "\r")); err != nil {
			return screen.String(), err
		}
	}
	err = <-exited
	// The slave side is closed once kubectl exits: reading then ends.
	select {
	case <-copied:
	case <-time.After(2 * time.Second):
	}
	return screen.String(), err
}
