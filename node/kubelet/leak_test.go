package kubelet

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/navarch/navarch/controlplane/apiserver/apiservertest"
)

// nodeResources lists, by kind, what of the pods exists on the node: the
// things a pod makes and its deletion must take away.
func (n *testNode) nodeResources() map[string][]string {
	out := map[string][]string{}
	add := func(kind, what string) { out[kind] = append(out[kind], what) }
	// veths: the host ends on the test's bridge.
	ports, _ := os.ReadDir("/sys/class/net/" + n.bridge + "/brif")
	for _, p := range ports {
		add("veth", p.Name())
	}
	// Pinned namespaces and every mount under the data dir (overlay
	// roots, shm, tmpfs volumes, namespace files).
	nsFiles, _ := filepath.Glob(filepath.Join(n.dataDir, "runtime", "sandboxes", "*", "*ns"))
	for _, f := range nsFiles {
		add("netns file", f)
	}
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, n.dataDir) {
				add("mount", l)
			}
		}
	}
	// Cgroups below the QoS cgroups (which stay, as upstream's), in every
	// hierarchy.
	keep := map[string]bool{"kubepods": true, "kubepods/burstable": true, "kubepods/besteffort": true}
	hs, _ := cgroupMounts()
	for _, h := range hs {
		root := filepath.Join(h, n.cgroupRoot)
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err != nil || !d.IsDir() || p == root {
				return nil
			}
			if rel, _ := filepath.Rel(root, p); !keep[rel] {
				add("cgroup", p)
			}
			return nil
		})
	}
	// IP allocations of the built-in plugin's host-local style IPAM.
	ipam, _ := os.ReadDir(filepath.Join(n.dataDir, "network", "ipam", n.netName))
	for _, e := range ipam {
		if net.ParseIP(e.Name()) != nil {
			add("ip allocation", e.Name())
		}
	}
	// Shims and PID namespace holders: this test binary run as
	// `runtime-shim`; and any process in the test's cgroups.
	self, _ := os.Executable()
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		cmd, _ := os.ReadFile(p + "/cmdline")
		args := strings.Split(string(cmd), "\x00")
		if exe, _ := os.Readlink(p + "/exe"); exe == self && len(args) > 1 && args[1] == "runtime-shim" {
			add("shim", p+": "+strings.Join(args, " "))
		}
		if cg, _ := os.ReadFile(p + "/cgroup"); strings.Contains(string(cg), n.cgroupRoot+"/") {
			add("process in a pod cgroup", p+": "+strings.Join(args, " "))
		}
	}
	// libcni's cached results.
	_ = filepath.WalkDir(filepath.Join(n.dataDir, "network", "cache"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			add("cni cache file", p)
		}
		return nil
	})
	// runc's state, the runtime's records and the kubelet's pod dirs.
	for kind, dir := range map[string]string{
		"runc state": filepath.Join(n.dataDir, "runtime", "runc"),
		"sandbox":    filepath.Join(n.dataDir, "runtime", "sandboxes"),
		"container":  filepath.Join(n.dataDir, "runtime", "containers"),
		"pod dir":    filepath.Join(n.dataDir, "pods"),
	} {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			add(kind, e.Name())
		}
	}
	return out
}

// diffResources says what kinds differ between two counts.
func diffResources(before, after map[string][]string) error {
	var kinds []string
	for k := range after {
		kinds = append(kinds, k)
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			kinds = append(kinds, k)
		}
	}
	sort.Strings(kinds)
	var diffs []string
	for _, k := range kinds {
		if len(before[k]) != len(after[k]) {
			diffs = append(diffs, fmt.Sprintf("%s: %d before, %d now (%v)", k, len(before[k]), len(after[k]), after[k]))
		}
	}
	if len(diffs) > 0 {
		return fmt.Errorf("%s", strings.Join(diffs, "\n"))
	}
	return nil
}

// TestKubeletLeavesNoLeaks runs pods that exercise each path that makes
// something on the node (restarts, failed starts, init containers, a
// memory-backed emptyDir, a shared PID namespace, an OOM kill, host
// networking, each QoS class), deletes them, and checks that the node is
// back to where it started: no veth, netns, mount, cgroup, IP allocation,
// shim, runc state or pod directory left.
func TestKubeletLeavesNoLeaks(t *testing.T) {
	n := startNode(t)
	if _, err := n.builtin.Store.Get("navarch.io/busybox:1"); err != nil {
		t.Skip("no busybox image (install busybox-static)")
	}
	ctx := context.Background()
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
		return fmt.Errorf("not ready")
	})
	before := n.nodeResources()

	guaranteed := testPod("leak-guaranteed", corev1.RestartPolicyAlways)
	lim := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("64Mi")}
	guaranteed.Spec.Containers[0].Resources = corev1.ResourceRequirements{Limits: lim, Requests: lim}

	crash := busyboxPod("leak-crash", corev1.RestartPolicyAlways, "exit 1")

	badCmd := busyboxPod("leak-badcmd", corev1.RestartPolicyAlways, "")
	badCmd.Spec.Containers[0].Command = []string{"/no/such/binary"}

	noConfig := busyboxPod("leak-noconfig", corev1.RestartPolicyAlways, "true")
	noConfig.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "X", ValueFrom: &corev1.EnvVarSource{
		ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "absent"}, Key: "k"}}}}

	initPod := busyboxPod("leak-init", corev1.RestartPolicyAlways, "cat /cache/ready; trap 'exit 0' TERM; while true; do sleep 0.1; done")
	initPod.Spec.ShareProcessNamespace = ptrTo(true)
	initPod.Spec.Volumes = []corev1.Volume{{Name: "cache", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}}}
	initPod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "cache", MountPath: "/cache"}}
	initPod.Spec.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("8Mi")}
	initPod.Spec.InitContainers = []corev1.Container{{Name: "prepare", Image: "navarch.io/busybox:1",
		Command: []string{"sh", "-c", "echo ready > /cache/ready"}, VolumeMounts: initPod.Spec.Containers[0].VolumeMounts}}

	oom := testPod("leak-oom", corev1.RestartPolicyNever)
	oom.Spec.Containers[0].Env = append(oom.Spec.Containers[0].Env, corev1.EnvVar{Name: "ALLOC_MIB", Value: "64"})
	oom.Spec.Containers[0].Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("32Mi")}

	hostNet := busyboxPod("leak-hostnet", corev1.RestartPolicyAlways, "trap 'exit 0' TERM; while true; do sleep 0.1; done")
	hostNet.Spec.HostNetwork = true

	n.createAndWait(guaranteed, corev1.PodRunning)
	n.createAndWait(initPod, corev1.PodRunning)
	n.createAndWait(hostNet, corev1.PodRunning)
	oomed, _ := n.createAndWait(oom, corev1.PodFailed)
	// A finished pod's cgroup goes at once; its logs stay until deletion.
	apiservertest.Eventually(t, 10*time.Second, "finished pod's cgroup removed", func() error {
		if hs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/*", n.cgroupRoot, "kubepods", "burstable", "pod"+string(oomed.UID))); len(hs) > 0 {
			return fmt.Errorf("left: %v", hs)
		}
		return nil
	})
	for _, p := range []*corev1.Pod{crash, badCmd, noConfig} {
		if _, err := n.client.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitContainer := func(name, what string, ok func(cs corev1.ContainerStatus) bool) {
		t.Helper()
		apiservertest.Eventually(t, 30*time.Second, name+" "+what, func() error {
			p, err := n.client.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if cs := p.Status.ContainerStatuses; len(cs) == 1 && ok(cs[0]) {
				return nil
			}
			return fmt.Errorf("container statuses %+v", p.Status.ContainerStatuses)
		})
	}
	waitContainer("leak-crash", "restarted twice", func(cs corev1.ContainerStatus) bool { return cs.RestartCount >= 2 })
	waitContainer("leak-badcmd", "failing to start", func(cs corev1.ContainerStatus) bool {
		w := cs.State.Waiting
		return w != nil && (w.Reason == "CreateContainerError" || w.Reason == "RunContainerError" || w.Reason == "CrashLoopBackOff") ||
			cs.LastTerminationState.Terminated != nil
	})
	waitContainer("leak-noconfig", "refused its config", func(cs corev1.ContainerStatus) bool {
		return cs.State.Waiting != nil && cs.State.Waiting.Reason == "CreateContainerConfigError"
	})

	// While the pods exist, each counter sees them: the test would notice
	// a leak of any kind.
	during := n.nodeResources()
	counts := map[string]string{}
	for kind, l := range during {
		counts[kind] = fmt.Sprintf("%d (%d before)", len(l), len(before[kind]))
	}
	t.Logf("with the pods: %v", counts)
	for kind, least := range map[string]int{"veth": 5, "netns file": 15, "mount": 10, "cgroup": 7, "ip allocation": 5, "shim": 4, "process in a pod cgroup": 3, "runc state": 3, "sandbox": 7, "container": 6, "pod dir": 7, "cni cache file": 5} {
		if got := len(during[kind]) - len(before[kind]); got < least {
			t.Errorf("with the pods running, %d more %s than before, want at least %d: %v", got, kind, least, during[kind])
		}
	}

	// The shared PID namespace's holder counts against its pod.
	holderInPod := false
	for _, p := range during["process in a pod cgroup"] {
		holderInPod = holderInPod || strings.Contains(p, "runtime-shim pause")
	}
	if !holderInPod {
		t.Errorf("no PID namespace holder in a pod cgroup: %v", during["process in a pod cgroup"])
	}

	// Two pods go while the kubelet is down, removed from the API at once
	// (grace 0). The restarted kubelet finds the sandbox of the first
	// without a pod and tears it down; of the second, as if the kubelet had
	// stopped half-way through its removal, only the pod's directory and
	// cgroup are left, and it removes them.
	n.stopKubelet()
	for _, name := range []string{"leak-guaranteed", "leak-init"} {
		if err := n.client.CoreV1().Pods("default").Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
			t.Fatal(err)
		}
	}
	sbs, err := n.builtin.Runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{labelPodName: "leak-init"}}})
	if err != nil || len(sbs.Items) != 1 {
		t.Fatalf("sandboxes of leak-init: %v, %v", sbs, err)
	}
	if _, err := n.builtin.Runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sbs.Items[0].Id}); err != nil {
		t.Fatal(err)
	}
	n.startKubelet()
	for _, name := range []string{"leak-crash", "leak-badcmd", "leak-noconfig", "leak-oom", "leak-hostnet"} {
		n.deleteAndWait(name)
	}
	apiservertest.Eventually(t, 20*time.Second, "node back to where it started", func() error {
		return diffResources(before, n.nodeResources())
	})
}
