package kubelet

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	goruntime "runtime"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// This file owns the QoS and pod cgroups, laid out as upstream's kubelet
// does with the cgroupfs driver:
//
//	ROOT/kubepods/pod<uid>             Guaranteed pods
//	ROOT/kubepods/burstable/pod<uid>   Burstable pods
//	ROOT/kubepods/besteffort/pod<uid>  BestEffort pods
//
// The pod cgroup is the sandbox's CgroupParent, so the runtime puts each
// container below it, and it carries the pod's summed limits. The paths are
// the same in every hierarchy; only cgroup v1 controllers are written (the
// cgroup2 mount of a hybrid host, controller-less, just gets the
// directories runc expects).

// Upstream's oom_score_adj values.
const (
	guaranteedOOMScoreAdj = -997
	besteffortOOMScoreAdj = 1000
	// systemCriticalPriority is upstream's floor of critical pods' priority.
	systemCriticalPriority = 2000000000
)

// cgroupManager makes and removes the kubelet's cgroups.
type cgroupManager struct {
	// root is the cgroup (v1 path) holding kubepods, "/" by default.
	root string
	// hierarchies are the mount points of the cgroup hierarchies.
	hierarchies []string
	// maxPids is the pod's pids.max; <= 0 leaves it unlimited.
	maxPids int64
}

func newCgroupManager(root string, maxPids int64) (*cgroupManager, error) {
	if root == "" {
		root = "/"
	}
	hs, err := cgroupMounts()
	if err != nil {
		return nil, err
	}
	if len(hs) == 0 {
		return nil, errors.New("no cgroup hierarchy is mounted")
	}
	return &cgroupManager{root: filepath.Join("/", root), hierarchies: hs, maxPids: maxPids}, nil
}

// cgroupMounts lists the cgroup and cgroup2 mount points of this process's
// mount namespace.
func cgroupMounts() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint opts [optional...] - fstype source superopts
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+1 >= len(fields) || len(fields) < 5 {
			continue
		}
		if t := fields[sep+1]; t == "cgroup" || t == "cgroup2" {
			out = append(out, fields[4])
		}
	}
	return out, sc.Err()
}

// qosCgroup is the cgroup of pods of class qos.
func (m *cgroupManager) qosCgroup(qos corev1.PodQOSClass) string {
	base := filepath.Join(m.root, "kubepods")
	switch qos {
	case corev1.PodQOSBurstable:
		return filepath.Join(base, "burstable")
	case corev1.PodQOSBestEffort:
		return filepath.Join(base, "besteffort")
	}
	return base
}

// podCgroup is the pod's cgroup, the sandbox's CgroupParent.
func (m *cgroupManager) podCgroup(pod *corev1.Pod) string {
	return filepath.Join(m.qosCgroup(qosClass(pod)), "pod"+string(pod.UID))
}

// podResources sums a pod's effective requests and limits as upstream's
// pod cgroup does: the app containers' sum, or the largest init
// container's when that is larger; a limit counts only when every
// container has one.
type podResources struct {
	cpuRequestMilli, cpuLimitMilli, memoryLimit int64
	cpuLimited, memoryLimited                   bool
}

func effectiveResources(pod *corev1.Pod) podResources {
	r := podResources{cpuLimited: true, memoryLimited: true}
	var initCPUReq, initCPULim, initMem int64
	for _, c := range pod.Spec.InitContainers {
		if isSidecar(&c) {
			// Sidecars run beside the app containers: they add up.
			continue
		}
		initCPUReq = max(initCPUReq, cpuRequestMilli(&c))
		if l, ok := c.Resources.Limits[corev1.ResourceCPU]; ok {
			initCPULim = max(initCPULim, l.MilliValue())
		} else {
			r.cpuLimited = false
		}
		if l, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
			initMem = max(initMem, l.Value())
		} else {
			r.memoryLimited = false
		}
	}
	var running []corev1.Container
	for _, c := range pod.Spec.InitContainers {
		if isSidecar(&c) {
			running = append(running, c)
		}
	}
	running = append(running, pod.Spec.Containers...)
	for _, c := range running {
		r.cpuRequestMilli += cpuRequestMilli(&c)
		if l, ok := c.Resources.Limits[corev1.ResourceCPU]; ok {
			r.cpuLimitMilli += l.MilliValue()
		} else {
			r.cpuLimited = false
		}
		if l, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
			r.memoryLimit += l.Value()
		} else {
			r.memoryLimited = false
		}
	}
	r.cpuRequestMilli = max(r.cpuRequestMilli, initCPUReq)
	r.cpuLimitMilli = max(r.cpuLimitMilli, initCPULim)
	r.memoryLimit = max(r.memoryLimit, initMem)
	return r
}

// cpuRequestMilli is a container's cpu request, its limit without one (the
// API's defaulting does the same).
func cpuRequestMilli(c *corev1.Container) int64 {
	if q, ok := c.Resources.Requests[corev1.ResourceCPU]; ok {
		return q.MilliValue()
	}
	if q, ok := c.Resources.Limits[corev1.ResourceCPU]; ok {
		return q.MilliValue()
	}
	return 0
}

// milliToShares is upstream's conversion of cpu millicores to cpu.shares.
func milliToShares(milli int64) int64 { return max(milli*1024/1000, 2) }

// milliToQuota is the CFS quota of a cpu limit over upstream's 100 ms period.
func milliToQuota(milli int64) int64 { return max(milli*100000/1000, 1000) }

// ensurePod creates the QoS cgroups and the pod's cgroup with its limits,
// and returns the pod cgroup's path.
func (m *cgroupManager) ensurePod(pod *corev1.Pod, burstableShares int64) (string, error) {
	for _, qos := range []corev1.PodQOSClass{corev1.PodQOSGuaranteed, corev1.PodQOSBurstable, corev1.PodQOSBestEffort} {
		if err := m.mkdir(m.qosCgroup(qos)); err != nil {
			return "", err
		}
	}
	// All pods together weigh the node's cpus (upstream's allocatable, no
	// cpu being reserved here); BestEffort pods share the least cpu,
	// Burstable ones their requests.
	if err := m.write(m.qosCgroup(corev1.PodQOSGuaranteed), "cpu", "cpu.shares", strconv.FormatInt(milliToShares(int64(goruntime.NumCPU())*1000), 10)); err != nil {
		return "", err
	}
	if err := m.write(m.qosCgroup(corev1.PodQOSBestEffort), "cpu", "cpu.shares", "2"); err != nil {
		return "", err
	}
	if err := m.write(m.qosCgroup(corev1.PodQOSBurstable), "cpu", "cpu.shares", strconv.FormatInt(max(burstableShares, 2), 10)); err != nil {
		return "", err
	}
	path := m.podCgroup(pod)
	if err := m.mkdir(path); err != nil {
		return "", err
	}
	r := effectiveResources(pod)
	settings := []struct{ controller, file, value string }{
		{"cpu", "cpu.shares", strconv.FormatInt(milliToShares(r.cpuRequestMilli), 10)},
		{"cpu", "cpu.cfs_period_us", "100000"},
		{"cpu", "cpu.cfs_quota_us", "-1"},
		{"pids", "pids.max", "max"},
	}
	if r.cpuLimited && qosClass(pod) != corev1.PodQOSBestEffort {
		settings[2].value = strconv.FormatInt(milliToQuota(r.cpuLimitMilli), 10)
	}
	if m.maxPids > 0 {
		settings[3].value = strconv.FormatInt(m.maxPids, 10)
	}
	if r.memoryLimited && r.memoryLimit > 0 {
		settings = append(settings, struct{ controller, file, value string }{"memory", "memory.limit_in_bytes", strconv.FormatInt(r.memoryLimit, 10)})
	}
	for _, s := range settings {
		if err := m.write(path, s.controller, s.file, s.value); err != nil {
			return "", fmt.Errorf("pod cgroup %s: %w", path, err)
		}
	}
	return path, nil
}

// hierarchy is the mount point of controller, "" when it is not mounted.
func (m *cgroupManager) hierarchy(controller string) string {
	for _, h := range m.hierarchies {
		// A co-mounted hierarchy is named after all its controllers.
		for _, name := range strings.Split(filepath.Base(h), ",") {
			if name == controller {
				return h
			}
		}
	}
	return ""
}

func (m *cgroupManager) mkdir(path string) error {
	for _, h := range m.hierarchies {
		if err := os.MkdirAll(filepath.Join(h, path), 0o755); err != nil {
			return fmt.Errorf("cgroup %s: %w", path, err)
		}
	}
	return nil
}

// write sets a controller file of path; a controller that is not mounted is
// skipped (a machine without the pids controller still runs pods).
func (m *cgroupManager) write(path, controller, file, value string) error {
	h := m.hierarchy(controller)
	if h == "" {
		return nil
	}
	if err := os.WriteFile(filepath.Join(h, path, file), []byte(value), 0o644); err != nil {
		return fmt.Errorf("write %s=%s: %w", file, value, err)
	}
	return nil
}

// removePod removes the pod's cgroup, wherever its QoS class put it, with
// any container cgroup left below it. Processes still in it (none, once
// the runtime removed the containers) are killed first, as upstream does.
func (m *cgroupManager) removePod(uid types.UID) error {
	var errs []error
	for _, qos := range []corev1.PodQOSClass{corev1.PodQOSGuaranteed, corev1.PodQOSBurstable, corev1.PodQOSBestEffort} {
		path := filepath.Join(m.qosCgroup(qos), "pod"+string(uid))
		for _, h := range m.hierarchies {
			if err := removeCgroupTree(filepath.Join(h, path)); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// removeCgroupTree removes dir and the cgroups below it, deepest first.
func removeCgroupTree(dir string) error {
	if _, err := os.Stat(dir); os.IsNotExist(err) {
		return nil
	}
	var dirs []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	for _, d := range dirs {
		if err := unix.Rmdir(d); err == nil || err == unix.ENOENT {
			continue
		} else if err != unix.EBUSY {
			return fmt.Errorf("remove cgroup %s: %w", d, err)
		}
		killCgroupProcs(d)
		if err := rmdirRetry(d); err != nil {
			return fmt.Errorf("remove cgroup %s: %w", d, err)
		}
	}
	return nil
}

// killCgroupProcs SIGKILLs the processes of a cgroup.
func killCgroupProcs(dir string) {
	b, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
			slog.Warn("kubelet kills process left in pod cgroup", "cgroup", dir, "pid", pid)
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	}
}

// rmdirRetry tries rmdir a few times: a killed process leaves its cgroup
// only once the kernel has reaped it.
func rmdirRetry(dir string) error {
	var err error
	for i := 0; i < 50; i++ {
		if err = unix.Rmdir(dir); err == nil || err == unix.ENOENT {
			return nil
		}
		unix.Nanosleep(&unix.Timespec{Nsec: 20_000_000}, nil)
	}
	return err
}

// oomScoreAdj is upstream's oom_score_adj of a container: -997 for
// Guaranteed and critical pods, 1000 for BestEffort ones, and for Burstable
// ones 1000 less the container's share of the node's memory in thousandths,
// kept within 3 and 999 so that each class stays between the others.
func oomScoreAdj(pod *corev1.Pod, c *corev1.Container, memoryCapacity int64) int64 {
	if pod.Spec.Priority != nil && *pod.Spec.Priority >= systemCriticalPriority {
		return guaranteedOOMScoreAdj
	}
	switch qosClass(pod) {
	case corev1.PodQOSGuaranteed:
		return guaranteedOOMScoreAdj
	case corev1.PodQOSBestEffort:
		return besteffortOOMScoreAdj
	}
	if memoryCapacity <= 0 {
		return besteffortOOMScoreAdj - 1
	}
	adj := 1000 - 1000*c.Resources.Requests.Memory().Value()/memoryCapacity
	if adj < 1000+guaranteedOOMScoreAdj {
		return 1000 + guaranteedOOMScoreAdj
	}
	if adj == besteffortOOMScoreAdj {
		return adj - 1
	}
	return adj
}

// setupCgroups makes the cgroup manager, unless NoPodCgroups or the runtime
// drives cgroups through systemd (pod cgroups are slices there, which this
// kubelet does not make).
func (k *Kubelet) setupCgroups(ctx context.Context) error {
	if k.cfg.NoPodCgroups {
		return nil
	}
	// Runtimes before CRI's RuntimeConfig (containerd 1.6) use cgroupfs
	// unless configured otherwise, as upstream's kubelet assumes.
	if rc, err := k.rt.RuntimeConfig(ctx, &runtimeapi.RuntimeConfigRequest{}); err == nil && rc.GetLinux().GetCgroupDriver() == runtimeapi.CgroupDriver_SYSTEMD {
		slog.Warn("kubelet runs without pod cgroups: the runtime uses the systemd cgroup driver")
		return nil
	}
	m, err := newCgroupManager(k.cfg.CgroupRoot, k.cfg.PodMaxPids)
	if err != nil {
		return fmt.Errorf("cgroups: %w", err)
	}
	k.cgroups = m
	return nil
}

// ensurePodCgroup makes the pod's cgroup before its sandbox, giving the
// Burstable class the cpu shares its pods request.
func (k *Kubelet) ensurePodCgroup(pod *corev1.Pod) error {
	if k.cgroups == nil {
		return nil
	}
	var milli int64
	k.mu.Lock()
	for _, p := range k.pods {
		if p.UID != pod.UID && qosClass(p) == corev1.PodQOSBurstable && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			milli += effectiveResources(p).cpuRequestMilli
		}
	}
	k.mu.Unlock()
	if qosClass(pod) == corev1.PodQOSBurstable {
		milli += effectiveResources(pod).cpuRequestMilli
	}
	_, err := k.cgroups.ensurePod(pod, milliToShares(milli))
	return err
}

// removePodCgroup removes the cgroup of a pod that is gone from the node.
func (k *Kubelet) removePodCgroup(uid types.UID) error {
	if k.cgroups == nil {
		return nil
	}
	return k.cgroups.removePod(uid)
}

// cleanupOrphans wakes the workers of pods that left a pod directory but
// are no longer bound here (a kubelet stopped half-way through a removal):
// with no pod, the worker removes what is left, its cgroup included. The
// directory is the mark, not the cgroup: agents of other nodes on the same
// machine may share the cgroup root, and their pods are none of ours. The
// directory is made before the cgroup and removed after it.
func (k *Kubelet) cleanupOrphans() {
	ents, _ := os.ReadDir(filepath.Join(k.cfg.DataDir, "pods"))
	var orphans []types.UID
	k.mu.Lock()
	for _, e := range ents {
		if _, known := k.pods[types.UID(e.Name())]; !known && e.IsDir() {
			orphans = append(orphans, types.UID(e.Name()))
		}
	}
	k.mu.Unlock()
	for _, uid := range orphans {
		k.enqueue(uid)
	}
}
