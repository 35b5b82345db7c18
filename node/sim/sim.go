// Package sim runs hollow nodes: each registers a Node with capacity, renews
// its Lease in kube-node-lease, moves pods bound to it to Running with a pod
// IP (and to Succeeded after the duration the navarch.io/sim-duration
// annotation gives), and finishes their deletion. It talks only to the API,
// so it rehearses a cluster against any API server, ours or upstream.
package sim

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
)

// DurationAnnotation makes a simulated pod succeed after the given duration.
const DurationAnnotation = "navarch.io/sim-duration"

// ExitCodeAnnotation, when non-zero, makes a simulated pod end Failed with
// that exit code (reason Error) after its duration instead of succeeding.
// Container restarts are not simulated: the pod fails whatever its
// restartPolicy, which is what a Job with restartPolicy Never sees.
const ExitCodeAnnotation = "navarch.io/sim-exit-code"

// Config describes the simulated nodes.
type Config struct {
	Nodes  int
	Prefix string // node names are Prefix0, Prefix1, ...
	CPU    resource.Quantity
	Memory resource.Quantity
	Pods   int64
	// LeaseDuration is the lease duration the nodes announce; they renew at a
	// quarter of it (10 s for upstream's default 40 s).
	LeaseDuration time.Duration
}

// DefaultConfig is the node the issue describes: 32 cpu, 256Gi, 110 pods.
func DefaultConfig(n int) Config {
	return Config{Nodes: n, Prefix: "sim-", CPU: resource.MustParse("32"), Memory: resource.MustParse("256Gi"), Pods: 110, LeaseDuration: 40 * time.Second}
}

// Sim is a set of hollow nodes.
type Sim struct {
	cfg    Config
	client kubernetes.Interface
	// nodes maps a node name to its index. Its pod CIDR is
	// 10.<200+index/256>.<index%256>.0/24: outside the cluster CIDR
	// (10.42.0.0/16), so hollow pods never collide with real ones.
	nodes map[string]int

	mu     sync.Mutex
	nextIP map[string]int
	queue  workqueue.TypedRateLimitingInterface[string]
}

// New returns hollow nodes talking to client.
func New(client kubernetes.Interface, cfg Config) *Sim {
	s := &Sim{cfg: cfg, client: client, nodes: map[string]int{}, nextIP: map[string]int{},
		queue: workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())}
	for i := 0; i < cfg.Nodes; i++ {
		s.nodes[fmt.Sprintf("%s%d", cfg.Prefix, i)] = i
	}
	return s
}

// NodeNames lists the simulated nodes.
func (s *Sim) NodeNames() []string {
	out := make([]string, 0, len(s.nodes))
	for i := 0; i < s.cfg.Nodes; i++ {
		out = append(out, fmt.Sprintf("%s%d", s.cfg.Prefix, i))
	}
	return out
}

// Run registers the nodes and runs them until ctx ends.
func (s *Sim) Run(ctx context.Context) error {
	for _, name := range s.NodeNames() {
		if err := s.register(ctx, name); err != nil {
			return err
		}
	}
	go s.renewLeases(ctx)

	factory := informers.NewSharedInformerFactory(s.client, 0)
	inf := factory.Core().V1().Pods()
	enqueue := func(obj interface{}) {
		if p, ok := obj.(*corev1.Pod); ok {
			if _, ours := s.nodes[p.Spec.NodeName]; ours {
				s.queue.Add(p.Namespace + "/" + p.Name)
			}
		}
	}
	inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: enqueue, UpdateFunc: func(_, o interface{}) { enqueue(o) }})
	lister := inf.Lister()
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), inf.Informer().HasSynced) {
		return ctx.Err()
	}
	go func() {
		<-ctx.Done()
		s.queue.ShutDown()
	}()
	var wg sync.WaitGroup
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				key, quit := s.queue.Get()
				if quit {
					return
				}
				ns, name, _ := cache.SplitMetaNamespaceKey(key)
				if pod, err := lister.Pods(ns).Get(name); err == nil {
					if err := s.sync(ctx, pod); err != nil && ctx.Err() == nil {
						slog.Debug("sim pod sync failed", "pod", key, "err", err)
						s.queue.AddRateLimited(key)
					} else {
						s.queue.Forget(key)
					}
				}
				s.queue.Done(key)
			}
		}()
	}
	wg.Wait()
	return nil
}

func (s *Sim) podCIDR(name string) (string, string) {
	i := s.nodes[name]
	prefix := fmt.Sprintf("10.%d.%d.", 200+i/256, i%256)
	return prefix + "0/24", prefix
}

func (s *Sim) register(ctx context.Context, name string) error {
	cidr, _ := s.podCIDR(name)
	capacity := corev1.ResourceList{corev1.ResourceCPU: s.cfg.CPU, corev1.ResourceMemory: s.cfg.Memory,
		corev1.ResourcePods: *resource.NewQuantity(s.cfg.Pods, resource.DecimalSI), corev1.ResourceEphemeralStorage: resource.MustParse("100Gi")}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
			"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", "type": "hollow"}},
		Spec: corev1.NodeSpec{PodCIDR: cidr, PodCIDRs: []string{cidr}},
	}
	created, err := s.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		created, err = s.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	}
	if err != nil {
		return fmt.Errorf("register node %s: %w", name, err)
	}
	now := metav1.Now()
	created.Status = corev1.NodeStatus{
		Capacity: capacity, Allocatable: capacity, Phase: corev1.NodeRunning,
		Conditions: []corev1.NodeCondition{
			{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", Message: "hollow node is ready", LastHeartbeatTime: now, LastTransitionTime: now},
			{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientMemory", LastHeartbeatTime: now, LastTransitionTime: now},
			{Type: corev1.NodeDiskPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasNoDiskPressure", LastHeartbeatTime: now, LastTransitionTime: now},
			{Type: corev1.NodePIDPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientPID", LastHeartbeatTime: now, LastTransitionTime: now},
		},
		Addresses: []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: name}},
		NodeInfo: corev1.NodeSystemInfo{KubeletVersion: "v1.34.0-navarch-sim", OperatingSystem: "linux", Architecture: "amd64",
			OSImage: "hollow", KernelVersion: "hollow", ContainerRuntimeVersion: "sim://1"},
	}
	if _, err := s.client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("node %s status: %w", name, err)
	}
	return nil
}

// renewLeases keeps every node's Lease fresh, as a kubelet's heartbeat does.
func (s *Sim) renewLeases(ctx context.Context) {
	every := s.cfg.LeaseDuration / 4
	if every <= 0 {
		every = 10 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		for _, name := range s.NodeNames() {
			if err := s.renew(ctx, name); err != nil && ctx.Err() == nil {
				slog.Warn("lease renewal failed", "node", name, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Sim) renew(ctx context.Context, name string) error {
	leases := s.client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	now := metav1.NewMicroTime(time.Now())
	l, err := leases.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = leases.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(name), LeaseDurationSeconds: ptr.To(int32(s.cfg.LeaseDuration.Seconds())), RenewTime: &now}},
			metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	l.Spec.RenewTime = &now
	_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
	return err
}

// sync moves one pod on a simulated node along its life.
func (s *Sim) sync(ctx context.Context, pod *corev1.Pod) error {
	pods := s.client.CoreV1().Pods(pod.Namespace)
	if pod.DeletionTimestamp != nil {
		// Nothing runs, so termination is immediate.
		err := pods.Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0)), Preconditions: metav1.NewUIDPreconditions(string(pod.UID))})
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return nil
		}
		return err
	}
	switch pod.Status.Phase {
	case corev1.PodSucceeded, corev1.PodFailed:
		return nil
	case corev1.PodRunning:
		return s.maybeFinish(ctx, pod)
	}
	now := metav1.Now()
	p := pod.DeepCopy()
	p.Status.Phase = corev1.PodRunning
	p.Status.HostIP = ""
	p.Status.PodIP = s.allocateIP(p.Spec.NodeName)
	p.Status.PodIPs = []corev1.PodIP{{IP: p.Status.PodIP}}
	p.Status.StartTime = &now
	p.Status.Conditions = []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
	}
	p.Status.ContainerStatuses = nil
	for _, c := range p.Spec.Containers {
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: "sim://" + c.Image, ContainerID: "sim://" + string(p.UID) + "/" + c.Name,
			Ready: true, Started: ptr.To(true), State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}})
	}
	if _, err := pods.UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	}
	return s.maybeFinish(ctx, p)
}

// maybeFinish makes a pod with a sim duration succeed (or fail, with a
// non-zero exit code annotation) once it has run that long.
func (s *Sim) maybeFinish(ctx context.Context, pod *corev1.Pod) error {
	v, ok := pod.Annotations[DurationAnnotation]
	if !ok || pod.Status.StartTime == nil {
		return nil
	}
	d, err := time.ParseDuration(strings.TrimSpace(v))
	if err != nil {
		return nil // a bad annotation: the pod just keeps running
	}
	if left := time.Until(pod.Status.StartTime.Add(d)); left > 0 {
		s.queue.AddAfter(pod.Namespace+"/"+pod.Name, left)
		return nil
	}
	now := metav1.Now()
	p := pod.DeepCopy()
	phase, exitCode, reason, condReason := corev1.PodSucceeded, int32(0), "Completed", "PodCompleted"
	if code, err := strconv.ParseInt(strings.TrimSpace(pod.Annotations[ExitCodeAnnotation]), 10, 32); err == nil && code != 0 {
		phase, exitCode, reason, condReason = corev1.PodFailed, int32(code), "Error", "PodFailed"
	}
	p.Status.Phase = phase
	for i := range p.Status.ContainerStatuses {
		cs := &p.Status.ContainerStatuses[i]
		cs.Ready = false
		cs.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: exitCode, Reason: reason, StartedAt: *pod.Status.StartTime, FinishedAt: now}}
	}
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == corev1.PodReady || p.Status.Conditions[i].Type == corev1.ContainersReady {
			p.Status.Conditions[i].Status, p.Status.Conditions[i].Reason = corev1.ConditionFalse, condReason
		}
	}
	_, err = s.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// allocateIP hands out addresses from the node's /24 in turn.
func (s *Sim) allocateIP(node string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, prefix := s.podCIDR(node)
	s.nextIP[node] = s.nextIP[node]%253 + 1
	return fmt.Sprintf("%s%d", prefix, s.nextIP[node]+1)
}
