// Package scheduler places pods on nodes. It watches the pods without a node
// whose schedulerName is default-scheduler, decides with framework.Schedule
// over a cache of the nodes and the pods placed on them, and binds through
// pods/binding. A pod that fits nowhere gets PodScheduled=False and a
// FailedScheduling event saying why, node by node, and is tried again when
// the cluster changes (a node added or changed, a placed pod gone), not by
// polling. Pods are tried highest priority first; one that fits nowhere may
// preempt pods of lower priority (package preemption chooses them, preempt.go
// evicts them and nominates the node). Only the holder of the
// kube-system/kube-scheduler Lease schedules.
package scheduler

import (
	"context"
	"log/slog"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/navarch/navarch/controlplane/events"
	"github.com/navarch/navarch/controlplane/leaderlock"
	"github.com/navarch/navarch/controlplane/scheduler/framework"
)

// Name is the schedulerName this scheduler serves.
const Name = corev1.DefaultSchedulerName

// Scheduler is the running scheduler.
type Scheduler struct {
	client  kubernetes.Interface
	factory informers.SharedInformerFactory // nil: the scheduler makes its own
	plugins framework.Plugins
	queue   workqueue.TypedRateLimitingInterface[string]
	pods    corelisters.PodLister

	mu            sync.Mutex
	nodes         map[string]*framework.NodeInfo
	placed        map[types.UID]*corev1.Pod // pods counted on a node, by uid
	unschedulable map[string]string         // pod key -> last reason reported
	nominated     map[types.UID]*nomination // pending pods waiting for room preemption makes

	binds chan struct{} // one token per binding request in flight
}

// New returns a scheduler using client, with informers of its own.
func New(client kubernetes.Interface) *Scheduler {
	return NewShared(client, nil)
}

// NewShared returns a scheduler that watches pods and nodes through factory,
// shared with the controllers of the same process, so that each pod event
// is received and decoded once; nil means informers of its own.
func NewShared(client kubernetes.Interface, factory informers.SharedInformerFactory) *Scheduler {
	s := &Scheduler{factory: factory,
		client: client, plugins: DefaultPlugins(),
		nodes: map[string]*framework.NodeInfo{}, placed: map[types.UID]*corev1.Pod{}, unschedulable: map[string]string{},
		nominated: map[types.UID]*nomination{}, binds: make(chan struct{}, maxBindsInFlight),
	}
	// Higher-priority pods are tried first (see activeQueue).
	s.queue = newQueue(s.lookupPod)
	return s
}

// Run schedules while this process holds the scheduler's Lease, until ctx ends.
func (s *Scheduler) Run(ctx context.Context) error {
	return leaderlock.Run(ctx, s.client, "kube-scheduler", s.lead)
}

// lead runs the scheduling loop: informers feed the cache and the queue.
func (s *Scheduler) lead(ctx context.Context) error {
	factory := s.factory
	if factory == nil {
		factory = informers.NewSharedInformerFactory(s.client, 0)
		defer factory.Shutdown()
	}
	podInf, nodeInf := factory.Core().V1().Pods(), factory.Core().V1().Nodes()
	s.pods = podInf.Lister()
	nodeInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj interface{}) { s.setNode(obj.(*corev1.Node)) },
		UpdateFunc: func(_, obj interface{}) { s.setNode(obj.(*corev1.Node)) },
		DeleteFunc: func(obj interface{}) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if n, ok := obj.(*corev1.Node); ok {
				s.removeNode(n.Name)
			}
		},
	})
	podInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj interface{}) { s.podChanged(obj.(*corev1.Pod)) },
		UpdateFunc: func(_, obj interface{}) { s.podChanged(obj.(*corev1.Pod)) },
		DeleteFunc: func(obj interface{}) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if p, ok := obj.(*corev1.Pod); ok {
				s.podGone(p)
			}
		},
	})
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), podInf.Informer().HasSynced, nodeInf.Informer().HasSynced) {
		return ctx.Err()
	}
	go func() {
		<-ctx.Done()
		s.queue.ShutDown()
	}()
	for {
		key, quit := s.queue.Get()
		if quit {
			return nil
		}
		s.scheduleOne(ctx, key)
		s.queue.Done(key)
	}
}

func podKey(p *corev1.Pod) string { return p.Namespace + "/" + p.Name }

// needsScheduling reports a pod this scheduler should place.
func needsScheduling(p *corev1.Pod) bool {
	return p.Spec.NodeName == "" && p.Spec.SchedulerName == Name && p.DeletionTimestamp == nil &&
		p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed && len(p.Spec.SchedulingGates) == 0
}

func terminal(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

func (s *Scheduler) setNode(n *corev1.Node) {
	s.mu.Lock()
	info := framework.NewNodeInfo(n)
	if old, ok := s.nodes[n.Name]; ok {
		for _, p := range old.Pods {
			info.AddPod(p)
		}
	}
	s.nodes[n.Name] = info
	s.mu.Unlock()
	s.retryUnschedulable()
}

func (s *Scheduler) removeNode(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.nodes, name)
}

// place counts pod on its node (replacing an earlier count of it).
func (s *Scheduler) place(p *corev1.Pod) {
	if old, ok := s.placed[p.UID]; ok {
		if n := s.nodes[old.Spec.NodeName]; n != nil {
			n.RemovePod(old)
		}
	}
	s.placed[p.UID] = p
	if n := s.nodes[p.Spec.NodeName]; n != nil {
		n.AddPod(p)
	}
}

func (s *Scheduler) unplace(p *corev1.Pod) bool {
	old, ok := s.placed[p.UID]
	if !ok {
		return false
	}
	delete(s.placed, p.UID)
	if n := s.nodes[old.Spec.NodeName]; n != nil {
		n.RemovePod(old)
	}
	return true
}

func (s *Scheduler) podChanged(p *corev1.Pod) {
	switch {
	case p.Spec.NodeName != "" && !terminal(p):
		s.mu.Lock()
		s.place(p)
		delete(s.unschedulable, podKey(p))
		delete(s.nominated, p.UID) // bound: counted as placed now
		s.mu.Unlock()
	case p.Spec.NodeName != "":
		// A finished pod frees its node's resources.
		s.podGone(p)
	case needsScheduling(p):
		s.mu.Lock()
		_, waiting := s.unschedulable[podKey(p)]
		s.nominationChanged(p)
		s.mu.Unlock()
		if !waiting {
			s.queue.Add(podKey(p))
		}
	}
}

func (s *Scheduler) podGone(p *corev1.Pod) {
	s.mu.Lock()
	freed := s.unplace(p)
	delete(s.unschedulable, podKey(p))
	if _, ok := s.nominated[p.UID]; ok {
		delete(s.nominated, p.UID)
		freed = true // the room it was waiting for is free for others
	}
	s.mu.Unlock()
	if freed {
		s.retryUnschedulable()
	}
}

// retryUnschedulable queues the pods waiting for the cluster to change.
func (s *Scheduler) retryUnschedulable() {
	s.mu.Lock()
	var keys []string
	for k := range s.unschedulable {
		keys = append(keys, k)
	}
	s.mu.Unlock()
	for _, k := range keys {
		s.queue.Add(k)
	}
}

func (s *Scheduler) snapshot() *framework.Snapshot {
	snap := &framework.Snapshot{Nodes: make([]*framework.NodeInfo, 0, len(s.nodes))}
	for _, n := range s.nodes {
		snap.Nodes = append(snap.Nodes, n)
	}
	return snap
}

func (s *Scheduler) scheduleOne(ctx context.Context, key string) {
	ns, name, _ := cache.SplitMetaNamespaceKey(key)
	pod, err := s.pods.Pods(ns).Get(name)
	if err != nil || !needsScheduling(pod) {
		return
	}
	s.mu.Lock()
	if _, assumed := s.placed[pod.UID]; assumed {
		// Its binding is in flight; the informer has not seen it yet.
		s.mu.Unlock()
		return
	}
	pod = s.withNomination(pod)
	snap := s.snapshotFor(pod)
	node, err := framework.Schedule(pod, snap, s.plugins)
	if err != nil { // a *framework.FitError: the pod fits nowhere now
		preempt, reason := s.tryPreemption(pod, snap, err)
		last, seen := s.unschedulable[key]
		s.unschedulable[key] = reason
		s.mu.Unlock()
		if !seen || last != reason {
			s.reportUnschedulable(ctx, pod, reason)
		}
		if preempt != nil {
			s.preempt(ctx, pod, preempt)
		}
		return
	}
	// Assume the pod on its node at once, so the next decision counts it
	// even before the binding comes back through the watch.
	assumed := pod.DeepCopy()
	assumed.Spec.NodeName = node
	s.place(assumed)
	delete(s.unschedulable, key)
	delete(s.nominated, pod.UID) // counted as placed from now on
	s.mu.Unlock()

	// Bind in the background, as upstream's binding cycle does: the next
	// decision needs only the assumed pod, not the API's answer, so the
	// loop is not held to one round trip per pod. binds bounds the requests
	// in flight.
	s.binds <- struct{}{}
	go func() {
		defer func() { <-s.binds }()
		s.bind(ctx, key, assumed)
	}()
}

// maxBindsInFlight bounds the concurrent binding requests.
const maxBindsInFlight = 64

// bind stores the decision for an assumed pod; on failure the pod is no
// longer counted on the node and is tried again.
func (s *Scheduler) bind(ctx context.Context, key string, assumed *corev1.Pod) {
	binding := &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: assumed.Name, Namespace: assumed.Namespace, UID: assumed.UID},
		Target: corev1.ObjectReference{Kind: "Node", Name: assumed.Spec.NodeName}}
	if err := s.client.CoreV1().Pods(assumed.Namespace).Bind(ctx, binding, metav1.CreateOptions{}); err != nil {
		s.mu.Lock()
		s.unplace(assumed)
		s.mu.Unlock()
		if !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) && ctx.Err() == nil {
			slog.Warn("binding failed", "pod", key, "node", assumed.Spec.NodeName, "err", err)
			s.queue.AddRateLimited(key)
		}
		return
	}
	s.queue.Forget(key)
}

// reportUnschedulable records why a pod fits nowhere: the PodScheduled
// condition and a FailedScheduling event, as upstream.
func (s *Scheduler) reportUnschedulable(ctx context.Context, pod *corev1.Pod, reason string) {
	now := metav1.Now()
	cur, err := s.client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
	if err == nil {
		cur = cur.DeepCopy()
		cond := corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable,
			Message: reason, LastTransitionTime: now}
		found := false
		for i := range cur.Status.Conditions {
			if cur.Status.Conditions[i].Type == corev1.PodScheduled {
				cur.Status.Conditions[i], found = cond, true
			}
		}
		if !found {
			cur.Status.Conditions = append(cur.Status.Conditions, cond)
		}
		if _, err := s.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, cur, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
			slog.Debug("cannot record PodScheduled=False", "pod", podKey(pod), "err", err)
		}
	}
	events.NewRecorder(s.client, Name).Event(ctx, events.Ref("v1", "Pod", pod), corev1.EventTypeWarning, "FailedScheduling", reason)
}
