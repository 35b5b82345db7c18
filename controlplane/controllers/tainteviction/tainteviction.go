// Package tainteviction evicts pods from nodes with NoExecute taints, as
// upstream's taint eviction controller: a pod that does not tolerate every
// NoExecute taint of its node is deleted at once; one that tolerates them
// all for a while (tolerationSeconds) is deleted when the shortest of the
// matching tolerations runs out, counted from when this controller first
// saw it tainted; the eviction is cancelled if the taints go first. Each
// eviction is recorded as a TaintManagerEviction event on the pod, and the
// pod's owner (a ReplicaSet, say) replaces it elsewhere.
package tainteviction

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"

	"github.com/navarch/navarch/controlplane/controllers/workloop"
	"github.com/navarch/navarch/controlplane/events"
)

// Name is the component named in events, as upstream's.
const Name = "taint-eviction-controller"

// Controller evicts pods.
type Controller struct {
	client  kubernetes.Interface
	factory informers.SharedInformerFactory
	clock   clock.PassiveClock
	queue   workqueue.TypedRateLimitingInterface[string] // pod "namespace/name"
	nodes   corelisters.NodeLister
	pods    corelisters.PodLister
	synced  []cache.InformerSynced

	mu sync.Mutex
	// podsByNode finds the pods to look at again when a node's taints change.
	podsByNode map[string]sets.Set[string]
	// started holds, per pod, when its eviction clock started: the first
	// time it was seen on a node with NoExecute taints it tolerates for now.
	started map[string]time.Time
}

// New returns the controller. clk is the time source; nil is the real clock.
func New(client kubernetes.Interface, factory informers.SharedInformerFactory, clk clock.PassiveClock) *Controller {
	if clk == nil {
		clk = clock.RealClock{}
	}
	nodeInf, podInf := factory.Core().V1().Nodes(), factory.Core().V1().Pods()
	return &Controller{client: client, factory: factory, clock: clk,
		nodes: nodeInf.Lister(), pods: podInf.Lister(),
		synced:     []cache.InformerSynced{nodeInf.Informer().HasSynced, podInf.Informer().HasSynced},
		podsByNode: map[string]sets.Set[string]{}, started: map[string]time.Time{},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "tainteviction"})}
}

// Run works until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	podInf := c.factory.Core().V1().Pods().Informer()
	podInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj interface{}) { c.podChanged(nil, obj) },
		UpdateFunc: func(old, obj interface{}) {
			c.podChanged(old, obj)
		},
		DeleteFunc: func(obj interface{}) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			c.podChanged(obj, nil)
		},
	})
	nodeInf := c.factory.Core().V1().Nodes().Informer()
	nodeInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj interface{}) { c.nodeChanged(nil, obj) },
		UpdateFunc: func(old, obj interface{}) {
			c.nodeChanged(old, obj)
		},
		DeleteFunc: func(obj interface{}) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			c.nodeChanged(obj, nil)
		},
	})
	c.factory.Start(ctx.Done())
	return workloop.Run(ctx, "tainteviction", c.queue, 4, c.sync, c.synced...)
}

// podChanged keeps podsByNode and queues the pod.
func (c *Controller) podChanged(old, obj interface{}) {
	oldPod, _ := old.(*corev1.Pod)
	pod, _ := obj.(*corev1.Pod)
	c.mu.Lock()
	defer c.mu.Unlock()
	if oldPod != nil && (pod == nil || oldPod.Spec.NodeName != pod.Spec.NodeName) {
		key := oldPod.Namespace + "/" + oldPod.Name
		if s := c.podsByNode[oldPod.Spec.NodeName]; s != nil {
			s.Delete(key)
			if s.Len() == 0 {
				delete(c.podsByNode, oldPod.Spec.NodeName)
			}
		}
		if pod == nil {
			delete(c.started, key)
			return
		}
	}
	if pod == nil || pod.Spec.NodeName == "" {
		return
	}
	key := pod.Namespace + "/" + pod.Name
	s := c.podsByNode[pod.Spec.NodeName]
	if s == nil {
		s = sets.New[string]()
		c.podsByNode[pod.Spec.NodeName] = s
	}
	s.Insert(key)
	// Only a newly bound pod or changed tolerations change the decision.
	if oldPod == nil || oldPod.Spec.NodeName != pod.Spec.NodeName || len(oldPod.Spec.Tolerations) != len(pod.Spec.Tolerations) {
		c.queue.Add(key)
	}
}

// nodeChanged queues a node's pods when its NoExecute taints change.
func (c *Controller) nodeChanged(old, obj interface{}) {
	oldNode, _ := old.(*corev1.Node)
	node, _ := obj.(*corev1.Node)
	var before, after []corev1.Taint
	name := ""
	if oldNode != nil {
		before, name = noExecute(oldNode.Spec.Taints), oldNode.Name
	}
	if node != nil {
		after, name = noExecute(node.Spec.Taints), node.Name
	}
	if sameTaints(before, after) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for key := range c.podsByNode[name] {
		c.queue.Add(key)
	}
}

func noExecute(taints []corev1.Taint) []corev1.Taint {
	var out []corev1.Taint
	for _, t := range taints {
		if t.Effect == corev1.TaintEffectNoExecute {
			out = append(out, t)
		}
	}
	return out
}

func sameTaints(a, b []corev1.Taint) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Key != b[i].Key || a[i].Value != b[i].Value {
			return false
		}
	}
	return true
}

// tolerationTime says how long a pod may stay on a node with these
// NoExecute taints: forever if there are none or every matching toleration
// is unbounded; zero if some taint is not tolerated; otherwise the shortest
// tolerationSeconds among the tolerations that match a taint.
func tolerationTime(taints []corev1.Taint, tolerations []corev1.Toleration) (d time.Duration, forever bool) {
	if len(taints) == 0 {
		return 0, true
	}
	forever = true
	for i := range taints {
		matched := false
		for j := range tolerations {
			tol := &tolerations[j]
			if !tol.ToleratesTaint(&taints[i]) {
				continue
			}
			matched = true
			if tol.TolerationSeconds == nil {
				continue
			}
			secs := time.Duration(max(*tol.TolerationSeconds, 0)) * time.Second
			if forever || secs < d {
				d, forever = secs, false
			}
		}
		if !matched {
			return 0, false
		}
	}
	return d, forever
}

// due returns how long until an eviction whose clock started at start with
// toleration d happens; zero or less means now.
func due(start, now time.Time, d time.Duration) time.Duration {
	return start.Add(d).Sub(now)
}

// sync decides about one pod.
func (c *Controller) sync(ctx context.Context, key string) error {
	ns, name, _ := cache.SplitMetaNamespaceKey(key)
	pod, err := c.pods.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		c.forget(key)
		return nil
	}
	if err != nil {
		return err
	}
	if pod.Spec.NodeName == "" || pod.DeletionTimestamp != nil {
		c.forget(key)
		return nil
	}
	var taints []corev1.Taint
	if node, err := c.nodes.Get(pod.Spec.NodeName); err == nil {
		taints = noExecute(node.Spec.Taints)
	}
	d, forever := tolerationTime(taints, pod.Spec.Tolerations)
	if forever {
		if c.forget(key) {
			c.event(ctx, pod, "Cancelling deletion of Pod "+key)
		}
		return nil
	}
	now := c.clock.Now()
	c.mu.Lock()
	start, ok := c.started[key]
	if !ok {
		start = now
		c.started[key] = now
	}
	c.mu.Unlock()
	if left := due(start, now, d); left > 0 {
		c.queue.AddAfter(key, left)
		return nil
	}
	return c.evict(ctx, pod)
}

// forget drops a pod's eviction clock and says whether it had one.
func (c *Controller) forget(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.started[key]
	delete(c.started, key)
	return ok
}

// evict marks the pod as disrupted, as upstream's DisruptionTarget
// condition says, and deletes it with its own grace period.
func (c *Controller) evict(ctx context.Context, pod *corev1.Pod) error {
	key := pod.Namespace + "/" + pod.Name
	slog.Info("evicting pod from tainted node", "pod", key, "node", pod.Spec.NodeName)
	c.event(ctx, pod, "Marking for deletion Pod "+key)
	cp := pod.DeepCopy()
	cond := corev1.PodCondition{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue, Reason: "DeletionByTaintManager",
		Message: "Taint manager: deleting due to NoExecute taint", LastTransitionTime: metav1.NewTime(c.clock.Now())}
	found := false
	for i := range cp.Status.Conditions {
		if cp.Status.Conditions[i].Type == cond.Type {
			cp.Status.Conditions[i], found = cond, true
		}
	}
	if !found {
		cp.Status.Conditions = append(cp.Status.Conditions, cond)
	}
	if _, err := c.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, cp, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
		// The deletion matters more than the condition.
		slog.Debug("cannot set DisruptionTarget", "pod", key, "err", err)
	}
	err := c.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{Preconditions: metav1.NewUIDPreconditions(string(pod.UID))})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("evict pod %s: %w", key, err)
	}
	c.forget(key)
	return nil
}

// event records a TaintManagerEviction event on the pod.
func (c *Controller) event(ctx context.Context, pod *corev1.Pod, msg string) {
	events.NewRecorder(c.client, Name).Event(ctx, events.Ref("v1", "Pod", pod), corev1.EventTypeNormal, "TaintManagerEviction", msg)
}
