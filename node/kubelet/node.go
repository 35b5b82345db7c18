package kubelet

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	goruntime "runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/ptr"
)

// maxPods is upstream's default --max-pods.
const maxPods = 110

// registerNode creates the Node (or takes over the one a previous run
// registered), posts its first status and returns it. With PodCIDRWait it
// waits that long for a node IPAM controller to set spec.podCIDR.
func (k *Kubelet) registerNode(ctx context.Context, v *runtimeapi.VersionResponse) (*corev1.Node, error) {
	name := k.cfg.NodeName
	nodes := k.client.CoreV1().Nodes()
	node, err := nodes.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		node, err = nodes.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
			"kubernetes.io/hostname": name, "kubernetes.io/os": goruntime.GOOS, "kubernetes.io/arch": goruntime.GOARCH,
			"beta.kubernetes.io/os": goruntime.GOOS, "beta.kubernetes.io/arch": goruntime.GOARCH,
		}}}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			// Another kubelet of this node (a previous run still shutting
			// down) registered it between our Get and Create: take its
			// object, as upstream does.
			node, err = nodes.Get(ctx, name, metav1.GetOptions{})
		}
	}
	if err != nil {
		return nil, fmt.Errorf("register node %s: %w", name, err)
	}
	if node, err = k.updateNodeStatus(ctx, node, v, true); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(k.cfg.PodCIDRWait)
	for node.Spec.PodCIDR == "" && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if n, err := nodes.Get(ctx, name, metav1.GetOptions{}); err == nil {
			node = n
		}
	}
	return node, nil
}

// heartbeat renews the Lease every LeaseRenew and posts the node status when
// it changed, or StatusInterval after the last post.
func (k *Kubelet) heartbeat(ctx context.Context, v *runtimeapi.VersionResponse) {
	t := time.NewTicker(k.cfg.LeaseRenew)
	defer t.Stop()
	lastPost := time.Now()
	for {
		if err := k.renewLease(ctx); err != nil && ctx.Err() == nil {
			slog.Warn("kubelet lease renewal failed", "node", k.cfg.NodeName, "err", err)
		}
		node, err := k.client.CoreV1().Nodes().Get(ctx, k.cfg.NodeName, metav1.GetOptions{})
		if err == nil {
			force := time.Since(lastPost) >= k.cfg.StatusInterval
			if _, err = k.updateNodeStatus(ctx, node, v, force); err == nil && force {
				lastPost = time.Now()
			}
		}
		if err != nil && ctx.Err() == nil {
			slog.Warn("kubelet node status update failed", "node", k.cfg.NodeName, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (k *Kubelet) renewLease(ctx context.Context) error {
	leases := k.client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	now := metav1.NewMicroTime(time.Now())
	l, err := leases.Get(ctx, k.cfg.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		l = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: k.cfg.NodeName},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(k.cfg.NodeName),
				LeaseDurationSeconds: ptr.To(int32(k.cfg.LeaseDuration / time.Second)), RenewTime: &now}}
		// Owned by the Node, as upstream's, so deleting the Node deletes it.
		if node, err := k.client.CoreV1().Nodes().Get(ctx, k.cfg.NodeName, metav1.GetOptions{}); err == nil {
			l.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID}}
		}
		_, err = leases.Create(ctx, l, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	l.Spec.RenewTime = &now
	l.Spec.HolderIdentity = ptr.To(k.cfg.NodeName)
	l.Spec.LeaseDurationSeconds = ptr.To(int32(k.cfg.LeaseDuration / time.Second))
	_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
	return err
}

// updateNodeStatus computes the node's status and posts it when it differs
// from node's, or always with force (a heartbeat). On a conflict (the node
// controllers write the Node too) it retries on the newest version.
func (k *Kubelet) updateNodeStatus(ctx context.Context, node *corev1.Node, v *runtimeapi.VersionResponse, force bool) (*corev1.Node, error) {
	for attempt := 0; ; attempt++ {
		want := node.DeepCopy()
		k.nodeStatus(ctx, &want.Status, v)
		if !force && equalIgnoringHeartbeats(node.Status, want.Status) {
			return node, nil
		}
		out, err := k.client.CoreV1().Nodes().UpdateStatus(ctx, want, metav1.UpdateOptions{})
		if err == nil {
			return out, nil
		}
		if !apierrors.IsConflict(err) || attempt >= 5 {
			return nil, fmt.Errorf("node %s status: %w", node.Name, err)
		}
		if node, err = k.client.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{}); err != nil {
			return nil, fmt.Errorf("node %s status: %w", node.Name, err)
		}
	}
}

func equalIgnoringHeartbeats(a, b corev1.NodeStatus) bool {
	a, b = *a.DeepCopy(), *b.DeepCopy()
	for _, s := range []*corev1.NodeStatus{&a, &b} {
		for i := range s.Conditions {
			s.Conditions[i].LastHeartbeatTime = metav1.Time{}
		}
	}
	return equality.Semantic.DeepEqual(a, b)
}

// nodeStatus fills st from the machine and the runtime's status.
func (k *Kubelet) nodeStatus(ctx context.Context, st *corev1.NodeStatus, v *runtimeapi.VersionResponse) {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:  *resource.NewQuantity(int64(goruntime.NumCPU()), resource.DecimalSI),
		corev1.ResourcePods: *resource.NewQuantity(maxPods, resource.DecimalSI),
	}
	allocatable := capacity.DeepCopy()
	if mem := memTotal(); mem > 0 {
		capacity[corev1.ResourceMemory] = *resource.NewQuantity(mem, resource.BinarySI)
		// Upstream's default hard eviction threshold: memory.available<100Mi.
		allocatable[corev1.ResourceMemory] = *resource.NewQuantity(max(mem-100<<20, 0), resource.BinarySI)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(k.cfg.DataDir, &fs); err == nil {
		size := int64(fs.Blocks) * fs.Bsize
		capacity[corev1.ResourceEphemeralStorage] = *resource.NewQuantity(size, resource.BinarySI)
		// And nodefs.available<10%.
		allocatable[corev1.ResourceEphemeralStorage] = *resource.NewQuantity(size-size/10, resource.BinarySI)
	}
	st.Capacity, st.Allocatable = capacity, allocatable
	hostname, _ := os.Hostname()
	st.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: k.nodeIP}, {Type: corev1.NodeHostName, Address: hostname}}
	st.DaemonEndpoints.KubeletEndpoint.Port = k.cfg.KubeletPort
	st.NodeInfo = corev1.NodeSystemInfo{
		MachineID:               readTrim("/etc/machine-id"),
		SystemUUID:              readTrim("/sys/class/dmi/id/product_uuid"),
		BootID:                  readTrim("/proc/sys/kernel/random/boot_id"),
		KernelVersion:           kernelVersion(),
		OSImage:                 osImage(),
		ContainerRuntimeVersion: v.GetRuntimeName() + "://" + v.GetRuntimeVersion(),
		KubeletVersion:          k.cfg.Version,
		OperatingSystem:         goruntime.GOOS,
		Architecture:            goruntime.GOARCH,
	}
	st.Phase = ""

	ready := corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", Message: "kubelet is posting ready status"}
	if msg := runtimeNotReady(ctx, k.rt); msg != "" {
		ready.Status, ready.Reason, ready.Message = corev1.ConditionFalse, "KubeletNotReady", msg
	}
	// Pressure as upstream's default hard eviction thresholds define it
	// (memory.available<100Mi, nodefs.available<10%, pid.available<10%);
	// nothing is evicted yet, the conditions only say so.
	memory := corev1.NodeCondition{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientMemory", Message: "kubelet has sufficient memory available"}
	if avail := memAvailable(); avail >= 0 && avail < 100<<20 {
		memory.Status, memory.Reason, memory.Message = corev1.ConditionTrue, "KubeletHasInsufficientMemory", "kubelet has insufficient memory available"
	}
	disk := corev1.NodeCondition{Type: corev1.NodeDiskPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasNoDiskPressure", Message: "kubelet has no disk pressure"}
	if fs.Blocks > 0 && fs.Bavail < fs.Blocks/10 {
		disk.Status, disk.Reason, disk.Message = corev1.ConditionTrue, "KubeletHasDiskPressure", "kubelet has disk pressure"
	}
	pid := corev1.NodeCondition{Type: corev1.NodePIDPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientPID", Message: "kubelet has sufficient PID available"}
	if used, limit := pidUsage(); limit > 0 && limit-used < limit/10 {
		pid.Status, pid.Reason, pid.Message = corev1.ConditionTrue, "KubeletHasInsufficientPID", "kubelet has insufficient PID available"
	}
	conds := []corev1.NodeCondition{memory, disk, pid, ready}
	now := metav1.Now()
	for i := range conds {
		conds[i].LastHeartbeatTime, conds[i].LastTransitionTime = now, now
		for _, old := range st.Conditions {
			if old.Type == conds[i].Type && old.Status == conds[i].Status {
				conds[i].LastTransitionTime = old.LastTransitionTime
			}
		}
	}
	st.Conditions = conds
}

// runtimeNotReady returns why the runtime is not ready, "" when it is.
func runtimeNotReady(ctx context.Context, rt runtimeapi.RuntimeServiceClient) string {
	s, err := rt.Status(ctx, &runtimeapi.StatusRequest{})
	if err != nil {
		return "container runtime is down: " + err.Error()
	}
	for _, c := range s.GetStatus().GetConditions() {
		if !c.GetStatus() && (c.GetType() == runtimeapi.RuntimeReady || c.GetType() == runtimeapi.NetworkReady) {
			return fmt.Sprintf("container runtime status check: %s=false reason:%s message:%s", c.GetType(), c.GetReason(), c.GetMessage())
		}
	}
	return ""
}

// memTotal is MemTotal of /proc/meminfo in bytes.
func memTotal() int64 { return meminfo("MemTotal") }

// memAvailable is MemAvailable of /proc/meminfo in bytes, -1 if unknown.
func memAvailable() int64 {
	if v := meminfo("MemAvailable"); v > 0 {
		return v
	}
	return -1
}

// pidUsage is the number of processes and the pid limit (kernel.pid_max).
func pidUsage() (used, limit int64) {
	fmt.Sscan(readTrim("/proc/sys/kernel/pid_max"), &limit)
	// The fourth field of loadavg is running/total scheduling entities.
	if f := strings.Fields(readTrim("/proc/loadavg")); len(f) > 3 {
		if _, total, ok := strings.Cut(f[3], "/"); ok {
			fmt.Sscan(total, &used)
		}
	}
	return used, limit
}

func meminfo(key string) int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var kb int64
		if n, _ := fmt.Sscanf(sc.Text(), key+": %d kB", &kb); n == 1 {
			return kb << 10
		}
	}
	return 0
}

func readTrim(path string) string {
	b, _ := os.ReadFile(path)
	return strings.TrimSpace(string(b))
}

func kernelVersion() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

// osImage is PRETTY_NAME of /etc/os-release.
func osImage() string {
	b, err := os.ReadFile("/etc/os-release")
	if err != nil {
		return "Linux"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
			return strings.Trim(v, `"'`)
		}
	}
	return "Linux"
}

// nodeIP returns want, or the first IPv4 address of the interface of the
// default route (/proc/net/route), or of any interface that is up.
func nodeIP(want string) (string, error) {
	if want != "" {
		if net.ParseIP(want) == nil {
			return "", fmt.Errorf("node IP %q is not an IP address", want)
		}
		return want, nil
	}
	var names []string
	if b, err := os.ReadFile("/proc/net/route"); err == nil {
		for _, l := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(l)
			if len(f) > 2 && f[1] == "00000000" {
				names = append(names, f[0])
			}
		}
	}
	ifs, _ := net.Interfaces()
	for _, i := range ifs {
		if i.Flags&net.FlagUp != 0 && i.Flags&net.FlagLoopback == 0 {
			names = append(names, i.Name)
		}
	}
	for _, n := range names {
		i, err := net.InterfaceByName(n)
		if err != nil {
			continue
		}
		addrs, _ := i.Addrs()
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && ipn.IP.IsGlobalUnicast() {
				return ipn.IP.String(), nil
			}
		}
	}
	return "127.0.0.1", nil
}
