// Package replicaset keeps the number of pods of each ReplicaSet and
// ReplicationController at its spec.replicas: it creates and deletes pods,
// adopts matching orphans, releases pods that stop matching, and reports
// status. Both kinds share one reconcile loop through the owner type, which
// says what each kind's selector, template and status are.
package replicaset

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"

	"github.com/navarch/navarch/controlplane/controllers/expectations"
	"github.com/navarch/navarch/controlplane/controllers/podindex"
	"github.com/navarch/navarch/controlplane/controllers/workloop"
)

// owner is a ReplicaSet or ReplicationController as the loop sees it.
type owner struct {
	kind, apiVersion string
	meta             metav1.ObjectMeta
	selector         labels.Selector
	replicas         int32
	template         *corev1.PodTemplateSpec
	minReadySeconds  int32
	status           status
}

// status is what both kinds report.
type status struct {
	Replicas, FullyLabeledReplicas, ReadyReplicas, AvailableReplicas int32
	ObservedGeneration                                               int64
}

// maxBurst bounds the pods one sync creates or deletes, as upstream's 500.
const maxBurst = 500

// Controller runs the loop for both kinds.
type Controller struct {
	client   kubernetes.Interface
	factory  informers.SharedInformerFactory
	queue    workqueue.TypedRateLimitingInterface[string] // "kind/namespace/name"
	pods     cache.SharedIndexInformer                    // indexed by podindex
	rsLister appslisters.ReplicaSetLister
	rcLister corelisters.ReplicationControllerLister
	get      map[string]func(ns, name string) (*owner, error)
	update   map[string]func(ctx context.Context, o *owner) error

	// expectations hold back a sync until the pods it created or
	// deleted show in the informer, so that no pod is made twice.
	expectations *expectations.Expectations
}

// New returns the controller.
func New(client kubernetes.Interface, factory informers.SharedInformerFactory) *Controller {
	return &Controller{client: client, factory: factory, expectations: expectations.New(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "replicaset"})}
}

// Run works until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	factory := c.factory
	rsInf, rcInf, podInf := factory.Apps().V1().ReplicaSets(), factory.Core().V1().ReplicationControllers(), factory.Core().V1().Pods()
	c.pods = podInf.Informer()
	if err := podindex.Add(c.pods); err != nil {
		return err
	}
	c.rsLister, c.rcLister = rsInf.Lister(), rcInf.Lister()
	rsLister, rcLister := c.rsLister, c.rcLister
	c.get = map[string]func(ns, name string) (*owner, error){
		"ReplicaSet": func(ns, name string) (*owner, error) {
			rs, err := rsLister.ReplicaSets(ns).Get(name)
			if err != nil {
				return nil, err
			}
			return fromReplicaSet(rs)
		},
		"ReplicationController": func(ns, name string) (*owner, error) {
			rc, err := rcLister.ReplicationControllers(ns).Get(name)
			if err != nil {
				return nil, err
			}
			return fromRC(rc), nil
		},
	}
	c.update = map[string]func(ctx context.Context, o *owner) error{
		"ReplicaSet":            c.updateReplicaSetStatus,
		"ReplicationController": c.updateRCStatus,
	}
	enqueueOwner := func(kind string) cache.ResourceEventHandlerFuncs {
		add := func(obj interface{}) {
			if m, err := metaOf(obj); err == nil {
				c.queue.Add(kind + "/" + m.GetNamespace() + "/" + m.GetName())
			}
		}
		return cache.ResourceEventHandlerFuncs{AddFunc: add, UpdateFunc: func(old, o interface{}) {
			// The owner's own status writes come back as updates; syncing
			// at once on each would walk all its pods per status write.
			if a, errA := metaOf(old); errA == nil {
				if b, errB := metaOf(o); errB == nil && a.GetGeneration() == b.GetGeneration() &&
					a.GetDeletionTimestamp().Equal(b.GetDeletionTimestamp()) {
					c.queue.AddAfter(kind+"/"+b.GetNamespace()+"/"+b.GetName(), statusBatch)
					return
				}
			}
			add(o)
		}}
	}
	rsInf.Informer().AddEventHandler(enqueueOwner("ReplicaSet"))
	rcInf.Informer().AddEventHandler(enqueueOwner("ReplicationController"))
	podInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj interface{}) { c.podEvent(obj, +1, 0) },
		UpdateFunc: func(old, obj interface{}) {
			o, n := old.(*corev1.Pod), obj.(*corev1.Pod)
			if statusOnly(o, n) {
				c.podChanged(n)
				return
			}
			c.podEvent(obj, 0, 0)
			c.podEvent(old, 0, 0)
		},
		DeleteFunc: func(obj interface{}) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			c.podEvent(obj, 0, +1)
		},
	})
	// Start is idempotent: it starts what other controllers have not yet.
	factory.Start(ctx.Done())
	return workloop.Run(ctx, "replicaset", c.queue, 4, c.sync, rsInf.Informer().HasSynced, rcInf.Informer().HasSynced, podInf.Informer().HasSynced)
}

func metaOf(obj interface{}) (metav1.Object, error) {
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("not an object: %T", obj)
	}
	return m, nil
}

// podEvent queues the owner of a pod, counting what it observed against
// the owner's expectations.
func (c *Controller) podEvent(obj interface{}, added, deleted int) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	ref := metav1.GetControllerOf(pod)
	if ref == nil {
		// An orphan may be adopted by any owner in its namespace that selects it.
		for _, key := range c.matchingOwners(pod) {
			c.queue.Add(key)
		}
		return
	}
	if ref.Kind != "ReplicaSet" && ref.Kind != "ReplicationController" {
		return
	}
	key := ref.Kind + "/" + pod.Namespace + "/" + ref.Name
	c.expectations.Observe(key, added, deleted)
	c.queue.Add(key)
}

// matchingOwners lists the owners in a pod's namespace whose selector
// matches it.
func (c *Controller) matchingOwners(pod *corev1.Pod) []string {
	var keys []string
	if c.rsLister != nil {
		rss, _ := c.rsLister.ReplicaSets(pod.Namespace).List(labels.Everything())
		for _, rs := range rss {
			if sel, err := metav1.LabelSelectorAsSelector(rs.Spec.Selector); err == nil && !sel.Empty() && sel.Matches(labels.Set(pod.Labels)) {
				keys = append(keys, "ReplicaSet/"+rs.Namespace+"/"+rs.Name)
			}
		}
	}
	if c.rcLister != nil {
		rcs, _ := c.rcLister.ReplicationControllers(pod.Namespace).List(labels.Everything())
		for _, rc := range rcs {
			if len(rc.Spec.Selector) > 0 && labels.SelectorFromSet(rc.Spec.Selector).Matches(labels.Set(pod.Labels)) {
				keys = append(keys, "ReplicationController/"+rc.Namespace+"/"+rc.Name)
			}
		}
	}
	return keys
}

// statusBatch is how long a pod's status change may wait before its
// owner's status is recomputed: a sync walks all of the owner's pods, so
// syncing on every one of thousands of pods going Running would make a
// rollout cost O(pods²); batching the changes of one interval costs one walk.
const statusBatch = 100 * time.Millisecond

// statusOnly reports an update that changes neither the pod's labels nor its
// owners nor its deletion: only what the owner's status counts.
func statusOnly(old, cur *corev1.Pod) bool {
	return old.DeletionTimestamp.Equal(cur.DeletionTimestamp) && isActive(old) == isActive(cur) &&
		equalLabels(old.Labels, cur.Labels) && equalRefs(old.OwnerReferences, cur.OwnerReferences)
}

func equalLabels(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func equalRefs(a, b []metav1.OwnerReference) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].UID != b[i].UID || ptr.Deref(a[i].Controller, false) != ptr.Deref(b[i].Controller, false) {
			return false
		}
	}
	return true
}

// podChanged queues, batched, the owner of a pod whose status changed.
func (c *Controller) podChanged(pod *corev1.Pod) {
	if ref := metav1.GetControllerOfNoCopy(pod); ref != nil && (ref.Kind == "ReplicaSet" || ref.Kind == "ReplicationController") {
		c.queue.AddAfter(ref.Kind+"/"+pod.Namespace+"/"+ref.Name, statusBatch)
	}
}

func isActive(p *corev1.Pod) bool {
	return p.DeletionTimestamp == nil && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed
}

func isReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func readySince(p *corev1.Pod) time.Time {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.LastTransitionTime.Time
		}
	}
	return time.Time{}
}

func (c *Controller) sync(ctx context.Context, key string) error {
	parts := strings.SplitN(key, "/", 3)
	if len(parts) != 3 {
		return nil
	}
	kind, ns, name := parts[0], parts[1], parts[2]
	o, err := c.get[kind](ns, name)
	if apierrors.IsNotFound(err) {
		return nil // its pods go with it through the garbage collector
	}
	if err != nil {
		return err
	}
	if !c.expectations.Satisfied(key) {
		return nil
	}
	var owned []*corev1.Pod
	for _, p := range podindex.Controlled(c.pods, o.meta.UID) {
		if p.Namespace != ns {
			continue
		}
		if !o.selector.Matches(labels.Set(p.Labels)) {
			// It no longer matches: release it.
			if err := c.setOwner(ctx, p, nil); err != nil {
				return err
			}
			continue
		}
		if isActive(p) {
			owned = append(owned, p)
		}
	}
	if o.meta.DeletionTimestamp == nil {
		for _, p := range podindex.Orphans(c.pods, ns) {
			if isActive(p) && o.selector.Matches(labels.Set(p.Labels)) {
				if err := c.setOwner(ctx, p, o); err != nil {
					return err
				}
				owned = append(owned, p)
			}
		}
	}
	if o.meta.DeletionTimestamp == nil {
		diff := len(owned) - int(o.replicas)
		switch {
		case diff < 0:
			n := min(-diff, maxBurst)
			c.expectations.Expect(key, n, 0)
			if err := c.createPods(ctx, o, n, key); err != nil {
				return err
			}
		case diff > 0:
			n := min(diff, maxBurst)
			ranked := deletionOrder(owned)
			victims := ranked[:n]
			c.expectations.Expect(key, 0, n)
			for _, p := range victims {
				err := c.client.CoreV1().Pods(ns).Delete(ctx, p.Name, metav1.DeleteOptions{Preconditions: metav1.NewUIDPreconditions(string(p.UID))})
				if err != nil && !apierrors.IsNotFound(err) {
					c.expectations.Expect(key, 0, 0)
					return err
				}
			}
			owned = ranked[n:]
		}
	}
	return c.reportStatus(ctx, o, owned)
}

// deletionOrder ranks pods as upstream does when scaling down: unscheduled
// before scheduled, pending before running, not ready before ready, the
// more restarted and the newer first.
func deletionOrder(pods []*corev1.Pod) []*corev1.Pod {
	out := append([]*corev1.Pod(nil), pods...)
	rank := func(p *corev1.Pod) int {
		switch {
		case p.Spec.NodeName == "":
			return 0
		case p.Status.Phase == corev1.PodPending:
			return 1
		case !isReady(p):
			return 2
		}
		return 3
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if ra, rb := rank(a), rank(b); ra != rb {
			return ra < rb
		}
		return a.CreationTimestamp.After(b.CreationTimestamp.Time)
	})
	return out
}

func (c *Controller) createPods(ctx context.Context, o *owner, n int, key string) error {
	// Slow start, as upstream: 1, 2, 4, ... at a time, so that a template
	// the API rejects costs one request, not hundreds.
	created := 0
	for batch := 1; created < n; batch *= 2 {
		size := min(batch, n-created)
		errs := make(chan error, size)
		var wg sync.WaitGroup
		for i := 0; i < size; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := c.client.CoreV1().Pods(o.meta.Namespace).Create(ctx, newPod(o), metav1.CreateOptions{})
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		failed := 0
		var first error
		for err := range errs {
			if err != nil {
				failed++
				if first == nil {
					first = err
				}
			}
		}
		created += size
		if failed > 0 {
			// These creations will never be seen.
			c.expectations.Observe(key, failed+(n-created), 0)
			return fmt.Errorf("create pods for %s: %w", key, first)
		}
	}
	return nil
}

// newPod makes a pod from the owner's template, owned by it.
func newPod(o *owner) *corev1.Pod {
	t := o.template
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: o.meta.Name + "-", Namespace: o.meta.Namespace,
			Labels: t.Labels, Annotations: t.Annotations, Finalizers: t.Finalizers,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: o.apiVersion, Kind: o.kind, Name: o.meta.Name, UID: o.meta.UID,
				Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}},
		},
		Spec: *t.Spec.DeepCopy(),
	}
}

// setOwner adopts (o != nil) or releases (o == nil) a pod, guarded by its uid.
func (c *Controller) setOwner(ctx context.Context, p *corev1.Pod, o *owner) error {
	var refs []metav1.OwnerReference
	for _, r := range p.OwnerReferences {
		if r.Controller == nil || !*r.Controller {
			refs = append(refs, r)
		}
	}
	if o != nil {
		refs = append(refs, metav1.OwnerReference{APIVersion: o.apiVersion, Kind: o.kind, Name: o.meta.Name, UID: o.meta.UID,
			Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)})
	}
	patch := map[string]interface{}{"metadata": map[string]interface{}{"ownerReferences": refs, "uid": p.UID}}
	data, _ := json.Marshal(patch)
	_, err := c.client.CoreV1().Pods(p.Namespace).Patch(ctx, p.Name, types.MergePatchType, data, metav1.PatchOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func (c *Controller) reportStatus(ctx context.Context, o *owner, owned []*corev1.Pod) error {
	st := status{Replicas: int32(len(owned)), ObservedGeneration: o.meta.Generation}
	templateLabels := labels.SelectorFromSet(o.template.Labels)
	for _, p := range owned {
		if templateLabels.Matches(labels.Set(p.Labels)) {
			st.FullyLabeledReplicas++
		}
		if isReady(p) {
			st.ReadyReplicas++
			if time.Since(readySince(p)) >= time.Duration(o.minReadySeconds)*time.Second {
				st.AvailableReplicas++
			}
		}
	}
	if st == o.status {
		return nil
	}
	o.status = st
	if err := c.update[o.kind](ctx, o); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	if o.minReadySeconds > 0 && st.ReadyReplicas > st.AvailableReplicas {
		// Check again when the ready pods have been ready long enough.
		c.queue.AddAfter(o.kind+"/"+o.meta.Namespace+"/"+o.meta.Name, time.Duration(o.minReadySeconds)*time.Second)
	}
	return nil
}

func fromReplicaSet(rs *appsv1.ReplicaSet) (*owner, error) {
	sel, err := metav1.LabelSelectorAsSelector(rs.Spec.Selector)
	if err != nil {
		return nil, fmt.Errorf("replicaset %q in namespace %q: %w", rs.Name, rs.Namespace, err)
	}
	return &owner{kind: "ReplicaSet", apiVersion: "apps/v1", meta: rs.ObjectMeta, selector: sel,
		replicas: ptr.Deref(rs.Spec.Replicas, 1), template: &rs.Spec.Template, minReadySeconds: rs.Spec.MinReadySeconds,
		status: status{Replicas: rs.Status.Replicas, FullyLabeledReplicas: rs.Status.FullyLabeledReplicas, ReadyReplicas: rs.Status.ReadyReplicas,
			AvailableReplicas: rs.Status.AvailableReplicas, ObservedGeneration: rs.Status.ObservedGeneration}}, nil
}

func fromRC(rc *corev1.ReplicationController) *owner {
	t := rc.Spec.Template
	if t == nil {
		t = &corev1.PodTemplateSpec{}
	}
	return &owner{kind: "ReplicationController", apiVersion: "v1", meta: rc.ObjectMeta, selector: labels.SelectorFromSet(rc.Spec.Selector),
		replicas: ptr.Deref(rc.Spec.Replicas, 1), template: t, minReadySeconds: rc.Spec.MinReadySeconds,
		status: status{Replicas: rc.Status.Replicas, FullyLabeledReplicas: rc.Status.FullyLabeledReplicas, ReadyReplicas: rc.Status.ReadyReplicas,
			AvailableReplicas: rc.Status.AvailableReplicas, ObservedGeneration: rc.Status.ObservedGeneration}}
}

func (c *Controller) updateReplicaSetStatus(ctx context.Context, o *owner) error {
	rs, err := c.client.AppsV1().ReplicaSets(o.meta.Namespace).Get(ctx, o.meta.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	rs.Status.Replicas, rs.Status.FullyLabeledReplicas = o.status.Replicas, o.status.FullyLabeledReplicas
	rs.Status.ReadyReplicas, rs.Status.AvailableReplicas = o.status.ReadyReplicas, o.status.AvailableReplicas
	rs.Status.ObservedGeneration = o.status.ObservedGeneration
	_, err = c.client.AppsV1().ReplicaSets(o.meta.Namespace).UpdateStatus(ctx, rs, metav1.UpdateOptions{})
	return err
}

func (c *Controller) updateRCStatus(ctx context.Context, o *owner) error {
	rc, err := c.client.CoreV1().ReplicationControllers(o.meta.Namespace).Get(ctx, o.meta.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	rc.Status.Replicas, rc.Status.FullyLabeledReplicas = o.status.Replicas, o.status.FullyLabeledReplicas
	rc.Status.ReadyReplicas, rc.Status.AvailableReplicas = o.status.ReadyReplicas, o.status.AvailableReplicas
	rc.Status.ObservedGeneration = o.status.ObservedGeneration
	_, err = c.client.CoreV1().ReplicationControllers(o.meta.Namespace).UpdateStatus(ctx, rc, metav1.UpdateOptions{})
	return err
}
