package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"

	"github.com/navarch/navarch/internal/nodetest"
)

// saNode is a node of TestServerAgentAndJoin: the server's own, or the one
// that joins with the node token.
type saNode struct {
	name, dataDir, bridge, cgroupRoot string
	kubeletPort                       int
}

func saRandHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// TestServerAgentAndJoin runs `navarch server` with its agent: its node
// registers Ready with the machine's capacity and runs a pod of the test
// image, which the host reaches at its IP; a restart of the server leaves
// the container running and re-adopts it. A second machine (here a second
// agent with its own data dir and bridge) joins with the server's node
// token alone, and a token of another CA or with a wrong secret is a
// one-line error.
func TestServerAgentAndJoin(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the server's node needs root (namespaces, mounts, cgroups, bridges)")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		t.Skip("the server's node needs runc in PATH (make deps)")
	}
	image := saTestserverImage(t)
	cidr := nodeFreeCIDR(t)
	own := saNode{name: "e2e-own-" + saRandHex(2), bridge: "nvs" + saRandHex(3), kubeletPort: freePort(t), cgroupRoot: "/navarch-e2e-" + saRandHex(3)}
	joined := saNode{name: "e2e-joined-" + saRandHex(2), dataDir: t.TempDir(), bridge: "nvs" + saRandHex(3), kubeletPort: freePort(t),
		cgroupRoot: "/navarch-e2e-" + saRandHex(3)}
	// The cgroups the nodes make (the runtime's /navarch and the nodes'
	// cgroup roots) are removed unless they were there; the built-in
	// network's table too, and ip_forward goes back as found.
	host := nodetest.SaveHost("cni-navarch", "/sys/fs/cgroup/*/navarch")

	// The API server reaches the kubelets at their InternalIP: loopback
	// keeps that on this host. Each node has a cgroup root of its own, so
	// that no kubelet on this machine takes another's pods for orphans.
	s := startServer(t, "--disable-agent=false", "--cluster-cidr", cidr.String(), "--node-name", own.name,
		"--bridge-name", own.bridge, "--kubelet-port", strconv.Itoa(own.kubeletPort), "--node-ip", "127.0.0.1",
		"--cgroup-root", own.cgroupRoot)
	own.dataDir = s.dataDir
	c := clients(t)[0]
	var agent *exec.Cmd
	var agentLog bytes.Buffer
	agentDone := make(chan error, 1)
	// One teardown, in order: pods are deleted while the nodes still run
	// (their containers outlive the agents on purpose), then the agent and
	// the server stop, then whatever they left is removed.
	t.Cleanup(func() {
		if r := s.kubectl(c, "", nil, "delete", "pods", "--all", "--all-namespaces", "--wait=false"); r.err != nil {
			t.Logf("cleanup: delete pods: %s", r)
		}
		deadline := time.Now().Add(60 * time.Second)
		for {
			r := s.kubectl(c, "", nil, "get", "pods", "--all-namespaces", "-o", "name")
			if r.err == nil && strings.TrimSpace(r.stdout) == "" {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("cleanup: pods not gone after 60s: %s", r)
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if agent != nil {
			_ = agent.Process.Signal(syscall.SIGTERM)
			select {
			case <-agentDone:
			case <-time.After(20 * time.Second):
				t.Errorf("joined agent did not stop within 20s of SIGTERM")
				_ = agent.Process.Kill()
				<-agentDone
			}
			if t.Failed() {
				t.Logf("joined agent log:\n%s", agentLog.String())
			}
		}
		s.stop()
		for _, n := range []saNode{own, joined} {
			if left := saLeftovers(n); len(left) > 0 {
				t.Errorf("cleanup: node %s left, with its pods deleted and its agent stopped:\n%s", n.name, strings.Join(left, "\n"))
			}
			saRemoveLeftovers(t, n)
		}
		for _, h := range host.NewCgroups("/sys/fs/cgroup/*/navarch", "/sys/fs/cgroup/*"+own.cgroupRoot, "/sys/fs/cgroup/*"+joined.cgroupRoot) {
			nodetest.RemoveCgroupTree(h)
		}
		for _, err := range host.Restore() {
			t.Errorf("cleanup: %v", err)
		}
	})

	// The server's own node: Ready, with this machine's CPUs and memory.
	saWaitNodeReady(t, s, c, own.name, nil)
	var node corev1.Node
	if err := json.Unmarshal([]byte(s.must(t, c, "get", "node", own.name, "-o", "json")), &node); err != nil {
		t.Fatal(err)
	}
	if cpu := node.Status.Capacity.Cpu().Value(); cpu != int64(runtime.NumCPU()) {
		t.Errorf("node %s: capacity cpu %d, want this machine's %d", own.name, cpu, runtime.NumCPU())
	}
	if mem := node.Status.Capacity.Memory().Value(); mem < 64<<20 {
		t.Errorf("node %s: capacity memory %d, want this machine's", own.name, mem)
	}
	if node.Spec.PodCIDR == "" || !cidr.Contains(net.ParseIP(strings.Split(node.Spec.PodCIDR, "/")[0])) {
		t.Errorf("node %s: podCIDR %q, want one of --cluster-cidr %s", own.name, node.Spec.PodCIDR, cidr)
	}
	token, err := os.ReadFile(filepath.Join(s.dataDir, "node-token"))
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(s.dataDir, "node-token")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("node-token: mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	if want := "navarch agent --server https://127.0.0.1:" + strconv.Itoa(s.port) + " --token $(cat " + filepath.Join(s.dataDir, "node-token") + ")"; !strings.Contains(s.log.String(), want) {
		t.Errorf("server log does not say how to join (%q):\n%s", want, s.log)
	}

	// A pod of the test image imported into the server's data dir.
	if out, err := exec.Command(navarchBin, "image", "import", "--data-dir", s.dataDir, image).CombinedOutput(); err != nil {
		t.Fatalf("navarch image import: %v\n%s", err, out)
	}
	manifest := `apiVersion: v1
kind: Pod
metadata: {name: hello}
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: main
    image: navarch.io/testserver:1
    imagePullPolicy: Never
`
	if r := s.kubectl(c, manifest, nil, "apply", "-f", "-"); r.err != nil {
		t.Fatalf("kubectl apply: %s", r)
	}
	pod := saWaitRunning(t, s, c, "hello", own.name)
	nodeWaitHostname(t, pod.Status.PodIP, "hello")
	containerID := pod.Status.ContainerStatuses[0].ContainerID
	v1, _ := filepath.Glob("/sys/fs/cgroup/*" + own.cgroupRoot + "/kubepods")
	if v2, _ := filepath.Glob("/sys/fs/cgroup" + own.cgroupRoot + "/kubepods"); len(v1)+len(v2) == 0 {
		t.Errorf("no pod cgroups under the server's --cgroup-root %s", own.cgroupRoot)
	}

	// Stopping the server leaves the container running; the restarted
	// server's agent re-adopts it.
	s.stop()
	if body, err := nodeGet("http://" + net.JoinHostPort(pod.Status.PodIP, "8080") + "/hostname"); err != nil || strings.TrimSpace(body) != "hello" {
		t.Fatalf("with the server stopped the pod does not answer: %q %v", body, err)
	}
	s.start()
	// A second pod running shows that the new agent has synced the node's
	// pods, the first one among them.
	if r := s.kubectl(c, strings.Replace(manifest, "name: hello", "name: hello2", 1), nil, "apply", "-f", "-"); r.err != nil {
		t.Fatalf("kubectl apply: %s", r)
	}
	saWaitRunning(t, s, c, "hello2", own.name)
	again := saWaitRunning(t, s, c, "hello", own.name)
	if cs := again.Status.ContainerStatuses[0]; cs.ContainerID != containerID || cs.RestartCount != 0 || again.Status.PodIP != pod.Status.PodIP {
		t.Errorf("after the restart: container %s restarts %d IP %s, want the same container %s, 0 restarts, IP %s",
			cs.ContainerID, cs.RestartCount, again.Status.PodIP, containerID, pod.Status.PodIP)
	}
	nodeWaitHostname(t, pod.Status.PodIP, "hello")

	// Joining with a token that names another CA, or the right CA with
	// a wrong secret, fails at once with one line.
	tok := strings.TrimSpace(string(token))
	parts := strings.Split(tok, ".")
	if len(parts) != 3 || parts[0] != "nvt1" || len(parts[1]) != 64 {
		t.Fatalf("node-token %q: want nvt1.<sha256 hex>.<secret>", tok)
	}
	joinArgs := func(token string, n saNode) []string {
		return []string{"agent", "--server", s.url(), "--token", token, "--data-dir", n.dataDir, "--node-name", n.name,
			"--bridge-name", n.bridge, "--kubelet-port", strconv.Itoa(n.kubeletPort), "--cluster-cidr", cidr.String(), "--node-ip", "127.0.0.1"}
	}
	for _, bad := range []struct{ token, want string }{
		{"nvt1." + strings.Repeat("ab", 32) + "." + parts[2], "the server's CA is not the one the token names"},
		{parts[0] + "." + parts[1] + "." + strings.Repeat("0", len(parts[2])), "does not accept the token (401 Unauthorized)"},
		{"not-a-token", "not a node join token"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var stdout, stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, navarchBin, joinArgs(bad.token, saNode{name: "e2e-bad", dataDir: t.TempDir(), bridge: "nvsbad", kubeletPort: 0})...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		timedOut := ctx.Err()
		cancel()
		if err == nil || timedOut != nil {
			t.Errorf("agent with token %q: err %v (timeout %v), want a non-zero exit at once", bad.token, err, timedOut)
		}
		if msg := strings.TrimSpace(stderr.String()); strings.Count(msg, "\n") != 0 || !strings.Contains(msg, bad.want) {
			t.Errorf("agent with token %q: stderr %q, want one line with %q", bad.token, msg, bad.want)
		}
	}
	if r := s.kubectl(c, "", nil, "get", "node", "e2e-bad"); r.err == nil {
		t.Errorf("a bad token registered a node: %s", r)
	}

	// The second node joins with the token alone: no kubeconfig, no CA
	// file.
	agent = exec.Command(navarchBin, append(joinArgs(tok, joined), "--cgroup-root", joined.cgroupRoot)...)
	agent.Stdout, agent.Stderr = &agentLog, &agentLog
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { agentDone <- agent.Wait() }()
	saWaitNodeReady(t, s, c, joined.name, agentDone)
	out := s.must(t, c, "get", "nodes", "--no-headers")
	if strings.Count(out, " Ready ") != 2 {
		t.Errorf("want both nodes Ready:\n%s", out)
	}
	// The first node's pods are untouched by the second node.
	if cs := saWaitRunning(t, s, c, "hello", own.name).Status.ContainerStatuses[0]; cs.ContainerID != containerID || cs.RestartCount != 0 {
		t.Errorf("after the join: container %s restarts %d, want %s with 0 restarts", cs.ContainerID, cs.RestartCount, containerID)
	}
	nodeWaitHostname(t, pod.Status.PodIP, "hello")
}

// saWaitNodeReady waits for the node's Ready condition, failing early if
// exited (the agent's process) says it ended.
func saWaitNodeReady(t *testing.T, s *server, c client, name string, exited chan error) {
	t.Helper()
	eventually(t, 60*time.Second, func() error {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("agent of %s exited: %v", name, err)
		default:
		}
		r := s.kubectl(c, "", nil, "get", "node", name, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		if r.err != nil || r.stdout != "True" {
			return fmt.Errorf("node %s not Ready: %s\nserver log tail:\n%s", name, r, saTail(s.log.String(), 3000))
		}
		return nil
	})
}

// saWaitRunning waits until the pod runs on node with an IP.
func saWaitRunning(t *testing.T, s *server, c client, name, node string) *corev1.Pod {
	t.Helper()
	var p corev1.Pod
	eventually(t, 60*time.Second, func() error {
		r := s.kubectl(c, "", nil, "get", "pod", name, "-o", "json")
		if r.err != nil {
			return fmt.Errorf("get pod %s: %s", name, r)
		}
		p = corev1.Pod{}
		if err := json.Unmarshal([]byte(r.stdout), &p); err != nil {
			return err
		}
		if p.Spec.NodeName != node || p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" ||
			len(p.Status.ContainerStatuses) != 1 || p.Status.ContainerStatuses[0].State.Running == nil {
			st, _ := json.Marshal(p.Status)
			return fmt.Errorf("pod %s on %q: status %s", name, p.Spec.NodeName, st)
		}
		return nil
	})
	return &p
}

func saTail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// saTestserverImage is bin/images/testserver.tar as `make images` leaves
// it, or else built as it does into a temporary directory.
func saTestserverImage(t *testing.T) string {
	t.Helper()
	if made := "../../bin/images/testserver.tar"; saExists(made) {
		abs, _ := filepath.Abs(made)
		return abs
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "testserver")
	build := exec.Command("go", "build", "-o", bin, "./test/images/testserver")
	build.Dir = "../.."
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build testserver: %v\n%s", err, out)
	}
	pack := exec.Command("go", "run", "./test/images/pack", "-out", dir, "-testserver", bin, "-busybox=")
	pack.Dir = "../.."
	if out, err := pack.CombinedOutput(); err != nil {
		t.Fatalf("pack images: %v\n%s", err, out)
	}
	return filepath.Join(dir, "testserver.tar")
}

func saExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// saLeftovers lists what the node's pods leave behind: mounts under its
// data dir, shims, runc containers.
func saLeftovers(n saNode) []string {
	if n.dataDir == "" {
		return nil
	}
	var out []string
	for _, m := range nodetest.Mounts(n.dataDir) {
		out = append(out, "mount "+m)
	}
	for _, pid := range nodetest.ShimPIDs(n.dataDir) {
		out = append(out, fmt.Sprintf("shim %d", pid))
	}
	if b, err := exec.Command("runc", "--root", nodetest.RuncRoot(n.dataDir), "list", "-q").Output(); err == nil && strings.TrimSpace(string(b)) != "" {
		out = append(out, "runc containers "+strings.Join(strings.Fields(string(b)), ","))
	}
	return out
}

// saRemoveLeftovers removes what a stopped node's pods left if the test
// failed before they were deleted: runc containers, shims, mounts under
// its data dir (rootfs, namespace files, volumes), the containers'
// cgroups; and its bridge.
func saRemoveLeftovers(t *testing.T, n saNode) {
	if n.dataDir == "" {
		return
	}
	found, errs := nodetest.RemoveNodeLeftovers(n.dataDir)
	for _, f := range found {
		t.Logf("cleanup: %s of %s left", f, n.name)
	}
	for _, err := range errs {
		t.Errorf("cleanup: %v", err)
	}
	es, _ := os.ReadDir(filepath.Join(n.dataDir, "runtime", "containers"))
	for _, e := range es {
		cgs, _ := filepath.Glob("/sys/fs/cgroup/*/navarch/" + e.Name())
		cgs = append(cgs, "/sys/fs/cgroup/navarch/"+e.Name())
		for _, cg := range cgs {
			_ = os.Remove(cg)
		}
	}
	if l, err := netlink.LinkByName(n.bridge); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			t.Errorf("cleanup: bridge %s: %v", n.bridge, err)
		}
	}
}
