// Package daemonset keeps one pod of each DaemonSet on every node that the
// pod template fits (node selector, required node affinity, NoSchedule and
// NoExecute taints). It creates the pods with a node affinity to their node,
// so the default scheduler binds them, as upstream does; deletes them from
// nodes that stop fitting; replaces failed ones; records the template
// history in ControllerRevisions (what `kubectl rollout history/undo`
// read); rolls pods to a new template node by node (RollingUpdate) or as
// they are deleted (OnDelete); adopts and releases pods by selector; and
// reports the status `kubectl rollout status` and `kubectl get ds` read.
package daemonset

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/flowcontrol"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"

	"github.com/navarch/navarch/controlplane/controllers/expectations"
	"github.com/navarch/navarch/controlplane/controllers/workloop"
	"github.com/navarch/navarch/controlplane/events"
)

// Labels the controller puts on its pods and revisions.
const (
	// HashLabel names the ControllerRevision a pod was made from.
	HashLabel = appsv1.DefaultDaemonSetUniqueLabelKey // controller-revision-hash
	// GenerationLabel is the DaemonSet's template generation a pod was made
	// from (the deprecated.daemonset.template.generation annotation).
	GenerationLabel = "pod-template-generation"
)

// maxBurst bounds the pods one sync creates, as upstream's burst of 250.
const maxBurst = 250

// Controller reconciles DaemonSets.
type Controller struct {
	client  kubernetes.Interface
	factory informers.SharedInformerFactory
	queue   workqueue.TypedRateLimitingInterface[string] // namespace/name
	dsl     appslisters.DaemonSetLister
	pods    corelisters.PodLister
	nodes   corelisters.NodeLister
	revs    appslisters.ControllerRevisionLister

	// failed backs off the replacement of failed pods per DaemonSet and
	// node, as upstream: a node that keeps failing them (a kubelet refusing
	// the pod) must not make the controller spin.
	failed *flowcontrol.Backoff

	// expectations hold back a sync until the pods it created or
	// deleted show in the informer, so that no node gets two pods.
	expectations *expectations.Expectations
}

// New returns the controller; it registers its informers with factory.
func New(client kubernetes.Interface, factory informers.SharedInformerFactory) *Controller {
	return &Controller{client: client, factory: factory, expectations: expectations.New(),
		failed: flowcontrol.NewBackOff(time.Second, 15*time.Minute),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "daemonset"})}
}

// Run works until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	f := c.factory
	dsInf, podInf, nodeInf, revInf := f.Apps().V1().DaemonSets(), f.Core().V1().Pods(), f.Core().V1().Nodes(), f.Apps().V1().ControllerRevisions()
	c.dsl, c.pods, c.nodes, c.revs = dsInf.Lister(), podInf.Lister(), nodeInf.Lister(), revInf.Lister()

	addDS := func(obj interface{}) {
		if ds, ok := obj.(*appsv1.DaemonSet); ok {
			c.queue.Add(ds.Namespace + "/" + ds.Name)
		}
	}
	dsInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: addDS, UpdateFunc: func(_, o interface{}) { addDS(o) },
		DeleteFunc: func(obj interface{}) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if ds, ok := obj.(*appsv1.DaemonSet); ok {
				c.expectations.Forget(ds.Namespace + "/" + ds.Name)
			}
		}})
	podInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj interface{}) { c.podEvent(obj, 1, 0) },
		UpdateFunc: func(old, obj interface{}) {
			c.podEvent(obj, 0, 0)
			if o, n := old.(*corev1.Pod), obj.(*corev1.Pod); !labels.Equals(o.Labels, n.Labels) || !apiequality.Semantic.DeepEqual(o.OwnerReferences, n.OwnerReferences) {
				c.podEvent(old, 0, 0) // its former owner may have to replace it
			}
		},
		DeleteFunc: func(obj interface{}) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			c.podEvent(obj, 0, 1)
		},
	})
	// Any node change may change where every DaemonSet should run, but only
	// labels and taints (and a node coming or going) do.
	nodeInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(interface{}) { c.enqueueAll() },
		UpdateFunc: func(old, obj interface{}) {
			o, n := old.(*corev1.Node), obj.(*corev1.Node)
			if !labels.Equals(o.Labels, n.Labels) || !apiequality.Semantic.DeepEqual(o.Spec.Taints, n.Spec.Taints) {
				c.enqueueAll()
			}
		},
		DeleteFunc: func(interface{}) { c.enqueueAll() },
	})
	// A deleted revision is made again; kubectl rollout undo changes the
	// DaemonSet itself, which is watched above.
	revInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{DeleteFunc: func(obj interface{}) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if r, ok := obj.(*appsv1.ControllerRevision); ok {
			if ref := metav1.GetControllerOf(r); ref != nil && ref.Kind == "DaemonSet" {
				c.queue.Add(r.Namespace + "/" + ref.Name)
			}
		}
	}})
	go func() {
		// Forget the back-off of nodes whose pods stopped failing.
		t := time.NewTicker(time.Minute)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				c.failed.GC()
			}
		}
	}()
	// Start is idempotent: it starts what other controllers have not yet.
	f.Start(ctx.Done())
	return workloop.Run(ctx, "daemonset", c.queue, 4, c.sync,
		dsInf.Informer().HasSynced, podInf.Informer().HasSynced, nodeInf.Informer().HasSynced, revInf.Informer().HasSynced)
}

func (c *Controller) enqueueAll() {
	all, _ := c.dsl.List(labels.Everything())
	for _, ds := range all {
		c.queue.Add(ds.Namespace + "/" + ds.Name)
	}
}

// podEvent queues the DaemonSet of a pod, counting what it observed
// against its expectations; an orphan queues every DaemonSet selecting it.
func (c *Controller) podEvent(obj interface{}, added, deleted int) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	ref := metav1.GetControllerOf(pod)
	if ref == nil {
		if pod.DeletionTimestamp != nil || deleted > 0 {
			return
		}
		dss, _ := c.dsl.DaemonSets(pod.Namespace).List(labels.Everything())
		for _, ds := range dss {
			if sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector); err == nil && !sel.Empty() && sel.Matches(labels.Set(pod.Labels)) {
				c.queue.Add(ds.Namespace + "/" + ds.Name)
			}
		}
		return
	}
	if ref.Kind != "DaemonSet" {
		return
	}
	key := pod.Namespace + "/" + ref.Name
	c.expectations.Observe(key, added, deleted)
	c.queue.Add(key)
}

// replaceFailed reports whether a failed pod of ds on node may be replaced
// now; if not, the DaemonSet is looked at again when it may.
func (c *Controller) replaceFailed(ds *appsv1.DaemonSet, node string) bool {
	key := ds.Namespace + "/" + ds.Name + "/" + node
	now := time.Now()
	if c.failed.IsInBackOffSinceUpdate(key, now) {
		c.queue.AddAfter(ds.Namespace+"/"+ds.Name, c.failed.Get(key))
		return false
	}
	c.failed.Next(key, now)
	return true
}

func (c *Controller) sync(ctx context.Context, key string) error {
	ns, name, _ := strings.Cut(key, "/")
	cached, err := c.dsl.DaemonSets(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil // its pods and revisions go with it through the garbage collector
	}
	if err != nil {
		return err
	}
	if cached.DeletionTimestamp != nil {
		return nil
	}
	ds := cached.DeepCopy()
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil || sel.Empty() {
		return nil // validation refuses these; nothing sensible to select
	}
	nodes, err := c.nodes.List(labels.Everything())
	if err != nil {
		return err
	}
	cur, old, err := c.history(ctx, ds, sel)
	if err != nil {
		return fmt.Errorf("daemonset %s/%s: %w", ns, name, err)
	}
	hash := cur.Labels[HashLabel]
	byNode, err := c.claimPods(ctx, ds, sel)
	if err != nil {
		return fmt.Errorf("daemonset %s/%s: %w", ns, name, err)
	}
	if !c.expectations.Satisfied(key) {
		return c.updateStatus(ctx, ds, nodes, byNode, hash, false)
	}
	create, del := manage(ds, nodes, byNode, hash, func(node string, p *corev1.Pod) bool {
		if !c.replaceFailed(ds, node) {
			return false
		}
		c.event(ctx, ds, corev1.EventTypeWarning, "FailedDaemonPod", fmt.Sprintf("Found failed daemon pod %s/%s on node %s, will try to kill it", p.Namespace, p.Name, node))
		return true
	})
	if len(create) == 0 && len(del) == 0 && ds.Spec.UpdateStrategy.Type == appsv1.RollingUpdateDaemonSetStrategyType {
		// Roll only once the pods are where they should be.
		create, del = rollingUpdate(ds, nodes, byNode, hash)
	}
	if err := c.syncNodes(ctx, ds, key, create, del, hash); err != nil {
		return fmt.Errorf("daemonset %s/%s: %w", ns, name, err)
	}
	if err := c.cleanupHistory(ctx, ds, old, byNode); err != nil {
		return fmt.Errorf("daemonset %s/%s: %w", ns, name, err)
	}
	return c.updateStatus(ctx, ds, nodes, byNode, hash, true)
}

// claimPods adopts the orphans the selector matches and releases owned
// pods it no longer matches, as the replicaset controller does; it returns
// the owned pods by the node they are for (terminal pods being deleted are
// left out, as upstream).
func (c *Controller) claimPods(ctx context.Context, ds *appsv1.DaemonSet, sel labels.Selector) (map[string][]*corev1.Pod, error) {
	all, err := c.pods.Pods(ds.Namespace).List(labels.Everything())
	if err != nil {
		return nil, err
	}
	byNode := map[string][]*corev1.Pod{}
	for _, p := range all {
		ref := metav1.GetControllerOf(p)
		matches := sel.Matches(labels.Set(p.Labels))
		switch {
		case ref != nil && ref.UID == ds.UID:
			if !matches {
				if err := c.setOwner(ctx, p, nil); err != nil {
					return nil, err
				}
				continue
			}
		case ref == nil && matches && p.DeletionTimestamp == nil:
			if err := c.setOwner(ctx, p, ds); err != nil {
				return nil, err
			}
		default:
			continue
		}
		if p.DeletionTimestamp != nil && (p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed) {
			continue
		}
		node := targetNode(p)
		if node == "" {
			continue // an adopted pod naming no node: upstream leaves it be
		}
		byNode[node] = append(byNode[node], p)
	}
	return byNode, nil
}

// setOwner adopts (ds != nil) or releases (ds == nil) a pod, guarded by its uid.
func (c *Controller) setOwner(ctx context.Context, p *corev1.Pod, ds *appsv1.DaemonSet) error {
	refs := []metav1.OwnerReference{}
	for _, r := range p.OwnerReferences {
		if !ptr.Deref(r.Controller, false) {
			refs = append(refs, r)
		}
	}
	if ds != nil {
		refs = append(refs, *metav1.NewControllerRef(ds, appsv1.SchemeGroupVersion.WithKind("DaemonSet")))
	}
	data, _ := json.Marshal(map[string]interface{}{"metadata": map[string]interface{}{"ownerReferences": refs, "uid": p.UID}})
	_, err := c.client.CoreV1().Pods(p.Namespace).Patch(ctx, p.Name, types.MergePatchType, data, metav1.PatchOptions{})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil // gone or replaced meanwhile
	}
	if err != nil {
		return fmt.Errorf("pod %s/%s: set owner: %w", p.Namespace, p.Name, err)
	}
	return nil
}

// syncNodes creates pods on the given nodes and deletes the given pods,
// expecting to see each; creations go in slow-start batches, so that a
// template the API rejects costs one request, not one per node.
func (c *Controller) syncNodes(ctx context.Context, ds *appsv1.DaemonSet, key string, create []string, del []*corev1.Pod, hash string) error {
	create = create[:min(len(create), maxBurst)]
	if len(create) == 0 && len(del) == 0 {
		return nil
	}
	c.expectations.Expect(key, len(create), len(del))
	pods := c.client.CoreV1().Pods(ds.Namespace)
	var firstErr error
	for _, p := range del {
		err := pods.Delete(ctx, p.Name, metav1.DeleteOptions{Preconditions: metav1.NewUIDPreconditions(string(p.UID))})
		if err != nil {
			c.expectations.Observe(key, 0, 1)
			if !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) && firstErr == nil {
				firstErr = fmt.Errorf("delete pod %s: %w", p.Name, err)
				c.event(ctx, ds, corev1.EventTypeWarning, "FailedDelete", fmt.Sprintf("Error deleting: %v", err))
			}
			continue
		}
		c.event(ctx, ds, corev1.EventTypeNormal, "SuccessfulDelete", "Deleted pod: "+p.Name)
	}
	done := 0
	for batch := 1; done < len(create); batch *= 2 {
		nodes := create[done:min(done+batch, len(create))]
		errs := make(chan error, len(nodes))
		var wg sync.WaitGroup
		for _, node := range nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				created, err := pods.Create(ctx, newPod(ds, node, hash), metav1.CreateOptions{})
				if err != nil {
					c.event(ctx, ds, corev1.EventTypeWarning, "FailedCreate", fmt.Sprintf("Error creating: %v", err))
					errs <- fmt.Errorf("create pod on node %s: %w", node, err)
					return
				}
				c.event(ctx, ds, corev1.EventTypeNormal, "SuccessfulCreate", "Created pod: "+created.Name)
				errs <- nil
			}()
		}
		wg.Wait()
		close(errs)
		done += len(nodes)
		failed := 0
		for err := range errs {
			if err != nil {
				failed++
				if firstErr == nil {
					firstErr = err
				}
			}
		}
		if failed > 0 {
			// The rest are not tried this time: take back their expectations too.
			c.expectations.Observe(key, failed+len(create)-done, 0)
			break
		}
	}
	if firstErr == nil && len(create)+len(del) > 0 {
		slog.Debug("daemon pods synced", "daemonset", key, "created", len(create), "deleted", len(del))
	}
	return firstErr
}

// updateStatus reports, node by node as upstream, how many should run the
// pod, run it, run it ready, available and up to date, and run it wrongly.
func (c *Controller) updateStatus(ctx context.Context, ds *appsv1.DaemonSet, nodes []*corev1.Node, byNode map[string][]*corev1.Pod, hash string, observed bool) error {
	st := ds.Status.DeepCopy()
	st.DesiredNumberScheduled, st.CurrentNumberScheduled, st.NumberMisscheduled = 0, 0, 0
	st.NumberReady, st.NumberAvailable, st.UpdatedNumberScheduled = 0, 0, 0
	if observed {
		st.ObservedGeneration = ds.Generation
	}
	now := time.Now()
	gen := templateGeneration(ds)
	for _, node := range nodes {
		should, _ := shouldRun(ds, node)
		pods := byNode[node.Name]
		if !should {
			if len(pods) > 0 {
				st.NumberMisscheduled++
			}
			continue
		}
		st.DesiredNumberScheduled++
		if len(pods) == 0 {
			continue
		}
		st.CurrentNumberScheduled++
		pod := oldest(pods)
		if isReady(pod) {
			st.NumberReady++
			if isAvailable(pod, ds.Spec.MinReadySeconds, now) {
				st.NumberAvailable++
			}
		}
		if isUpdated(pod, hash, gen) {
			st.UpdatedNumberScheduled++
		}
	}
	st.NumberUnavailable = st.DesiredNumberScheduled - st.NumberAvailable
	if ds.Spec.MinReadySeconds > 0 && st.NumberReady != st.NumberAvailable {
		// Look again when the ready pods have been ready long enough.
		c.queue.AddAfter(ds.Namespace+"/"+ds.Name, time.Duration(ds.Spec.MinReadySeconds)*time.Second)
	}
	if apiequality.Semantic.DeepEqual(*st, ds.Status) {
		return nil
	}
	daemonsets := c.client.AppsV1().DaemonSets(ds.Namespace)
	for attempt := 0; ; attempt++ {
		ds.Status = *st
		_, err := daemonsets.UpdateStatus(ctx, ds, metav1.UpdateOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if !apierrors.IsConflict(err) || attempt > 0 {
			if err != nil {
				return fmt.Errorf("daemonset %s/%s: update status: %w", ds.Namespace, ds.Name, err)
			}
			return nil
		}
		// Keep what another writer (a collision count) set; report ours over it.
		fresh, err := daemonsets.Get(ctx, ds.Name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("daemonset %s/%s: %w", ds.Namespace, ds.Name, err)
		}
		if fresh.Generation != ds.Generation {
			return nil // changed meanwhile: the next sync reports on the new spec
		}
		st.CollisionCount = fresh.Status.CollisionCount
		ds = fresh
	}
}

// event records an event on the DaemonSet, as upstream's controller does
// for the pods it creates and deletes (`kubectl describe ds`). It is best
// effort: a lost event must not fail the sync.
func (c *Controller) event(ctx context.Context, ds *appsv1.DaemonSet, typ, reason, msg string) {
	events.NewRecorder(c.client, "daemonset-controller").Event(ctx, events.Ref("apps/v1", "DaemonSet", ds), typ, reason, msg)
}
