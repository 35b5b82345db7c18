// Package statefulset runs StatefulSets: pods with stable names
// (NAME-0..NAME-N-1), stable DNS identities under the governing Service and
// one PersistentVolumeClaim per claim template and ordinal, created in
// ordinal order and removed from the highest ordinal (OrderedReady) or all
// at once (Parallel). Pod template history is kept in ControllerRevisions,
// as upstream keeps it, so that kubectl's rollout status, history and undo
// work; rolling updates replace pods from the highest ordinal down to the
// partition, one at a time.
package statefulset

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strings"
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
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"

	"github.com/navarch/navarch/controlplane/controllers/workloop"
)

// Controller reconciles StatefulSets.
type Controller struct {
	client    kubernetes.Interface
	factory   informers.SharedInformerFactory
	queue     workqueue.TypedRateLimitingInterface[string] // namespace/name
	sets      appslisters.StatefulSetLister
	pods      corelisters.PodLister
	revisions appslisters.ControllerRevisionLister
	claims    corelisters.PersistentVolumeClaimLister
}

// New returns the controller; its informers come from factory.
func New(client kubernetes.Interface, factory informers.SharedInformerFactory) *Controller {
	return &Controller{client: client, factory: factory, queue: workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.DefaultTypedControllerRateLimiter[string](), workqueue.TypedRateLimitingQueueConfig[string]{Name: "statefulset"})}
}

// Run works until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	f := c.factory
	setInf, podInf, crInf, pvcInf := f.Apps().V1().StatefulSets(), f.Core().V1().Pods(), f.Apps().V1().ControllerRevisions(), f.Core().V1().PersistentVolumeClaims()
	c.sets, c.pods, c.revisions, c.claims = setInf.Lister(), podInf.Lister(), crInf.Lister(), pvcInf.Lister()

	addSet := func(obj interface{}) {
		if s, ok := obj.(*appsv1.StatefulSet); ok {
			c.queue.Add(s.Namespace + "/" + s.Name)
		}
	}
	setInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: addSet, UpdateFunc: func(_, o interface{}) { addSet(o) }})
	podInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.podEvent,
		UpdateFunc: func(old, obj interface{}) { c.podEvent(obj); c.podEvent(old) },
		DeleteFunc: c.podEvent,
	})
	byOwner := func(obj interface{}) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if cr, ok := obj.(*appsv1.ControllerRevision); ok {
			if ref := metav1.GetControllerOf(cr); ref != nil && ref.Kind == "StatefulSet" {
				c.queue.Add(cr.Namespace + "/" + ref.Name)
			}
		}
	}
	crInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: byOwner, UpdateFunc: func(_, o interface{}) { byOwner(o) }, DeleteFunc: byOwner})
	pvcInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(_, o interface{}) { c.claimEvent(o) }, DeleteFunc: c.claimEvent,
	})
	// Start is idempotent: it starts what other controllers have not yet.
	f.Start(ctx.Done())
	return workloop.Run(ctx, "statefulset", c.queue, 4, c.sync,
		setInf.Informer().HasSynced, podInf.Informer().HasSynced, crInf.Informer().HasSynced, pvcInf.Informer().HasSynced)
}

// podEvent queues the set owning a pod, or every set that could adopt it.
func (c *Controller) podEvent(obj interface{}) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	if ref := metav1.GetControllerOf(pod); ref != nil {
		if ref.Kind == "StatefulSet" {
			c.queue.Add(pod.Namespace + "/" + ref.Name)
		}
		return
	}
	sets, _ := c.sets.StatefulSets(pod.Namespace).List(labels.Everything())
	for _, s := range sets {
		if sel, err := metav1.LabelSelectorAsSelector(s.Spec.Selector); err == nil && !sel.Empty() && sel.Matches(labels.Set(pod.Labels)) {
			c.queue.Add(s.Namespace + "/" + s.Name)
		}
	}
}

// claimEvent queues the sets whose claims a changed or deleted claim may
// be: a scale-up waits for a claim of its ordinal to finish deleting.
func (c *Controller) claimEvent(obj interface{}) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	claim, ok := obj.(*corev1.PersistentVolumeClaim)
	if !ok {
		return
	}
	sets, _ := c.sets.StatefulSets(claim.Namespace).List(labels.Everything())
	for _, s := range sets {
		for i := range s.Spec.VolumeClaimTemplates {
			if strings.HasPrefix(claim.Name, s.Spec.VolumeClaimTemplates[i].Name+"-"+s.Name+"-") {
				c.queue.Add(s.Namespace + "/" + s.Name)
				break
			}
		}
	}
}

func startOrdinal(set *appsv1.StatefulSet) int {
	if set.Spec.Ordinals != nil {
		return int(set.Spec.Ordinals.Start)
	}
	return 0
}

func (c *Controller) sync(ctx context.Context, key string) error {
	ns, name, _ := strings.Cut(key, "/")
	cached, err := c.sets.StatefulSets(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil // its pods and revisions go with it through the garbage collector
	}
	if err != nil {
		return err
	}
	set := cached.DeepCopy()
	sel, err := metav1.LabelSelectorAsSelector(set.Spec.Selector)
	if err != nil || sel.Empty() {
		return nil // validation refuses these; nothing to select
	}
	pods, err := c.ownedPods(ctx, set, sel)
	if err != nil {
		return err
	}
	allRevs, err := c.revisions.ControllerRevisions(ns).List(labels.Everything())
	if err != nil {
		return err
	}
	var owned []*appsv1.ControllerRevision
	for _, cr := range allRevs {
		switch {
		case metav1.IsControlledBy(cr, set):
			owned = append(owned, cr)
		case metav1.GetControllerOf(cr) == nil && set.DeletionTimestamp == nil && sel.Matches(labels.Set(cr.Labels)):
			// History orphaned with the set (--cascade=orphan) is taken back,
			// so a set made again reuses its revisions, as upstream does.
			adopted, err := c.adoptRevision(ctx, set, cr)
			if err != nil {
				return err
			}
			if adopted != nil {
				owned = append(owned, adopted)
			}
		}
	}
	current, update, collisions, err := c.resolveRevisions(ctx, set, owned)
	if err != nil {
		if collisions != ptr.Deref(set.Status.CollisionCount, 0) {
			set.Status.CollisionCount = ptr.To(collisions)
			if _, uerr := c.client.AppsV1().StatefulSets(ns).UpdateStatus(ctx, set, metav1.UpdateOptions{}); uerr != nil && !apierrors.IsNotFound(uerr) {
				return uerr
			}
		}
		return err
	}
	currentTemplate, err := revisionTemplate(current)
	if err != nil {
		currentTemplate = &set.Spec.Template
	}

	var requeue time.Duration
	if set.DeletionTimestamp == nil {
		if requeue, err = c.reconcile(ctx, set, pods, currentTemplate, current, update); err != nil {
			return err
		}
		// What reconcile did shows in the next sync; status now reports
		// what the cache shows, which the informer will correct.
	}
	if err := c.updateStatus(ctx, set, pods, current, update, collisions); err != nil {
		return err
	}
	if err := c.truncateHistory(ctx, set, owned, pods, current, update); err != nil {
		return err
	}
	if requeue > 0 {
		c.queue.AddAfter(key, requeue)
	}
	return nil
}

// ownedPods lists the set's pods, adopting orphans that match its selector
// and carry its name, and releasing pods that no longer match.
func (c *Controller) ownedPods(ctx context.Context, set *appsv1.StatefulSet, sel labels.Selector) ([]*corev1.Pod, error) {
	all, err := c.pods.Pods(set.Namespace).List(labels.Everything())
	if err != nil {
		return nil, err
	}
	var owned []*corev1.Pod
	for _, p := range all {
		ref := metav1.GetControllerOf(p)
		matches := sel.Matches(labels.Set(p.Labels))
		switch {
		case ref != nil && ref.UID == set.UID && !matches:
			if err := c.setPodOwner(ctx, p, nil); err != nil {
				return nil, err
			}
		case ref != nil && ref.UID == set.UID:
			owned = append(owned, p)
		case ref == nil && matches && set.DeletionTimestamp == nil && ordinalOf(set, p) >= 0 && !isTerminating(p):
			if err := c.setPodOwner(ctx, p, set); err != nil {
				return nil, err
			}
			owned = append(owned, p)
		}
	}
	return owned, nil
}

// setPodOwner adopts (set != nil) or releases a pod, guarded by its uid.
func (c *Controller) setPodOwner(ctx context.Context, p *corev1.Pod, set *appsv1.StatefulSet) error {
	var refs []metav1.OwnerReference
	for _, r := range p.OwnerReferences {
		if r.Controller == nil || !*r.Controller {
			refs = append(refs, r)
		}
	}
	if set != nil {
		refs = append(refs, *metav1.NewControllerRef(set, setKind))
	}
	patch, _ := json.Marshal(map[string]interface{}{"metadata": map[string]interface{}{"ownerReferences": refs, "uid": p.UID}})
	_, err := c.client.CoreV1().Pods(p.Namespace).Patch(ctx, p.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("pod %s/%s: controller reference: %w", p.Namespace, p.Name, err)
	}
	return nil
}

// adoptRevision makes set the controller of an orphan revision, guarded by
// its uid; nil when it is gone.
func (c *Controller) adoptRevision(ctx context.Context, set *appsv1.StatefulSet, cr *appsv1.ControllerRevision) (*appsv1.ControllerRevision, error) {
	refs := append(append([]metav1.OwnerReference(nil), cr.OwnerReferences...), *metav1.NewControllerRef(set, setKind))
	patch, _ := json.Marshal(map[string]interface{}{"metadata": map[string]interface{}{"ownerReferences": refs, "uid": cr.UID}})
	adopted, err := c.client.AppsV1().ControllerRevisions(cr.Namespace).Patch(ctx, cr.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("statefulset %s/%s: adopt revision %s: %w", set.Namespace, set.Name, cr.Name, err)
	}
	return adopted, nil
}

// reconcile makes one step towards the spec: the pods of the ordinals in
// range exist, those beyond it go, and pods at an old revision are
// replaced. OrderedReady stops at the first pod that is not yet healthy;
// Parallel acts on every ordinal at once. It returns when to look again
// for a wait no event will end (minReadySeconds).
func (c *Controller) reconcile(ctx context.Context, set *appsv1.StatefulSet, pods []*corev1.Pod, currentTemplate *corev1.PodTemplateSpec,
	current, update *appsv1.ControllerRevision) (time.Duration, error) {
	ordered := set.Spec.PodManagementPolicy != appsv1.ParallelPodManagement
	start, replicas := startOrdinal(set), int(ptr.Deref(set.Spec.Replicas, 1))
	inRange := make([]*corev1.Pod, replicas) // by ordinal - start
	var condemned []*corev1.Pod
	for _, p := range pods {
		ord := ordinalOf(set, p)
		switch {
		case ord >= start && ord < start+replicas:
			inRange[ord-start] = p
		case ord >= 0:
			condemned = append(condemned, p)
		}
	}
	// Highest ordinal first, as upstream removes them.
	sort.Slice(condemned, func(i, j int) bool { return ordinalOf(set, condemned[i]) > ordinalOf(set, condemned[j]) })
	partition := 0
	if set.Spec.UpdateStrategy.Type != appsv1.OnDeleteStatefulSetStrategyType && set.Spec.UpdateStrategy.RollingUpdate != nil {
		partition = int(ptr.Deref(set.Spec.UpdateStrategy.RollingUpdate.Partition, 0))
	}
	// A new pod below the partition keeps the current revision, so a
	// partitioned rollout does not spread by recreation; OnDelete pods
	// always come back at the update revision.
	templateFor := func(i int) (*corev1.PodTemplateSpec, string) {
		if set.Spec.UpdateStrategy.Type != appsv1.OnDeleteStatefulSetStrategyType && i < partition {
			return currentTemplate, current.Name
		}
		return &set.Spec.Template, update.Name
	}

	var requeue time.Duration
	now := time.Now()
	for i, p := range inRange {
		ord := start + i
		if p != nil && isFinished(p) && !isTerminating(p) {
			// A pod of a set runs forever; one that ended is replaced.
			slog.Info("statefulset pod finished, recreating", "statefulset", set.Namespace+"/"+set.Name, "pod", p.Name, "phase", p.Status.Phase)
			reason, what := "RecreatingFailedPod", "failed"
			if p.Status.Phase == corev1.PodSucceeded {
				reason, what = "RecreatingTerminatedPod", "terminated"
			}
			c.event(ctx, set, corev1.EventTypeWarning, reason, fmt.Sprintf("StatefulSet %s/%s is recreating %s Pod %s", set.Namespace, set.Name, what, p.Name))
			if err := c.deletePod(ctx, set, p); err != nil {
				return 0, err
			}
			if ordered {
				return 0, nil
			}
			continue
		}
		if p == nil {
			if err := c.ensureClaims(ctx, set, ord); err != nil {
				return 0, err
			}
			t, rev := templateFor(i)
			_, err := c.client.CoreV1().Pods(set.Namespace).Create(ctx, newPod(set, t, rev, ord), metav1.CreateOptions{})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				c.event(ctx, set, corev1.EventTypeWarning, "FailedCreate",
					fmt.Sprintf("create Pod %s in StatefulSet %s failed error: %v", podName(set, ord), set.Name, err))
				return 0, fmt.Errorf("statefulset %s/%s: create pod %s: %w", set.Namespace, set.Name, podName(set, ord), err)
			}
			if err == nil {
				c.event(ctx, set, corev1.EventTypeNormal, "SuccessfulCreate", fmt.Sprintf("create Pod %s in StatefulSet %s successful", podName(set, ord), set.Name))
			}
			if ordered {
				return 0, nil // the next ordinal waits for this one to be ready
			}
			continue
		}
		if p.Status.Phase == corev1.PodPending {
			// A claim deleted by hand is made again while the pod waits for it.
			if err := c.ensureClaims(ctx, set, ord); err != nil {
				return 0, err
			}
		}
		if isTerminating(p) && ordered {
			return 0, nil
		}
		if err := c.keepIdentity(ctx, set, p, ord); err != nil {
			return 0, err
		}
		if !isRunningAndReady(p) && ordered {
			return 0, nil
		}
		if wait := availableIn(p, set.Spec.MinReadySeconds, now); wait > 0 {
			if ordered {
				return wait, nil
			}
			if requeue == 0 || wait < requeue {
				requeue = wait
			}
		}
	}

	// Scale down, highest ordinal first. OrderedReady removes one at a
	// time and only while every remaining pod is healthy.
	for _, p := range condemned {
		ord := ordinalOf(set, p)
		if err := c.syncClaimOwners(ctx, set, p, ord); err != nil {
			return 0, err
		}
		if isTerminating(p) {
			if ordered {
				return 0, nil
			}
			continue
		}
		if ordered && !isHealthy(p) && p != firstUnhealthy(inRange, condemned) {
			return 0, nil
		}
		if err := c.deletePod(ctx, set, p); err != nil {
			return 0, err
		}
		if ordered {
			return 0, nil
		}
	}

	if set.Spec.UpdateStrategy.Type == appsv1.OnDeleteStatefulSetStrategyType {
		return requeue, nil // pods take the new template when deleted by hand
	}
	// Rolling update: replace the highest pod not at the update revision,
	// down to the partition, one at a time, each once the ones above are
	// healthy again.
	for i := len(inRange) - 1; i >= partition; i-- {
		p := inRange[i]
		if p == nil {
			return requeue, nil
		}
		if p.Labels[revisionLabel] != update.Name && !isTerminating(p) {
			slog.Info("statefulset pod terminating for update", "statefulset", set.Namespace+"/"+set.Name, "pod", p.Name, "revision", update.Name)
			return requeue, c.deletePod(ctx, set, p)
		}
		if !isHealthy(p) {
			return requeue, nil
		}
	}
	return requeue, nil
}

// firstUnhealthy is the lowest-ordinal pod not healthy, the one upstream
// lets a scale-down remove without waiting.
func firstUnhealthy(inRange, condemned []*corev1.Pod) *corev1.Pod {
	for _, p := range inRange {
		if p == nil || !isHealthy(p) {
			return p
		}
	}
	for i := len(condemned) - 1; i >= 0; i-- {
		if !isHealthy(condemned[i]) {
			return condemned[i]
		}
	}
	return nil
}

// keepIdentity repairs a pod's name labels, hostname and subdomain (an
// adopted pod may lack them) and its claims' owner references.
func (c *Controller) keepIdentity(ctx context.Context, set *appsv1.StatefulSet, p *corev1.Pod, ord int) error {
	if err := c.syncClaimOwners(ctx, set, p, ord); err != nil {
		return err
	}
	// Hostname and subdomain are immutable on a pod; only the labels can
	// be repaired in place, the rest comes with the pod's next recreation.
	fixed := p.DeepCopy()
	setIdentity(set, fixed, ord)
	if p.Labels[podNameLabel] == fixed.Labels[podNameLabel] && p.Labels[podIndexLabel] == fixed.Labels[podIndexLabel] {
		return nil
	}
	patch, _ := json.Marshal(map[string]interface{}{"metadata": map[string]interface{}{"labels": map[string]string{
		podNameLabel: fixed.Labels[podNameLabel], podIndexLabel: fixed.Labels[podIndexLabel]}}})
	_, err := c.client.CoreV1().Pods(p.Namespace).Patch(ctx, p.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("statefulset %s/%s: identity of pod %s: %w", set.Namespace, set.Name, p.Name, err)
	}
	return nil
}

// deletePod deletes a pod, guarded by its uid: a stale cache must never
// take the pod that replaced it.
func (c *Controller) deletePod(ctx context.Context, set *appsv1.StatefulSet, p *corev1.Pod) error {
	err := c.client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{Preconditions: metav1.NewUIDPreconditions(string(p.UID))})
	switch {
	case err == nil:
		c.event(ctx, set, corev1.EventTypeNormal, "SuccessfulDelete", fmt.Sprintf("delete Pod %s in StatefulSet %s successful", p.Name, set.Name))
	case !apierrors.IsNotFound(err) && !apierrors.IsConflict(err):
		c.event(ctx, set, corev1.EventTypeWarning, "FailedDelete", fmt.Sprintf("delete Pod %s in StatefulSet %s failed error: %v", p.Name, set.Name, err))
		return fmt.Errorf("statefulset %s/%s: delete pod %s: %w", set.Namespace, set.Name, p.Name, err)
	}
	return nil
}

// updateStatus reports the counts upstream reports, and completes a
// rolling update (current revision := update revision) once every pod is
// updated and ready.
func (c *Controller) updateStatus(ctx context.Context, set *appsv1.StatefulSet, pods []*corev1.Pod, current, update *appsv1.ControllerRevision, collisions int32) error {
	st := appsv1.StatefulSetStatus{ObservedGeneration: set.Generation, CurrentRevision: current.Name, UpdateRevision: update.Name,
		CollisionCount: ptr.To(collisions), Conditions: set.Status.Conditions}
	now := time.Now()
	for _, p := range pods {
		if isCreated(p) {
			st.Replicas++
		}
		if isRunningAndReady(p) {
			st.ReadyReplicas++
			if availableIn(p, set.Spec.MinReadySeconds, now) <= 0 {
				st.AvailableReplicas++
			}
		}
		if isCreated(p) && !isTerminating(p) {
			if p.Labels[revisionLabel] == current.Name {
				st.CurrentReplicas++
			}
			if p.Labels[revisionLabel] == update.Name {
				st.UpdatedReplicas++
			}
		}
	}
	if set.Spec.UpdateStrategy.Type != appsv1.OnDeleteStatefulSetStrategyType &&
		st.UpdatedReplicas == st.Replicas && st.ReadyReplicas == st.Replicas {
		st.CurrentRevision, st.CurrentReplicas = st.UpdateRevision, st.UpdatedReplicas
	}
	if apiequality.Semantic.DeepEqual(st, set.Status) {
		return nil
	}
	set.Status = st
	_, err := c.client.AppsV1().StatefulSets(set.Namespace).UpdateStatus(ctx, set, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) {
		// The cache is behind the set; the newer version's event syncs again.
		return nil
	}
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("statefulset %s/%s: update status: %w", set.Namespace, set.Name, err)
	}
	return nil
}
