package kubelet

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/navarch/navarch/controlplane/apiserver/apiservertest"
)

func TestOOMScoreAdj(t *testing.T) {
	const gi = int64(1 << 30)
	burstable := func(memRequest string) (*corev1.Pod, *corev1.Container) {
		p := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c",
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse(memRequest)}}}}}}
		return p, &p.Spec.Containers[0]
	}
	guaranteed := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Resources: corev1.ResourceRequirements{
		Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("1Gi")}}}}}}
	besteffort := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c"}}}}
	critical := besteffort.DeepCopy()
	critical.Spec.Priority = ptrTo(int32(systemCriticalPriority))
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		c    *corev1.Container
		want int64
	}{
		{"guaranteed", guaranteed, &guaranteed.Spec.Containers[0], -997},
		{"besteffort", besteffort, &besteffort.Spec.Containers[0], 1000},
		{"critical", critical, &critical.Spec.Containers[0], -997},
	} {
		if got := oomScoreAdj(tc.pod, tc.c, 4*gi); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
	for req, want := range map[string]int64{
		"1Gi": 750, // a quarter of the node's memory
		"4Gi": 3,   // all of it: still above Guaranteed
		"8Gi": 3,
		"1":   999, // next to nothing: still below BestEffort
	} {
		p, c := burstable(req)
		if got := oomScoreAdj(p, c, 4*gi); got != want {
			t.Errorf("burstable requesting %s of 4Gi: %d, want %d", req, got, want)
		}
	}
}

func TestEffectiveResources(t *testing.T) {
	res := func(cpuReq, cpuLim, memLim string) corev1.ResourceRequirements {
		r := corev1.ResourceRequirements{Requests: corev1.ResourceList{}, Limits: corev1.ResourceList{}}
		if cpuReq != "" {
			r.Requests[corev1.ResourceCPU] = resource.MustParse(cpuReq)
		}
		if cpuLim != "" {
			r.Limits[corev1.ResourceCPU] = resource.MustParse(cpuLim)
		}
		if memLim != "" {
			r.Limits[corev1.ResourceMemory] = resource.MustParse(memLim)
		}
		return r
	}
	pod := &corev1.Pod{Spec: corev1.PodSpec{
		InitContainers: []corev1.Container{{Name: "init", Resources: res("2", "2", "1Gi")}},
		Containers:     []corev1.Container{{Name: "a", Resources: res("250m", "500m", "64Mi")}, {Name: "b", Resources: res("", "300m", "32Mi")}},
	}}
	got := effectiveResources(pod)
	// The init container asks more than the app containers together.
	if got.cpuRequestMilli != 2000 || got.cpuLimitMilli != 2000 || got.memoryLimit != 1<<30 || !got.cpuLimited || !got.memoryLimited {
		t.Errorf("with a big init container: %+v", got)
	}
	pod.Spec.InitContainers = nil
	got = effectiveResources(pod)
	if got.cpuRequestMilli != 550 || got.cpuLimitMilli != 800 || got.memoryLimit != 96<<20 {
		t.Errorf("sums: %+v", got)
	}
	pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: "free"})
	if got = effectiveResources(pod); got.cpuLimited || got.memoryLimited {
		t.Errorf("a container without limits leaves the pod unlimited: %+v", got)
	}
}

// readCgroup reads a controller file of a cgroup (v1 path).
func readCgroup(t *testing.T, controller, path, file string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", controller, path, file))
	if err != nil {
		t.Errorf("cgroup %s: %v", path, err)
	}
	return strings.TrimSpace(string(b))
}

// TestKubeletPodCgroupsAndSecurity runs pods of each QoS class and with
// securityContext settings, and reads back what the kernel applied.
func TestKubeletPodCgroupsAndSecurity(t *testing.T) {
	n := startNode(t)
	if _, err := n.builtin.Store.Get("navarch.io/busybox:1"); err != nil {
		t.Skip("no busybox image (install busybox-static)")
	}
	ctx := context.Background()
	// Restarted with a pids limit once registered (a kubelet stopped while
	// it creates the Node would race its successor's registration).
	apiservertest.Eventually(t, 20*time.Second, "node registered", func() error {
		_, err := n.client.CoreV1().Nodes().Get(ctx, n.node, metav1.GetOptions{})
		return err
	})
	n.stopKubelet()
	n.podMaxPids = 64
	n.startKubelet()
	sleeper := func(name string, r corev1.ResourceRequirements) *corev1.Pod {
		p := busyboxPod(name, corev1.RestartPolicyAlways, "exec sleep 3600")
		p.Spec.TerminationGracePeriodSeconds = new(int64)
		p.Spec.Containers[0].Resources = r
		return p
	}
	limits := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m"), corev1.ResourceMemory: resource.MustParse("48Mi")}
	g, _ := n.createAndWait(sleeper("guaranteed", corev1.ResourceRequirements{Limits: limits, Requests: limits}), corev1.PodRunning)
	b, _ := n.createAndWait(sleeper("burstable", corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("16Mi")}}), corev1.PodRunning)
	be, _ := n.createAndWait(sleeper("besteffort", corev1.ResourceRequirements{}), corev1.PodRunning)

	kubepods := filepath.Join(n.cgroupRoot, "kubepods")
	own, _ := os.ReadFile("/proc/self/oom_score_adj")
	ownAdj, _ := strconv.Atoi(strings.TrimSpace(string(own)))
	for _, tc := range []struct {
		pod    *corev1.Pod
		qos    corev1.PodQOSClass
		cgroup string
		shares string
		quota  string
		memory string // "" unlimited
		oom    int64
	}{
		{g, corev1.PodQOSGuaranteed, filepath.Join(kubepods, "pod"+string(g.UID)), "256", "25000", fmt.Sprint(48 << 20), -997},
		{b, corev1.PodQOSBurstable, filepath.Join(kubepods, "burstable", "pod"+string(b.UID)), "102", "-1", "", oomScoreAdj(b, &b.Spec.Containers[0], memTotal())},
		{be, corev1.PodQOSBestEffort, filepath.Join(kubepods, "besteffort", "pod"+string(be.UID)), "2", "-1", "", 1000},
	} {
		if tc.pod.Status.QOSClass != tc.qos {
			t.Errorf("%s: QoS class %q", tc.pod.Name, tc.pod.Status.QOSClass)
		}
		if got := readCgroup(t, "cpu", tc.cgroup, "cpu.shares"); got != tc.shares {
			t.Errorf("%s: pod cpu.shares %s, want %s", tc.pod.Name, got, tc.shares)
		}
		if got := readCgroup(t, "cpu", tc.cgroup, "cpu.cfs_quota_us"); got != tc.quota {
			t.Errorf("%s: pod cpu.cfs_quota_us %s, want %s", tc.pod.Name, got, tc.quota)
		}
		if got := readCgroup(t, "pids", tc.cgroup, "pids.max"); got != "64" {
			t.Errorf("%s: pod pids.max %s, want 64", tc.pod.Name, got)
		}
		mem := readCgroup(t, "memory", tc.cgroup, "memory.limit_in_bytes")
		if lim, _ := strconv.ParseInt(mem, 10, 64); tc.memory != "" && mem != tc.memory || tc.memory == "" && lim < 1<<50 {
			t.Errorf("%s: pod memory.limit_in_bytes %s, want %q", tc.pod.Name, mem, tc.memory)
		}
		// The container runs inside the pod's cgroup, in every hierarchy.
		cid := strings.TrimPrefix(tc.pod.Status.ContainerStatuses[0].ContainerID, "navarch://")
		for _, ctl := range []string{"cpu", "memory", "pids"} {
			if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", ctl, tc.cgroup, cid)); err != nil {
				t.Errorf("%s: container cgroup: %v", tc.pod.Name, err)
			}
		}
		// A container's memory limit allows no swap beyond it.
		if _, err := os.Stat("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"); err == nil && tc.memory != "" {
			if got := readCgroup(t, "memory", filepath.Join(tc.cgroup, cid), "memory.memsw.limit_in_bytes"); got != tc.memory {
				t.Errorf("%s: container memory.memsw.limit_in_bytes %s, want %s", tc.pod.Name, got, tc.memory)
			}
		}
		// oom_score_adj of the class, as far as the runtime may lower it
		// (without CAP_SYS_RESOURCE, not below its own score).
		pids := strings.Fields(readCgroup(t, "memory", filepath.Join(tc.cgroup, cid), "cgroup.procs"))
		if len(pids) == 0 {
			t.Errorf("%s: no process in the container's cgroup", tc.pod.Name)
			continue
		}
		adj, _ := os.ReadFile("/proc/" + pids[0] + "/oom_score_adj")
		if got, w := strings.TrimSpace(string(adj)), max(tc.oom, int64(ownAdj)); got != strconv.FormatInt(tc.oom, 10) && got != strconv.FormatInt(w, 10) {
			t.Errorf("%s: oom_score_adj %s, want %d (or %d, the runtime's own floor)", tc.pod.Name, got, tc.oom, w)
		}
	}
	if got, want := readCgroup(t, "cpu", kubepods, "cpu.shares"), fmt.Sprint(1024*goruntime.NumCPU()); got != want {
		t.Errorf("kubepods cpu.shares %s, want %s (the node's cpus)", got, want)
	}
	if got := readCgroup(t, "cpu", filepath.Join(kubepods, "besteffort"), "cpu.shares"); got != "2" {
		t.Errorf("besteffort cpu.shares %s, want 2", got)
	}
	if got := readCgroup(t, "cpu", filepath.Join(kubepods, "burstable"), "cpu.shares"); got != "102" {
		t.Errorf("burstable cpu.shares %s, want 102 (the burstable pod's 100m)", got)
	}
	// The security context, as the container sees it.
	sec := busyboxPod("secure", corev1.RestartPolicyNever,
		"id; grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; touch /x 2>/dev/null && echo root-rw || echo root-ro")
	no := false
	sec.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: ptrTo(int64(1000)), RunAsGroup: ptrTo(int64(3000)),
		SupplementalGroups: []int64{4000}, FSGroup: ptrTo(int64(2000)), SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}}
	sec.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{AllowPrivilegeEscalation: &no, ReadOnlyRootFilesystem: ptrTo(true),
		Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"NET_BIND_SERVICE"}}}
	done, _ := n.createAndWait(sec, corev1.PodSucceeded)
	got := logText(t, filepath.Join(n.dataDir, "pods", string(done.UID), "logs", "main", "0.log"))
	// CAP_NET_BIND_SERVICE is bit 10, but a non-root process's effective
	// set is empty after exec without ambient capabilities, as upstream.
	want := "uid=1000 gid=3000 groups=2000,4000\nCapEff:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t2\nroot-ro"
	if got != want {
		t.Errorf("secure pod saw:\n%s\nwant:\n%s", got, want)
	}
	// Root with the same settings keeps the capability it added.
	rootSec := busyboxPod("secure-root", corev1.RestartPolicyNever, "grep -E '^CapEff:' /proc/self/status")
	rootSec.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"NET_BIND_SERVICE"}}}
	done, _ = n.createAndWait(rootSec, corev1.PodSucceeded)
	if got := logText(t, filepath.Join(n.dataDir, "pods", string(done.UID), "logs", "main", "0.log")); got != "CapEff:\t0000000000000400" {
		t.Errorf("root with drop ALL, add NET_BIND_SERVICE: %q", got)
	}

	// runAsNonRoot with an image that runs as root: refused with
	// upstream's message, the container waiting in CreateContainerConfigError.
	nonRoot := busyboxPod("nonroot", corev1.RestartPolicyAlways, "true")
	nonRoot.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsNonRoot: ptrTo(true)}
	if _, err := n.client.CoreV1().Pods("default").Create(ctx, nonRoot, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	apiservertest.Eventually(t, 20*time.Second, "runAsNonRoot refused", func() error {
		p, err := n.client.CoreV1().Pods("default").Get(ctx, "nonroot", metav1.GetOptions{})
		if err != nil {
			return err
		}
		wantMsg := fmt.Sprintf("container has runAsNonRoot and image will run as root (pod: %q, container: main)", "nonroot_default("+string(p.UID)+")")
		if cs := p.Status.ContainerStatuses; len(cs) == 1 && cs[0].State.Waiting != nil &&
			cs[0].State.Waiting.Reason == "CreateContainerConfigError" && cs[0].State.Waiting.Message == wantMsg {
			return nil
		}
		return fmt.Errorf("status %+v", p.Status.ContainerStatuses)
	})
	// With a non-root runAsUser the same pod runs.
	okPod := busyboxPod("nonroot-ok", corev1.RestartPolicyNever, "id -u")
	okPod.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsNonRoot: ptrTo(true), RunAsUser: ptrTo(int64(1001))}
	n.createAndWait(okPod, corev1.PodSucceeded)

	// hostNetwork, hostPID and hostIPC: the host's namespaces.
	host := busyboxPod("hostns", corev1.RestartPolicyNever, "readlink /proc/self/ns/net; readlink /proc/self/ns/pid; readlink /proc/self/ns/ipc")
	host.Spec.HostNetwork, host.Spec.HostPID, host.Spec.HostIPC = true, true, true
	done, _ = n.createAndWait(host, corev1.PodSucceeded)
	var hostNS []string
	for _, ns := range []string{"net", "pid", "ipc"} {
		l, _ := os.Readlink("/proc/self/ns/" + ns)
		hostNS = append(hostNS, l)
	}
	if got := logText(t, filepath.Join(n.dataDir, "pods", string(done.UID), "logs", "main", "0.log")); got != strings.Join(hostNS, "\n") {
		t.Errorf("host namespaces pod saw %q, want %q", got, hostNS)
	}

	for _, name := range []string{"guaranteed", "burstable", "besteffort", "secure", "secure-root", "nonroot", "nonroot-ok", "hostns"} {
		n.deleteAndWait(name)
	}
	apiservertest.Eventually(t, 10*time.Second, "no pod cgroups left", func() error {
		for _, d := range []string{kubepods, filepath.Join(kubepods, "burstable"), filepath.Join(kubepods, "besteffort")} {
			ents, _ := os.ReadDir(filepath.Join("/sys/fs/cgroup/cpu", d))
			for _, e := range ents {
				if e.IsDir() && strings.HasPrefix(e.Name(), "pod") {
					return fmt.Errorf("cgroup %s/%s left", d, e.Name())
				}
			}
		}
		return nil
	})
}
