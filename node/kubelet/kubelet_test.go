package kubelet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/navarch/navarch/controlplane/apiserver"
	"github.com/navarch/navarch/controlplane/apiserver/apiservertest"
	"github.com/navarch/navarch/node/images"
	"github.com/navarch/navarch/node/network"
	noderuntime "github.com/navarch/navarch/node/runtime"
	"github.com/navarch/navarch/node/runtime/libct"
)

// TestMain lets the test binary be the runtime's shim and the CNI plugin,
// as the navarch binary is.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "runtime-shim" {
		os.Exit(noderuntime.ShimMain(os.Args[2:]))
	}
	// It is the built-in OCI runtime too, and that one's container init.
	if libct.IsInit(os.Args) {
		libct.Init()
	}
	if len(os.Args) > 1 && os.Args[1] == "runc" {
		os.Exit(libct.Main(os.Args[2:]))
	}
	if filepath.Base(os.Args[0]) == network.PluginName {
		os.Exit(network.PluginMain("navarch-bridge (kubelet test binary)"))
	}
	os.Exit(m.Run())
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// testserverImage builds the test server and packs it as make images does,
// returning the OCI tarball.
func testImages(t *testing.T) []string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "testserver")
	build := exec.Command("go", "build", "-o", bin, "../../test/images/testserver")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build testserver: %v\n%s", err, out)
	}
	busybox := "/bin/busybox"
	if _, err := os.Stat(busybox); err != nil {
		busybox = ""
	}
	pack := exec.Command("go", "run", "../../test/images/pack", "-out", dir, "-testserver", bin, "-busybox", busybox)
	if out, err := pack.CombinedOutput(); err != nil {
		t.Fatalf("pack: %v\n%s", err, out)
	}
	tars := []string{filepath.Join(dir, "testserver.tar")}
	if busybox != "" {
		tars = append(tars, filepath.Join(dir, "busybox.tar"))
	}
	return tars
}

// freeSubnet picks a 10.2xx.y.0/24 no host interface is on.
func freeSubnet(t *testing.T) (*net.IPNet, string) {
	t.Helper()
	addrs, _ := net.InterfaceAddrs()
	for i := 0; i < 100; i++ {
		b := make([]byte, 2)
		_, _ = rand.Read(b)
		_, n, _ := net.ParseCIDR(fmt.Sprintf("10.%d.%d.0/24", 200+int(b[0])%50, b[1]))
		clash := false
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && (n.Contains(ipn.IP) || ipn.Contains(n.IP)) {
				clash = true
			}
		}
		if !clash {
			return n, fmt.Sprintf("10.%d.0.0/16", n.IP[1])
		}
	}
	t.Fatal("no free subnet")
	return nil, ""
}

type testNode struct {
	t       *testing.T
	client  kubernetes.Interface
	builtin *Builtin
	dataDir string
	bridge  string
	netName string
	subnet  *net.IPNet
	node    string
	conn    *grpc.ClientConn
	// kubelet is the running kubelet, stopKubelet stops it.
	kubelet     *Kubelet
	stopKubelet func()
	// kubeletPort and nodeIP go into the kubelet's Config at its next
	// start (the HTTPS server's test sets them).
	kubeletPort int32
	nodeIP      string
	// cgroupRoot is the runtime's cgroup parent and the kubelet's
	// CgroupRoot: kubepods go below it. podMaxPids is the kubelet's
	// PodMaxPids at its next start.
	cgroupRoot string
	podMaxPids int64
}

// startNode runs an API server, the built-in runtime and a kubelet in this
// process, and removes everything they made when the test ends; apiConfig
// edits the API server's Config.
func startNode(t *testing.T, apiConfig ...func(*apiserver.Config)) *testNode {
	if os.Geteuid() != 0 {
		t.Skip("kubelet tests need root (namespaces, mounts, cgroups, bridges)")
	}
	// The built-in OCI runtime needs no binary; NAVARCH_OCI_RUNTIME names one.
	if rt := os.Getenv("NAVARCH_OCI_RUNTIME"); rt != "" {
		if _, err := exec.LookPath(rt); err != nil {
			t.Skipf("NAVARCH_OCI_RUNTIME=%s is not in PATH", rt)
		}
	}
	images := testImages(t)
	srv := apiservertest.StartConfig(t, func(c *apiserver.Config) {
		for _, edit := range apiConfig {
			edit(c)
		}
	})
	subnet, cluster := freeSubnet(t)
	n := &testNode{t: t, client: srv.Client, dataDir: t.TempDir(), bridge: "nvk" + randHex(4), subnet: subnet, node: "kubelet-test"}
	n.netName = n.bridge
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cgroupParent := "/navarch-kubelet-test-" + randHex(4)
	n.cgroupRoot = cgroupParent
	b, err := NewBuiltin(BuiltinConfig{DataDir: n.dataDir, Bridge: n.bridge, NetworkName: n.netName, ClusterCIDR: cluster,
		NoIPForward: true, CgroupParent: cgroupParent, ShimBinary: self, OCIRuntime: os.Getenv("NAVARCH_OCI_RUNTIME")})
	if err != nil {
		t.Fatal(err)
	}
	n.builtin = b
	for _, tar := range images {
		if _, err := b.Store.ImportFile(tar); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { n.cleanup(cgroupParent) })

	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- b.Serve(ctx) }()
	conn, err := grpc.NewClient("unix://"+b.Socket(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	n.conn = conn
	apiservertest.Eventually(t, 10*time.Second, "runtime socket", func() error {
		_, err := runtimeapi.NewRuntimeServiceClient(conn).Version(ctx, &runtimeapi.VersionRequest{})
		return err
	})
	t.Cleanup(func() {
		n.stopKubelet()
		conn.Close()
		cancel()
		if err := <-served; err != nil {
			t.Errorf("runtime: %v", err)
		}
	})
	n.startKubelet()
	return n
}

// startKubelet runs a kubelet against the node's runtime; stopKubelet stops
// it and leaves the containers running, as stopping the agent does.
func (n *testNode) startKubelet() {
	t := n.t
	ctx, cancel := context.WithCancel(context.Background())
	k, err := New(Config{
		Client: n.client, NodeName: n.node, DataDir: n.dataDir,
		Runtime: runtimeapi.NewRuntimeServiceClient(n.conn), Images: runtimeapi.NewImageServiceClient(n.conn),
		DefaultPodCIDR: n.subnet.String(), Version: "v1.34.0",
		KubeletPort: n.kubeletPort, NodeIP: n.nodeIP, CgroupRoot: n.cgroupRoot, PodMaxPids: n.podMaxPids,
		OnPodCIDR: func(cidr string) error { return n.builtin.SetPodCIDR(ctx, cidr) },
		// Short, so that the test sees exits and restarts at once.
		RelistInterval: 200 * time.Millisecond,
		BackoffInitial: time.Second,
		// Image GC only when a test calls it, and then of every unused image.
		ImageGCInterval: time.Hour, ImageGCHighThresholdPercent: 1, ImageGCLowThresholdPercent: 1, ImageMinAge: time.Nanosecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	n.kubelet = k
	ran := make(chan error, 1)
	go func() { ran <- k.Run(ctx) }()
	n.stopKubelet = func() {
		cancel()
		if err := <-ran; err != nil {
			t.Errorf("kubelet: %v", err)
		}
		n.stopKubelet = func() {}
	}
}

// cleanup removes whatever pods are left, then the bridge, the nftables
// table and the cgroup parent the test made.
func (n *testNode) cleanup(cgroupParent string) {
	t := n.t
	ctx := context.Background()
	if sbs, err := n.builtin.Runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}); err == nil {
		for _, sb := range sbs.Items {
			if _, err := n.builtin.Runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
				t.Errorf("cleanup: sandbox %s: %v", sb.Id, err)
			}
		}
	}
	if l, err := netlink.LinkByName(n.bridge); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			t.Errorf("cleanup: bridge %s: %v", n.bridge, err)
		}
	}
	if c, err := nftables.New(); err == nil {
		tables, _ := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
		for _, tb := range tables {
			if tb.Name == "cni-"+n.netName {
				c.DelTable(tb)
				if err := c.Flush(); err != nil {
					t.Errorf("cleanup: nftables table %s: %v", tb.Name, err)
				}
			}
		}
	}
	hs, _ := filepath.Glob("/sys/fs/cgroup/*")
	hs = append(hs, "/sys/fs/cgroup")
	for _, h := range hs {
		if err := removeCgroupTree(filepath.Join(h, cgroupParent)); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}
}

// leftovers lists what of the pods remains on the node.
func (n *testNode) leftovers() []string {
	var out []string
	ctx := context.Background()
	sbs, _ := n.builtin.Runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	for _, sb := range sbs.GetItems() {
		out = append(out, "sandbox "+sb.Id)
	}
	cs, _ := n.builtin.Runtime.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	for _, c := range cs.GetContainers() {
		out = append(out, "container "+c.Id)
	}
	// A directory per container under the OCI runtime's state root (runc's
	// layout, which the built-in one shares).
	if es, _ := os.ReadDir(filepath.Join(n.dataDir, "runtime", "runc")); len(es) > 0 {
		var ids []string
		for _, e := range es {
			ids = append(ids, e.Name())
		}
		out = append(out, "runc containers: "+strings.Join(ids, " "))
	}
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, n.dataDir+"/") {
				out = append(out, "mount "+l)
			}
		}
	}
	ports, _ := os.ReadDir("/sys/class/net/" + n.bridge + "/brif")
	for _, p := range ports {
		out = append(out, "veth "+p.Name())
	}
	ipam, _ := os.ReadDir(filepath.Join(n.dataDir, "network", "ipam", n.netName))
	for _, e := range ipam {
		if net.ParseIP(e.Name()) != nil {
			out = append(out, "ip allocation "+e.Name())
		}
	}
	pods, _ := os.ReadDir(filepath.Join(n.dataDir, "pods"))
	for _, p := range pods {
		out = append(out, "pod dir "+p.Name())
	}
	return out
}

func testPod(name string, restart corev1.RestartPolicy, args ...string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{
			NodeName: "kubelet-test", RestartPolicy: restart,
			Containers: []corev1.Container{{
				Name: "main", Image: "navarch.io/testserver:1", Args: args,
				Env: []corev1.EnvVar{
					{Name: "GREETING", Value: "hello"},
					{Name: "MY_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
					{Name: "MY_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
					{Name: "COMBINED", Value: "$(GREETING)-$(MY_NAME)"},
				},
			}},
		},
	}
}

// createAndWait creates pod and returns it once a watch shows it in phase,
// with the time that took.
func (n *testNode) createAndWait(pod *corev1.Pod, phase corev1.PodPhase) (*corev1.Pod, time.Duration) {
	t := n.t
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w, err := n.client.CoreV1().Pods(pod.Namespace).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + pod.Name})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	start := time.Now()
	if _, err := n.client.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var last *corev1.Pod
	for ev := range w.ResultChan() {
		if p, ok := ev.Object.(*corev1.Pod); ok {
			last = p
			if p.Status.Phase == phase {
				return p, time.Since(start)
			}
		}
	}
	t.Fatalf("pod %s did not reach %s; last seen: %+v", pod.Name, phase, last.Status)
	return nil, 0
}

func httpGet(url string) (string, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// deleteAndWait deletes the pod and returns the last status the kubelet
// posted before the object went away.
func (n *testNode) deleteAndWait(name string) *corev1.Pod {
	t := n.t
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w, err := n.client.CoreV1().Pods("default").Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + name})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if err := n.client.CoreV1().Pods("default").Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	var last *corev1.Pod
	for ev := range w.ResultChan() {
		p, ok := ev.Object.(*corev1.Pod)
		if !ok {
			continue
		}
		if ev.Type == watch.Deleted {
			if _, err := n.client.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				t.Fatalf("pod %s after its DELETED event: %v", name, err)
			}
			return last
		}
		last = p
	}
	t.Fatalf("pod %s was not deleted; last seen: %+v", name, last)
	return nil
}

func TestKubeletRunsPods(t *testing.T) {
	n := startNode(t)
	ctx := context.Background()
	// A Service, so that containers get its env vars (its IP given: the
	// test API server allocates none; created before the
	// node is ready, so the kubelet knows it when the pods come).
	svc, err := n.client.CoreV1().Services("default").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "my-svc"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.43.0.77", Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	apiservertest.Eventually(t, 20*time.Second, "node ready", func() error {
		node, err := n.client.CoreV1().Nodes().Get(ctx, n.node, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("conditions %+v", node.Status.Conditions)
	})
	node, _ := n.client.CoreV1().Nodes().Get(ctx, n.node, metav1.GetOptions{})
	if node.Status.Capacity.Cpu().IsZero() || node.Status.Capacity.Memory().IsZero() || node.Status.Capacity.StorageEphemeral().IsZero() || node.Status.Capacity.Pods().Value() != 110 {
		t.Errorf("node capacity %v", node.Status.Capacity)
	}
	if ni := node.Status.NodeInfo; !strings.HasPrefix(ni.ContainerRuntimeVersion, "navarch://") || ni.KernelVersion == "" || ni.OSImage == "" {
		t.Errorf("node info %+v", ni)
	}
	if len(node.Status.Addresses) != 2 || node.Status.Addresses[0].Type != corev1.NodeInternalIP {
		t.Errorf("node addresses %+v", node.Status.Addresses)
	}
	if _, err := n.client.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, n.node, metav1.GetOptions{}); err != nil {
		t.Errorf("node lease: %v", err)
	}

	// A server pod: Running, with an address of the node's CIDR, reachable
	// from the host, its env resolved.
	web, took := n.createAndWait(testPod("web", corev1.RestartPolicyAlways), corev1.PodRunning)
	t.Logf("pod web: create to Running %v", took)
	ip := net.ParseIP(web.Status.PodIP)
	if ip == nil || !n.subnet.Contains(ip) {
		t.Fatalf("pod IP %q not in %s", web.Status.PodIP, n.subnet)
	}
	cs := web.Status.ContainerStatuses
	if len(cs) != 1 || cs[0].State.Running == nil || !cs[0].Ready || !strings.HasPrefix(cs[0].ContainerID, "navarch://") || !strings.HasPrefix(cs[0].ImageID, "sha256:") {
		t.Errorf("container statuses %+v", cs)
	}
	conds := map[corev1.PodConditionType]corev1.ConditionStatus{}
	for _, c := range web.Status.Conditions {
		conds[c.Type] = c.Status
	}
	for _, c := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady} {
		if conds[c] != corev1.ConditionTrue {
			t.Errorf("condition %s = %q", c, conds[c])
		}
	}
	if web.Status.HostIP == "" || web.Status.StartTime == nil || web.Status.QOSClass != corev1.PodQOSBestEffort {
		t.Errorf("status: hostIP %q startTime %v qos %q", web.Status.HostIP, web.Status.StartTime, web.Status.QOSClass)
	}
	var body string
	apiservertest.Eventually(t, 10*time.Second, "GET /hostname", func() error {
		var err error
		body, err = httpGet("http://" + web.Status.PodIP + ":8080/hostname")
		return err
	})
	if strings.TrimSpace(body) != "web" {
		t.Errorf("/hostname = %q, want web", body)
	}
	env, err := httpGet("http://" + web.Status.PodIP + ":8080/env")
	if err != nil {
		t.Fatal(err)
	}
	svcIP := svc.Spec.ClusterIP
	for _, want := range []string{"GREETING=hello", "MY_NAME=web", "MY_IP=" + web.Status.PodIP, "COMBINED=hello-web",
		"MY_SVC_SERVICE_HOST=" + svcIP, "MY_SVC_SERVICE_PORT=80", "MY_SVC_SERVICE_PORT_HTTP=80", "MY_SVC_PORT=tcp://" + svcIP + ":80",
		"MY_SVC_PORT_80_TCP_ADDR=" + svcIP, "MY_SVC_PORT_80_TCP_PROTO=tcp"} {
		if !strings.Contains(env, want+"\n") {
			t.Errorf("env lacks %s:\n%s", want, env)
		}
	}

	apiservertest.Eventually(t, 10*time.Second, "events of pod web", func() error {
		evs, err := n.client.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, e := range evs.Items {
			if e.InvolvedObject.Name == "web" && e.InvolvedObject.FieldPath == "spec.containers{main}" && e.Source.Component == "kubelet" {
				seen[e.Reason] = true
			}
		}
		for _, r := range []string{"Pulled", "Created", "Started"} {
			if !seen[r] {
				return fmt.Errorf("no %s event; seen %v", r, seen)
			}
		}
		return nil
	})

	// A container that exits 3 under restartPolicy Never fails the pod.
	failed, _ := n.createAndWait(testPod("fail", corev1.RestartPolicyNever, "-exit-code", "3"), corev1.PodFailed)
	if cs := failed.Status.ContainerStatuses; len(cs) != 1 || cs[0].State.Terminated == nil || cs[0].State.Terminated.ExitCode != 3 || cs[0].State.Terminated.Reason != "Error" || cs[0].RestartCount != 0 {
		t.Errorf("failed pod's container statuses %+v", cs)
	}

	// Start-up latency of a few more pods, one at a time.
	var lat []time.Duration
	for i := 0; i < 3; i++ {
		_, d := n.createAndWait(testPod(fmt.Sprintf("lat-%d", i), corev1.RestartPolicyAlways), corev1.PodRunning)
		lat = append(lat, d)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	t.Logf("pod start latency (create to Running through a watch), sorted: %v", lat)

	// The kubelet restarted re-adopts the running pod: same container, no
	// restart.
	n.stopKubelet()
	n.startKubelet()
	time.Sleep(time.Second) // a few relists and syncs
	again, err := n.client.CoreV1().Pods("default").Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cs := again.Status.ContainerStatuses; len(cs) != 1 || cs[0].ContainerID != web.Status.ContainerStatuses[0].ContainerID || cs[0].RestartCount != 0 || cs[0].State.Running == nil {
		t.Errorf("after a kubelet restart: %+v, want the same running container %s", cs, web.Status.ContainerStatuses[0].ContainerID)
	}
	if b, err := httpGet("http://" + web.Status.PodIP + ":8080/hostname"); err != nil || strings.TrimSpace(b) != "web" {
		t.Errorf("after a kubelet restart, /hostname = %q, %v", b, err)
	}

	// Deletion: SIGTERM stops the server (it exits 0 at once), the kubelet
	// posts the final status and deletes the object.
	last := n.deleteAndWait("web")
	if last == nil || len(last.Status.ContainerStatuses) != 1 || last.Status.ContainerStatuses[0].State.Terminated == nil || last.Status.ContainerStatuses[0].State.Terminated.ExitCode != 0 {
		t.Errorf("last status before deletion: %+v", last)
	} else if last.Status.Phase != corev1.PodSucceeded {
		t.Errorf("deleted pod's final phase %q, want Succeeded", last.Status.Phase)
	}
	if last := n.deleteAndWait("fail"); last == nil || last.Status.Phase != corev1.PodFailed || len(last.Status.ContainerStatuses) != 1 ||
		last.Status.ContainerStatuses[0].State.Terminated == nil || last.Status.ContainerStatuses[0].State.Terminated.ExitCode != 3 {
		t.Errorf("failed pod's last status before deletion: %+v", last)
	}
	for _, name := range []string{"lat-0", "lat-1", "lat-2"} {
		n.deleteAndWait(name)
	}
	apiservertest.Eventually(t, 10*time.Second, "nothing left on the node", func() error {
		if l := n.leftovers(); len(l) > 0 {
			return fmt.Errorf("left: %v", l)
		}
		return nil
	})
}

func busyboxPod(name string, restart corev1.RestartPolicy, script string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{NodeName: "kubelet-test", RestartPolicy: restart,
			Containers: []corev1.Container{{Name: "main", Image: "navarch.io/busybox:1", Command: []string{"sh", "-c", script}}}},
	}
}

// logText is the messages of a CRI log file, one a line.
func logText(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		// <time> <stream> <P|F> <message>
		if f := strings.SplitN(l, " ", 4); len(f) == 4 {
			out = append(out, f[3])
		}
	}
	return strings.Join(out, "\n")
}

func TestKubeletLifecycle(t *testing.T) {
	n := startNode(t)
	if _, err := n.builtin.Store.Get("navarch.io/busybox:1"); err != nil {
		t.Skip("no busybox image (install busybox-static)")
	}
	ctx := context.Background()
	if _, err := n.client.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cfg"},
		Data: map[string]string{"greeting": "hello", "other": "x"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.client.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "sec"},
		Data: map[string][]byte{"password": []byte("s3cret")}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// Init containers run in order, each to completion, before the main
	// container, which sees configMap, secret, downwardAPI and emptyDir
	// volumes and env from keys and envFrom.
	pod := busyboxPod("vols", corev1.RestartPolicyNever,
		`cat /work/order; echo "cm=$(cat /cfg/greeting) sec=$(cat /sec/password) name=$(cat /info/name)"; echo "env=$FROM_CM,$FROM_SEC,$P_greeting"; ls /cfg; echo "fs=$(stat -f -c %T /mem),$(stat -f -c %T /sec)"`)
	pod.Spec.Volumes = []corev1.Volume{
		{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}},
		{Name: "sec", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "sec"}}},
		{Name: "info", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
			{Path: "name", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}}}},
		{Name: "work", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: "mem", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}},
	}
	mounts := []corev1.VolumeMount{{Name: "cfg", MountPath: "/cfg"}, {Name: "sec", MountPath: "/sec"}, {Name: "info", MountPath: "/info"}, {Name: "work", MountPath: "/work"}, {Name: "mem", MountPath: "/mem"}}
	pod.Spec.Containers[0].VolumeMounts = mounts
	pod.Spec.Containers[0].Env = []corev1.EnvVar{
		{Name: "FROM_CM", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "greeting"}}},
		{Name: "FROM_SEC", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "sec"}, Key: "password"}}},
	}
	pod.Spec.Containers[0].EnvFrom = []corev1.EnvFromSource{{Prefix: "P_", ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}}
	pod.Spec.InitContainers = []corev1.Container{
		{Name: "first", Image: "navarch.io/busybox:1", Command: []string{"sh", "-c", "sleep 0.3; echo first > /work/order"}, VolumeMounts: mounts},
		{Name: "second", Image: "navarch.io/busybox:1", Command: []string{"sh", "-c", "echo second >> /work/order"}, VolumeMounts: mounts},
	}
	done, _ := n.createAndWait(pod, corev1.PodSucceeded)
	for i, cs := range done.Status.InitContainerStatuses {
		if cs.State.Terminated == nil || cs.State.Terminated.Reason != "Completed" || cs.Name != pod.Spec.InitContainers[i].Name {
			t.Errorf("init container status %+v", cs)
		}
	}
	if cs := done.Status.ContainerStatuses; len(cs) != 1 || cs[0].State.Terminated == nil || cs[0].State.Terminated.Reason != "Completed" {
		t.Errorf("container statuses %+v", cs)
	}
	got := logText(t, filepath.Join(n.dataDir, "pods", string(done.UID), "logs", "main", "0.log"))
	want := "first\nsecond\ncm=hello sec=s3cret name=vols\nenv=hello,s3cret,hello\ngreeting\nother\nfs=tmpfs,tmpfs"
	if got != want {
		t.Errorf("output of the main container:\n%s\nwant:\n%s", got, want)
	}

	// Hooks: postStart runs after the start, preStop before the stop;
	// both write to a hostPath volume the test reads.
	hostDir := t.TempDir()
	hooks := busyboxPod("hooks", corev1.RestartPolicyAlways, "trap 'exit 0' TERM; while true; do sleep 0.1; done")
	hooks.Spec.Volumes = []corev1.Volume{{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: hostDir}}}}
	hooks.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "host", MountPath: "/host"}}
	hooks.Spec.Containers[0].Lifecycle = &corev1.Lifecycle{
		PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"sh", "-c", "echo started > /host/poststart"}}},
		PreStop:   &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"sh", "-c", "echo stopping > /host/prestop"}}},
	}
	n.createAndWait(hooks, corev1.PodRunning)
	apiservertest.Eventually(t, 10*time.Second, "postStart hook", func() error {
		_, err := os.Stat(filepath.Join(hostDir, "poststart"))
		return err
	})
	if _, err := os.Stat(filepath.Join(hostDir, "prestop")); err == nil {
		t.Error("preStop ran before the deletion")
	}
	last := n.deleteAndWait("hooks")
	if b, err := os.ReadFile(filepath.Join(hostDir, "prestop")); err != nil || string(b) != "stopping\n" {
		t.Errorf("preStop hook: %q, %v", b, err)
	}
	if cs := last.Status.ContainerStatuses; len(cs) != 1 || cs[0].State.Terminated == nil || cs[0].State.Terminated.ExitCode != 0 {
		t.Errorf("hooks pod's last status: %+v", last.Status)
	}

	// A memory limit exceeded: OOMKilled.
	oom := testPod("oom", corev1.RestartPolicyNever)
	oom.Spec.Containers[0].Env = append(oom.Spec.Containers[0].Env, corev1.EnvVar{Name: "ALLOC_MIB", Value: "64"})
	oom.Spec.Containers[0].Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("32Mi")}
	oomed, _ := n.createAndWait(oom, corev1.PodFailed)
	if cs := oomed.Status.ContainerStatuses; len(cs) != 1 || cs[0].State.Terminated == nil || cs[0].State.Terminated.Reason != "OOMKilled" || cs[0].State.Terminated.ExitCode != 137 {
		t.Errorf("oom pod's container statuses %+v", cs)
	}
	if oomed.Status.QOSClass != corev1.PodQOSBurstable {
		t.Errorf("oom pod's QoS class %q, want Burstable", oomed.Status.QOSClass)
	}

	// A sidecar (restartable init container) starts before the init
	// containers after it, once its startup probe passed, keeps running
	// beside the main container, and does not keep the pod from finishing.
	side := busyboxPod("sidecar", corev1.RestartPolicyNever, "test -f /work/side && sleep 0.5")
	side.Spec.Volumes = []corev1.Volume{{Name: "work", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	work := []corev1.VolumeMount{{Name: "work", MountPath: "/work"}}
	side.Spec.Containers[0].VolumeMounts = work
	always := corev1.ContainerRestartPolicyAlways
	side.Spec.InitContainers = []corev1.Container{
		{Name: "side", Image: "navarch.io/busybox:1", RestartPolicy: &always, VolumeMounts: work,
			Command: []string{"sh", "-c", "trap 'exit 0' TERM; sleep 0.5; touch /work/side; while true; do sleep 0.1; done"},
			StartupProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"test", "-f", "/work/side"}}},
				PeriodSeconds: 1, FailureThreshold: 30}},
		{Name: "after", Image: "navarch.io/busybox:1", Command: []string{"test", "-f", "/work/side"}, VolumeMounts: work},
	}
	finished, _ := n.createAndWait(side, corev1.PodSucceeded)
	if ics := finished.Status.InitContainerStatuses; len(ics) != 2 || ics[1].State.Terminated == nil || ics[1].State.Terminated.ExitCode != 0 {
		t.Errorf("sidecar pod's init container statuses %+v", ics)
	}

	// activeDeadlineSeconds: the pod is failed once it passed.
	deadline := testPod("deadline", corev1.RestartPolicyAlways)
	deadline.Spec.ActiveDeadlineSeconds = ptrTo(int64(1))
	late, _ := n.createAndWait(deadline, corev1.PodFailed)
	if late.Status.Reason != "DeadlineExceeded" || len(late.Status.ContainerStatuses) != 1 || late.Status.ContainerStatuses[0].State.Terminated == nil {
		t.Errorf("deadline pod's status %+v", late.Status)
	}

	// A crash loop: restarts with back-off, CrashLoopBackOff in between,
	// the last exit as lastState.
	n.createAndWait(busyboxPod("crash", corev1.RestartPolicyAlways, "exit 1"), corev1.PodRunning)
	sawBackoff := false
	apiservertest.Eventually(t, 20*time.Second, "crash loop", func() error {
		p, err := n.client.CoreV1().Pods("default").Get(ctx, "crash", metav1.GetOptions{})
		if err != nil {
			return err
		}
		cs := p.Status.ContainerStatuses[0]
		if w := cs.State.Waiting; w != nil && w.Reason == "CrashLoopBackOff" {
			sawBackoff = true
		}
		if cs.RestartCount < 2 || !sawBackoff {
			return fmt.Errorf("restarts %d, seen CrashLoopBackOff %v: %+v", cs.RestartCount, sawBackoff, cs)
		}
		if lt := cs.LastTerminationState.Terminated; lt == nil || lt.ExitCode != 1 || lt.Reason != "Error" {
			return fmt.Errorf("lastState %+v", cs.LastTerminationState)
		}
		return nil
	})

	// An image that cannot be pulled.
	bad := busyboxPod("pullfail", corev1.RestartPolicyAlways, "true")
	bad.Spec.Containers[0].Image = "127.0.0.1:1/nope:1"
	if _, err := n.client.CoreV1().Pods("default").Create(ctx, bad, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	apiservertest.Eventually(t, 20*time.Second, "image pull failure", func() error {
		p, err := n.client.CoreV1().Pods("default").Get(ctx, "pullfail", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(p.Status.ContainerStatuses) == 1 && p.Status.Phase == corev1.PodPending {
			if w := p.Status.ContainerStatuses[0].State.Waiting; w != nil && (w.Reason == "ErrImagePull" || w.Reason == "ImagePullBackOff") {
				return nil
			}
		}
		return fmt.Errorf("status %+v", p.Status)
	})

	for _, name := range []string{"vols", "oom", "sidecar", "deadline", "crash", "pullfail"} {
		n.deleteAndWait(name)
	}
	apiservertest.Eventually(t, 10*time.Second, "nothing left on the node", func() error {
		if l := n.leftovers(); len(l) > 0 {
			return fmt.Errorf("left: %v", l)
		}
		return nil
	})
}

// podReady is the pod's Ready condition.
func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func TestKubeletProbes(t *testing.T) {
	n := startNode(t)
	ctx := context.Background()
	httpProbe := func(failures int32) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}},
			PeriodSeconds: 1, TimeoutSeconds: 1, SuccessThreshold: 1, FailureThreshold: failures}
	}
	pod := testPod("probed", corev1.RestartPolicyAlways)
	c := &pod.Spec.Containers[0]
	c.Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}
	c.StartupProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}},
		PeriodSeconds: 1, TimeoutSeconds: 1, SuccessThreshold: 1, FailureThreshold: 10}
	c.ReadinessProbe = httpProbe(1)
	c.LivenessProbe = httpProbe(3)
	running, _ := n.createAndWait(pod, corev1.PodRunning)
	if podReady(running) {
		t.Errorf("pod ready before its readiness probe succeeded: %+v", running.Status)
	}
	get := func() (*corev1.Pod, error) {
		return n.client.CoreV1().Pods("default").Get(ctx, "probed", metav1.GetOptions{})
	}
	apiservertest.Eventually(t, 15*time.Second, "ready through the probes", func() error {
		p, err := get()
		if err != nil {
			return err
		}
		if !podReady(p) || !*p.Status.ContainerStatuses[0].Started {
			return fmt.Errorf("not ready: %+v", p.Status.ContainerStatuses)
		}
		return nil
	})
	// /healthz fails: readiness drops at once, liveness restarts the
	// container after three failures, and the new one is ready again.
	resp, err := http.Post("http://"+running.Status.PodIP+":8080/fail", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	sawUnready := false
	apiservertest.Eventually(t, 20*time.Second, "liveness restart", func() error {
		p, err := get()
		if err != nil {
			return err
		}
		if !podReady(p) {
			sawUnready = true
		}
		cs := p.Status.ContainerStatuses[0]
		if !sawUnready || cs.RestartCount != 1 || !podReady(p) {
			return fmt.Errorf("seen unready %v, restarts %d, ready %v", sawUnready, cs.RestartCount, podReady(p))
		}
		return nil
	})

	// An exec readiness probe, run in the container through the CRI.
	if _, err := n.builtin.Store.Get("navarch.io/busybox:1"); err == nil {
		ex := busyboxPod("exec", corev1.RestartPolicyAlways, "sleep 1; touch /tmp/ready; exec sleep 3600")
		ex.Spec.Containers[0].ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"test", "-f", "/tmp/ready"}}},
			PeriodSeconds: 1, TimeoutSeconds: 1, SuccessThreshold: 1, FailureThreshold: 1}
		ex.Spec.TerminationGracePeriodSeconds = new(int64) // sleep ignores SIGTERM
		n.createAndWait(ex, corev1.PodRunning)
		apiservertest.Eventually(t, 15*time.Second, "exec probe ready", func() error {
			p, err := n.client.CoreV1().Pods("default").Get(ctx, "exec", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if !podReady(p) {
				return fmt.Errorf("not ready: %+v", p.Status.Conditions)
			}
			return nil
		})
		n.deleteAndWait("exec")

		// Image garbage collection (thresholds at 1%: everything unused
		// goes) removes busybox, no longer used, and keeps the testserver.
		// The pod, of grace period 0, left the API at once: wait for the
		// kubelet to remove its containers.
		apiservertest.Eventually(t, 10*time.Second, "exec pod removed", func() error {
			sbs, err := n.builtin.Runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{labelPodName: "exec"}}})
			if err != nil || len(sbs.Items) > 0 {
				return fmt.Errorf("sandboxes %v, %v", sbs, err)
			}
			return nil
		})
		if freed, err := n.kubelet.imageGC(ctx); err == nil {
			t.Error("image GC met a 1% threshold")
		} else {
			t.Logf("image GC freed %d bytes: %v", freed, err)
		}
		if _, err := n.builtin.Store.Get("navarch.io/busybox:1"); !errors.Is(err, images.ErrNotFound) {
			t.Errorf("unused busybox image after GC: %v", err)
		}
		if _, err := n.builtin.Store.Get("navarch.io/testserver:1"); err != nil {
			t.Errorf("testserver image, in use, after GC: %v", err)
		}
	}
	n.deleteAndWait("probed")
	apiservertest.Eventually(t, 10*time.Second, "nothing left on the node", func() error {
		if l := n.leftovers(); len(l) > 0 {
			return fmt.Errorf("left: %v", l)
		}
		return nil
	})
}

// TestKubeletStartLatency measures pod start-up latency (create to Running
// as seen through a watch), one pod at a time and 20 at a time. It runs
// only with NAVARCH_KUBELET_PODS=N (pods per round) and asserts nothing
// about time: it prints the numbers.
func TestKubeletStartLatency(t *testing.T) {
	var pods int
	if _, err := fmt.Sscan(os.Getenv("NAVARCH_KUBELET_PODS"), &pods); err != nil || pods < 1 {
		t.Skip("set NAVARCH_KUBELET_PODS=N to measure pod start-up latency")
	}
	n := startNode(t)
	ctx := context.Background()
	for _, parallel := range []int{1, 20} {
		w, err := n.client.CoreV1().Pods("default").Watch(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		created := make(map[string]time.Time, pods)
		var lat []time.Duration
		sem := make(chan struct{}, parallel)
		errs := make(chan error, pods)
		createdAt := make(chan [2]any, pods)
		go func() {
			for i := 0; i < pods; i++ {
				sem <- struct{}{}
				go func(i int) {
					name := fmt.Sprintf("p%d-%d", parallel, i)
					start := time.Now()
					_, err := n.client.CoreV1().Pods("default").Create(ctx, testPod(name, corev1.RestartPolicyAlways), metav1.CreateOptions{})
					errs <- err
					createdAt <- [2]any{name, start}
				}(i)
			}
		}()
		running := map[string]time.Time{}
		for len(lat) < pods {
			select {
			case c := <-createdAt:
				created[c[0].(string)] = c[1].(time.Time)
				if r, ok := running[c[0].(string)]; ok {
					lat = append(lat, r.Sub(c[1].(time.Time)))
				}
			case err := <-errs:
				if err != nil {
					t.Fatal(err)
				}
			case ev := <-w.ResultChan():
				p, ok := ev.Object.(*corev1.Pod)
				if !ok || p.Status.Phase != corev1.PodRunning {
					continue
				}
				if _, seen := running[p.Name]; seen {
					continue
				}
				running[p.Name] = time.Now()
				<-sem
				if c, ok := created[p.Name]; ok {
					lat = append(lat, running[p.Name].Sub(c))
				}
			case <-time.After(60 * time.Second):
				t.Fatalf("%d of %d pods running", len(running), pods)
			}
		}
		w.Stop()
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		pct := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))] }
		t.Logf("%d pods, %d at a time: p50 %v, p90 %v, p99 %v, max %v", pods, parallel, pct(0.5), pct(0.9), pct(0.99), lat[len(lat)-1])
		var wg sync.WaitGroup
		for name := range running {
			wg.Add(1)
			go func(name string) {
				defer wg.Done()
				_ = n.client.CoreV1().Pods("default").Delete(ctx, name, metav1.DeleteOptions{})
			}(name)
		}
		wg.Wait()
		apiservertest.Eventually(t, 60*time.Second, "pods deleted", func() error {
			l, err := n.client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
			if err != nil || len(l.Items) > 0 {
				return fmt.Errorf("%d pods left, %v", len(l.Items), err)
			}
			return nil
		})
	}
	apiservertest.Eventually(t, 20*time.Second, "nothing left on the node", func() error {
		if l := n.leftovers(); len(l) > 0 {
			return fmt.Errorf("left: %d things, e.g. %v", len(l), l[0])
		}
		return nil
	})
}

func TestKubeletDrain(t *testing.T) {
	n := startNode(t)
	ctx := context.Background()
	n.createAndWait(testPod("drained", corev1.RestartPolicyAlways), corev1.PodRunning)
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := n.kubelet.Drain(dctx); err != nil {
		t.Fatal(err)
	}
	node, err := n.client.CoreV1().Nodes().Get(ctx, n.node, metav1.GetOptions{})
	if err != nil || !node.Spec.Unschedulable {
		t.Errorf("node after drain: unschedulable %v, %v", node.Spec.Unschedulable, err)
	}
	if _, err := n.client.CoreV1().Pods("default").Get(ctx, "drained", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("pod after drain: %v", err)
	}
	apiservertest.Eventually(t, 10*time.Second, "nothing left on the node", func() error {
		if l := n.leftovers(); len(l) > 0 {
			return fmt.Errorf("left: %v", l)
		}
		return nil
	})
}
