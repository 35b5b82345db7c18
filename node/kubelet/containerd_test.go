package kubelet

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/navarch/navarch/controlplane/apiserver/apiservertest"
	"github.com/navarch/navarch/internal/nodetest"
)

// pauseRef is the sandbox image the test builds and gives containerd: it
// has no registry to pull registry.k8s.io/pause from.
const pauseRef = "navarch.io/pause:1"

// containerdNode is a containerd the test started itself, with its own
// root, state, socket, CNI configuration and bridge.
type containerdNode struct {
	t       *testing.T
	dir     string
	sock    string
	bridge  string
	subnet  *net.IPNet
	ipamDir string
	cd      *nodetest.Containerd
}

// TestKubeletContainerd runs the kubelet against containerd's CRI (Debian's
// containerd 1.6) instead of the built-in runtime: a pod runs, gets an IP of
// the node's CIDR, answers HTTP from the host, and once deleted leaves no
// sandbox, container, veth or IP allocation behind.
func TestKubeletContainerd(t *testing.T) {
	began := time.Now()
	c, rt, img, cgroupRoot := containerdCRI(t)
	ctx := context.Background()
	v, err := rt.Version(ctx, &runtimeapi.VersionRequest{})
	if err != nil {
		t.Fatalf("containerd CRI version: %v\n%s", err, c.log())
	}
	t.Logf("runtime %s %s (CRI %s)", v.RuntimeName, v.RuntimeVersion, v.RuntimeApiVersion)

	srv := apiservertest.Start(t)
	dataDir := t.TempDir()
	kctx, cancel := context.WithCancel(ctx)
	k, err := New(Config{
		Client: srv.Client, NodeName: "kubelet-test", DataDir: dataDir,
		Runtime: rt, Images: img,
		DefaultPodCIDR: c.subnet.String(), Version: "v1.34.0",
		RelistInterval: 200 * time.Millisecond, BackoffInitial: time.Second,
		ImageGCInterval: time.Hour, CgroupRoot: cgroupRoot,
	})
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() { ran <- k.Run(kctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-ran; err != nil {
			t.Errorf("kubelet: %v", err)
		}
	})

	apiservertest.Eventually(t, 30*time.Second, "node ready", func() error {
		node, err := srv.Client.CoreV1().Nodes().Get(ctx, "kubelet-test", metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, cond := range node.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("conditions %+v", node.Status.Conditions)
	})
	node, _ := srv.Client.CoreV1().Nodes().Get(ctx, "kubelet-test", metav1.GetOptions{})
	if ni := node.Status.NodeInfo; !strings.HasPrefix(ni.ContainerRuntimeVersion, "containerd://") {
		t.Errorf("node runtime version %q, want containerd://...", ni.ContainerRuntimeVersion)
	}

	n := &testNode{t: t, client: srv.Client, node: "kubelet-test"}
	pod := testPod("web", corev1.RestartPolicyAlways)
	pod.Spec.Containers[0].ImagePullPolicy = corev1.PullNever
	web, took := n.createAndWait(pod, corev1.PodRunning)
	t.Logf("pod web on containerd: create to Running %v", took)
	ip := net.ParseIP(web.Status.PodIP)
	if ip == nil || !c.subnet.Contains(ip) {
		t.Fatalf("pod IP %q not in %s", web.Status.PodIP, c.subnet)
	}
	cs := web.Status.ContainerStatuses
	if len(cs) != 1 || cs[0].State.Running == nil || !strings.HasPrefix(cs[0].ContainerID, "containerd://") || !strings.HasPrefix(cs[0].ImageID, "sha256:") {
		t.Errorf("container statuses %+v", cs)
	}
	apiservertest.Eventually(t, 10*time.Second, "GET /hostname", func() error {
		body, err := httpGet("http://" + net.JoinHostPort(web.Status.PodIP, "8080") + "/hostname")
		if err != nil {
			return err
		}
		if strings.TrimSpace(body) != "web" {
			return fmt.Errorf("hostname %q, want web", body)
		}
		return nil
	})
	env, err := httpGet("http://" + net.JoinHostPort(web.Status.PodIP, "8080") + "/env")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"COMBINED=hello-web", "MY_IP=" + web.Status.PodIP} {
		if !strings.Contains(env, want+"\n") {
			t.Errorf("env lacks %s:\n%s", want, env)
		}
	}
	// What the leftover check below looks for is there while the pod runs.
	if got := c.ctr("containers", "ls", "-q"); len(strings.Fields(got)) != 2 {
		t.Errorf("ctr containers while the pod runs: %q, want its sandbox and container", got)
	}
	if m := nodetest.Mounts(c.dir); len(m) == 0 {
		t.Errorf("no mounts under %s while the pod runs (rootfs, shm)", c.dir)
	}
	if ports, _ := os.ReadDir("/sys/class/net/" + c.bridge + "/brif"); len(ports) != 1 {
		t.Errorf("%d veths on %s while the pod runs, want 1", len(ports), c.bridge)
	}
	// containerd (cgroupfs) puts the pause and app containers below the
	// pod cgroup the kubelet gave as the sandbox's parent.
	podCgroup := filepath.Join(cgroupRoot, "kubepods", "besteffort", "pod"+string(web.UID))
	if procs, _ := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory", podCgroup, strings.TrimPrefix(cs[0].ContainerID, "containerd://"), "cgroup.procs")); len(strings.Fields(string(procs))) == 0 {
		t.Errorf("no process of the container in %s", podCgroup)
	}

	last := n.deleteAndWait("web")
	if last == nil || last.Status.Phase != corev1.PodSucceeded {
		t.Errorf("last status before deletion: %+v", last)
	}
	apiservertest.Eventually(t, 10*time.Second, "nothing left of the pod", func() error {
		if left := c.leftovers(rt, dataDir); len(left) > 0 {
			return fmt.Errorf("left: %s", strings.Join(left, "; "))
		}
		if hs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/*", podCgroup)); len(hs) > 0 {
			return fmt.Errorf("pod cgroup left: %v", hs)
		}
		return nil
	})
	t.Logf("containerd test took %v", time.Since(began).Round(time.Millisecond))
}

// containerdCRI skips unless this host can run containerd, starts one
// with the test images and the pause image and connects to its CRI. The
// pods' cgroups (kubepods/...) are to go under cgroupRoot, the test's own,
// removed at the end; what sandboxes the test leaves are removed first,
// while containerd still runs, so that it tears down the netns, mounts
// and shims it made.
func containerdCRI(t *testing.T) (c *containerdNode, rt runtimeapi.RuntimeServiceClient, img runtimeapi.ImageServiceClient, cgroupRoot string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the containerd test needs root (containerd, namespaces, mounts, bridges)")
	}
	for _, bin := range []string{"containerd", "containerd-shim-runc-v2", "ctr", "runc"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("the containerd test needs %s in PATH (make deps installs Debian's containerd and runc)", bin)
		}
	}
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		if _, err := os.Stat(filepath.Join("/usr/lib/cni", p)); err != nil {
			t.Skipf("the containerd test needs /usr/lib/cni/%s (Debian's containernetworking-plugins)", p)
		}
	}
	tars := append(testImages(t), pauseImage(t))
	c = startContainerd(t)
	for _, tar := range tars {
		c.ctr("images", "import", tar)
	}
	conn, err := grpc.NewClient("unix://"+c.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	rt, img = runtimeapi.NewRuntimeServiceClient(conn), runtimeapi.NewImageServiceClient(conn)
	cgroupRoot = "/navarch-ctrd-test-" + randHex(4)
	// Cleanups run last first: this one after the sandboxes' removal.
	t.Cleanup(func() {
		hs, _ := filepath.Glob("/sys/fs/cgroup/*")
		for _, h := range append(hs, "/sys/fs/cgroup") {
			if err := removeCgroupTree(filepath.Join(h, cgroupRoot)); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	})
	t.Cleanup(func() { c.removeSandboxes(rt) })
	return c, rt, img, cgroupRoot
}

// pauseImage builds testdata/pause static and packs it as pauseRef, an OCI
// layout tarball ctr imports.
func pauseImage(t *testing.T) string {
	t.Helper()
	p, err := nodetest.PauseImage("testdata/pause", t.TempDir(), pauseRef)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// startContainerd runs a containerd confined to a temporary directory
// (root, state, sockets, runc root, CNI configuration and IPAM state); the
// cleanup stops it and removes what it left.
func startContainerd(t *testing.T) *containerdNode {
	t.Helper()
	dir := t.TempDir()
	subnet, _ := freeSubnet(t)
	c := &containerdNode{t: t, dir: dir, sock: filepath.Join(dir, "containerd.sock"), bridge: "ctrd" + randHex(4), subnet: subnet,
		ipamDir: filepath.Join(dir, "ipam"), cd: nodetest.NewContainerd(dir)}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(c.bridge); err == nil {
			if err := netlink.LinkDel(l); err != nil {
				t.Errorf("cleanup: bridge %s: %v", c.bridge, err)
			}
		}
		c.cd.RestoreHost()
	})
	err := c.cd.Start(c.bridge, c.bridge, subnet, pauseRef)
	t.Cleanup(c.stop)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *containerdNode) log() string { return c.cd.Log() }

// ctr runs ctr against the test's containerd in CRI's namespace.
func (c *containerdNode) ctr(args ...string) string {
	c.t.Helper()
	out, err := exec.Command("ctr", append([]string{"--address", c.sock, "-n", "k8s.io"}, args...)...).CombinedOutput()
	if err != nil {
		c.t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// removeSandboxes stops and removes every sandbox containerd still has.
func (c *containerdNode) removeSandboxes(rt runtimeapi.RuntimeServiceClient) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sbs, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		c.t.Errorf("cleanup: list sandboxes: %v", err)
		return
	}
	for _, sb := range sbs.Items {
		if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
			c.t.Errorf("cleanup: stop sandbox %s: %v", sb.Id, err)
		}
		if _, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
			c.t.Errorf("cleanup: remove sandbox %s: %v", sb.Id, err)
		}
	}
}

// stop stops containerd, kills shims it left and unmounts what remains
// under the temporary directory.
func (c *containerdNode) stop() {
	for _, err := range c.cd.Stop() {
		c.t.Errorf("cleanup: %v", err)
	}
}

// leftovers lists what of deleted pods remains: sandboxes and containers
// (through CRI and ctr), mounts under containerd's root and state other
// than its snapshots of images, veths on the bridge, IP allocations, pod
// directories.
func (c *containerdNode) leftovers(rt runtimeapi.RuntimeServiceClient, dataDir string) []string {
	var out []string
	ctx := context.Background()
	sbs, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		out = append(out, "list sandboxes: "+err.Error())
	}
	for _, sb := range sbs.GetItems() {
		out = append(out, "sandbox "+sb.Id)
	}
	cs, err := rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if err != nil {
		out = append(out, "list containers: "+err.Error())
	}
	for _, ct := range cs.GetContainers() {
		out = append(out, "container "+ct.Id)
	}
	if ids := strings.Fields(c.ctr("containers", "ls", "-q")); len(ids) > 0 {
		out = append(out, "ctr containers "+strings.Join(ids, ","))
	}
	if ids := strings.Fields(c.ctr("tasks", "ls", "-q")); len(ids) > 0 {
		out = append(out, "ctr tasks "+strings.Join(ids, ","))
	}
	for _, m := range nodetest.Mounts(c.dir) {
		out = append(out, "mount "+m)
	}
	ports, _ := os.ReadDir("/sys/class/net/" + c.bridge + "/brif")
	for _, p := range ports {
		out = append(out, "veth "+p.Name())
	}
	ipam, _ := os.ReadDir(filepath.Join(c.ipamDir, c.bridge))
	for _, e := range ipam {
		if net.ParseIP(e.Name()) != nil {
			out = append(out, "ip allocation "+e.Name())
		}
	}
	pods, _ := os.ReadDir(filepath.Join(dataDir, "pods"))
	for _, p := range pods {
		out = append(out, "pod dir "+p.Name())
	}
	return out
}
