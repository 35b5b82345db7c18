// Package deployment rolls Deployments out through ReplicaSets: one
// ReplicaSet per pod template (named by a hash of it), scaled up and the
// older ones down within maxSurge and maxUnavailable (RollingUpdate) or all
// old ones first (Recreate). Revisions are ReplicaSet annotations, so
// `kubectl rollout history` and `kubectl rollout undo` work; the Progressing
// and Available conditions are what `kubectl rollout status` reads.
package deployment

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"sort"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"

	"github.com/navarch/navarch/controlplane/controllers/workloop"
)

// Annotations and labels shared with kubectl.
const (
	RevisionAnnotation    = "deployment.kubernetes.io/revision"
	desiredAnnotation     = "deployment.kubernetes.io/desired-replicas"
	maxAnnotation         = "deployment.kubernetes.io/max-replicas"
	changeCauseAnnotation = "kubernetes.io/change-cause"
	HashLabel             = appsv1.DefaultDeploymentUniqueLabelKey // pod-template-hash
)

// Controller reconciles Deployments.
type Controller struct {
	client  kubernetes.Interface
	factory informers.SharedInformerFactory
	queue   workqueue.TypedRateLimitingInterface[string]
	dl      appslisters.DeploymentLister
	rsl     appslisters.ReplicaSetLister
}

// New returns the controller.
// New returns the controller; it registers its informers with factory.
func New(client kubernetes.Interface, factory informers.SharedInformerFactory) *Controller {
	return &Controller{client: client, factory: factory, queue: workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.DefaultTypedControllerRateLimiter[string](), workqueue.TypedRateLimitingQueueConfig[string]{Name: "deployment"})}
}

// Run works until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	factory := c.factory
	dInf, rsInf := factory.Apps().V1().Deployments(), factory.Apps().V1().ReplicaSets()
	c.dl, c.rsl = dInf.Lister(), rsInf.Lister()
	add := func(obj interface{}) {
		if d, ok := obj.(*appsv1.Deployment); ok {
			c.queue.Add(d.Namespace + "/" + d.Name)
		}
	}
	dInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: add, UpdateFunc: func(_, o interface{}) { add(o) }})
	owner := func(obj interface{}) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if rs, ok := obj.(*appsv1.ReplicaSet); ok {
			if ref := metav1.GetControllerOf(rs); ref != nil && ref.Kind == "Deployment" {
				c.queue.Add(rs.Namespace + "/" + ref.Name)
			}
		}
	}
	rsInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: owner, UpdateFunc: func(_, o interface{}) { owner(o) }, DeleteFunc: owner})
	// Start is idempotent: it starts what other controllers have not yet.
	factory.Start(ctx.Done())
	return workloop.Run(ctx, "deployment", c.queue, 4, c.sync, dInf.Informer().HasSynced, rsInf.Informer().HasSynced)
}

// TemplateHash names a pod template, as the pod-template-hash label does.
func TemplateHash(t *corev1.PodTemplateSpec, collisions *int32) string {
	data, _ := json.Marshal(t)
	h := fnv.New32a()
	h.Write(data)
	if collisions != nil {
		h.Write([]byte(strconv.Itoa(int(*collisions))))
	}
	return rand.SafeEncodeString(fmt.Sprint(h.Sum32()))
}

// sameTemplate compares templates ignoring the pod-template-hash label.
func sameTemplate(rs *appsv1.ReplicaSet, t *corev1.PodTemplateSpec) bool {
	a := rs.Spec.Template.DeepCopy()
	delete(a.Labels, HashLabel)
	b := t.DeepCopy()
	delete(b.Labels, HashLabel)
	return apiequality.Semantic.DeepEqual(a, b)
}

func revision(rs *appsv1.ReplicaSet) int64 {
	n, _ := strconv.ParseInt(rs.Annotations[RevisionAnnotation], 10, 64)
	return n
}

func (c *Controller) sync(ctx context.Context, key string) error {
	ns, name, _ := strings.Cut(key, "/")
	d, err := c.dl.Deployments(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if d.DeletionTimestamp != nil {
		return nil
	}
	d = d.DeepCopy()
	all, err := c.rsl.ReplicaSets(ns).List(labels.Everything())
	if err != nil {
		return err
	}
	var owned []*appsv1.ReplicaSet
	for _, rs := range all {
		if ref := metav1.GetControllerOf(rs); ref != nil && ref.UID == d.UID {
			owned = append(owned, rs)
		}
	}
	var newRS *appsv1.ReplicaSet
	var old []*appsv1.ReplicaSet
	for _, rs := range owned {
		if newRS == nil && sameTemplate(rs, &d.Spec.Template) {
			newRS = rs
		} else {
			old = append(old, rs)
		}
	}
	sort.Slice(old, func(i, j int) bool { return revision(old[i]) < revision(old[j]) })
	replicas := ptr.Deref(d.Spec.Replicas, 1)

	if newRS == nil && !d.Spec.Paused {
		if newRS, err = c.createNewRS(ctx, d, old); err != nil {
			return err
		}
	}
	if newRS != nil && !d.Spec.Paused {
		if newRS, err = c.bumpRevision(ctx, newRS, old); err != nil {
			return err
		}
		if err := c.setRevision(ctx, d, newRS); err != nil {
			return err
		}
		switch d.Spec.Strategy.Type {
		case appsv1.RecreateDeploymentStrategyType:
			err = c.recreate(ctx, d, newRS, old, replicas)
		default:
			err = c.rollingUpdate(ctx, d, newRS, old, replicas)
		}
		if err != nil {
			return err
		}
		c.cleanup(ctx, d, old)
	} else if newRS != nil && ptr.Deref(newRS.Spec.Replicas, 0) != replicas && totalReplicas(old) == 0 {
		// A paused deployment still follows scaling.
		if err := c.scale(ctx, newRS, replicas, d); err != nil {
			return err
		}
	}
	return c.updateStatus(ctx, d, newRS, old)
}

func (c *Controller) createNewRS(ctx context.Context, d *appsv1.Deployment, old []*appsv1.ReplicaSet) (*appsv1.ReplicaSet, error) {
	var maxRev int64
	for _, rs := range old {
		maxRev = max(maxRev, revision(rs))
	}
	hash := TemplateHash(&d.Spec.Template, d.Status.CollisionCount)
	tmpl := d.Spec.Template.DeepCopy()
	if tmpl.Labels == nil {
		tmpl.Labels = map[string]string{}
	}
	tmpl.Labels[HashLabel] = hash
	sel := d.Spec.Selector.DeepCopy()
	if sel.MatchLabels == nil {
		sel.MatchLabels = map[string]string{}
	}
	sel.MatchLabels[HashLabel] = hash
	replicas := ptr.Deref(d.Spec.Replicas, 1)
	start := replicas
	if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType && totalReplicas(old) > 0 {
		start = 0 // the rolling update scales it up within maxSurge
	}
	annotations := map[string]string{RevisionAnnotation: strconv.FormatInt(maxRev+1, 10),
		desiredAnnotation: strconv.Itoa(int(replicas)), maxAnnotation: strconv.Itoa(int(replicas + surge(d, replicas)))}
	if cause, ok := d.Annotations[changeCauseAnnotation]; ok {
		annotations[changeCauseAnnotation] = cause
	}
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: d.Name + "-" + hash, Namespace: d.Namespace, Labels: tmpl.Labels, Annotations: annotations,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(d, appsv1.SchemeGroupVersion.WithKind("Deployment"))}},
		Spec: appsv1.ReplicaSetSpec{Replicas: ptr.To(start), MinReadySeconds: d.Spec.MinReadySeconds, Selector: sel, Template: *tmpl},
	}
	created, err := c.client.AppsV1().ReplicaSets(d.Namespace).Create(ctx, rs, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		// A ReplicaSet of that name with another template: a hash collision.
		d.Status.CollisionCount = ptr.To(ptr.Deref(d.Status.CollisionCount, 0) + 1)
		if _, err := c.client.AppsV1().Deployments(d.Namespace).UpdateStatus(ctx, d, metav1.UpdateOptions{}); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("deployment %q in namespace %q: replica set name collision, retrying", d.Name, d.Namespace)
	}
	if err != nil {
		return nil, fmt.Errorf("deployment %q in namespace %q: create replica set: %w", d.Name, d.Namespace, err)
	}
	setCondition(d, appsv1.DeploymentProgressing, corev1.ConditionTrue, "NewReplicaSetCreated", fmt.Sprintf("Created new replica set %q", created.Name))
	return created, nil
}

// bumpRevision gives a ReplicaSet that becomes current again (after a
// rollback) the next revision, as upstream does, so history stays ordered.
func (c *Controller) bumpRevision(ctx context.Context, rs *appsv1.ReplicaSet, old []*appsv1.ReplicaSet) (*appsv1.ReplicaSet, error) {
	var maxOld int64
	for _, o := range old {
		maxOld = max(maxOld, revision(o))
	}
	if revision(rs) > maxOld {
		return rs, nil
	}
	rs = rs.DeepCopy()
	rs.Annotations[RevisionAnnotation] = strconv.FormatInt(maxOld+1, 10)
	return c.client.AppsV1().ReplicaSets(rs.Namespace).Update(ctx, rs, metav1.UpdateOptions{})
}

// setRevision copies the new ReplicaSet's revision to the deployment.
func (c *Controller) setRevision(ctx context.Context, d *appsv1.Deployment, rs *appsv1.ReplicaSet) error {
	rev := rs.Annotations[RevisionAnnotation]
	if d.Annotations[RevisionAnnotation] == rev {
		return nil
	}
	patch, _ := json.Marshal(map[string]interface{}{"metadata": map[string]interface{}{"annotations": map[string]string{RevisionAnnotation: rev}}})
	updated, err := c.client.AppsV1().Deployments(d.Namespace).Patch(ctx, d.Name, "application/merge-patch+json", patch, metav1.PatchOptions{})
	if err != nil {
		return err
	}
	d.Annotations, d.ResourceVersion = updated.Annotations, updated.ResourceVersion
	return nil
}

func resolve(v *intstr.IntOrString, total int32, roundUp bool) int32 {
	if v == nil {
		return 0
	}
	n, err := intstr.GetScaledValueFromIntOrPercent(v, int(total), roundUp)
	if err != nil {
		return 0
	}
	return int32(n)
}

func surge(d *appsv1.Deployment, replicas int32) int32 {
	if d.Spec.Strategy.RollingUpdate == nil {
		return 0
	}
	return resolve(d.Spec.Strategy.RollingUpdate.MaxSurge, replicas, true)
}

func unavailable(d *appsv1.Deployment, replicas int32) int32 {
	if d.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType || d.Spec.Strategy.RollingUpdate == nil {
		return 0
	}
	u := resolve(d.Spec.Strategy.RollingUpdate.MaxUnavailable, replicas, false)
	if u == 0 && surge(d, replicas) == 0 {
		u = 1 // both zero would make no progress; upstream allows one
	}
	return min(u, replicas)
}

func totalReplicas(rss []*appsv1.ReplicaSet) int32 {
	var n int32
	for _, rs := range rss {
		n += ptr.Deref(rs.Spec.Replicas, 0)
	}
	return n
}

func (c *Controller) scale(ctx context.Context, rs *appsv1.ReplicaSet, n int32, d *appsv1.Deployment) error {
	if ptr.Deref(rs.Spec.Replicas, 0) == n && rs.Annotations[desiredAnnotation] == strconv.Itoa(int(ptr.Deref(d.Spec.Replicas, 1))) {
		return nil
	}
	rs = rs.DeepCopy()
	rs.Spec.Replicas = ptr.To(n)
	if rs.Annotations == nil {
		rs.Annotations = map[string]string{}
	}
	rs.Annotations[desiredAnnotation] = strconv.Itoa(int(ptr.Deref(d.Spec.Replicas, 1)))
	_, err := c.client.AppsV1().ReplicaSets(rs.Namespace).Update(ctx, rs, metav1.UpdateOptions{})
	return err
}

func (c *Controller) recreate(ctx context.Context, d *appsv1.Deployment, newRS *appsv1.ReplicaSet, old []*appsv1.ReplicaSet, replicas int32) error {
	running := int32(0)
	for _, rs := range old {
		if err := c.scale(ctx, rs, 0, d); err != nil {
			return err
		}
		running += rs.Status.Replicas
	}
	if running > 0 {
		return nil // the new pods start once the old ones are gone
	}
	return c.scale(ctx, newRS, replicas, d)
}

func (c *Controller) rollingUpdate(ctx context.Context, d *appsv1.Deployment, newRS *appsv1.ReplicaSet, old []*appsv1.ReplicaSet, replicas int32) error {
	all := append([]*appsv1.ReplicaSet{newRS}, old...)
	// Scale the new ReplicaSet up as far as maxSurge allows.
	newWant := ptr.Deref(newRS.Spec.Replicas, 0)
	if newWant < replicas {
		room := replicas + surge(d, replicas) - totalReplicas(all)
		if room > 0 {
			newWant = min(newWant+room, replicas)
		}
	} else if newWant > replicas {
		newWant = replicas
	}
	if err := c.scale(ctx, newRS, newWant, d); err != nil {
		return err
	}
	// Scale old ones down as far as maxUnavailable allows, oldest first;
	// old pods that are not available can go at once.
	var available int32
	for _, rs := range all {
		available += rs.Status.AvailableReplicas
	}
	canRemove := available - (replicas - unavailable(d, replicas))
	for _, rs := range old {
		have := ptr.Deref(rs.Spec.Replicas, 0)
		if have == 0 {
			continue
		}
		unhealthy := max(have-rs.Status.AvailableReplicas, 0)
		down := min(have, unhealthy+max(canRemove, 0))
		if totalReplicas(all)-down < 0 || down == 0 {
			continue
		}
		if err := c.scale(ctx, rs, have-down, d); err != nil {
			return err
		}
		canRemove -= max(down-unhealthy, 0)
	}
	return nil
}

// cleanup deletes scaled-down old ReplicaSets beyond revisionHistoryLimit.
func (c *Controller) cleanup(ctx context.Context, d *appsv1.Deployment, old []*appsv1.ReplicaSet) {
	limit := int(ptr.Deref(d.Spec.RevisionHistoryLimit, 10))
	var idle []*appsv1.ReplicaSet
	for _, rs := range old {
		if ptr.Deref(rs.Spec.Replicas, 0) == 0 && rs.Status.Replicas == 0 && rs.DeletionTimestamp == nil {
			idle = append(idle, rs)
		}
	}
	for i := 0; i < len(idle)-limit; i++ {
		c.client.AppsV1().ReplicaSets(d.Namespace).Delete(ctx, idle[i].Name, metav1.DeleteOptions{})
	}
}

func setCondition(d *appsv1.Deployment, t appsv1.DeploymentConditionType, status corev1.ConditionStatus, reason, msg string) {
	now := metav1.Now()
	for i := range d.Status.Conditions {
		c := &d.Status.Conditions[i]
		if c.Type != t {
			continue
		}
		if c.Status != status {
			c.LastTransitionTime = now
		}
		if c.Status != status || c.Reason != reason || c.Message != msg {
			c.LastUpdateTime = now
		}
		c.Status, c.Reason, c.Message = status, reason, msg
		return
	}
	d.Status.Conditions = append(d.Status.Conditions, appsv1.DeploymentCondition{Type: t, Status: status, Reason: reason, Message: msg, LastUpdateTime: now, LastTransitionTime: now})
}

func condition(d *appsv1.Deployment, t appsv1.DeploymentConditionType) *appsv1.DeploymentCondition {
	for i := range d.Status.Conditions {
		if d.Status.Conditions[i].Type == t {
			return &d.Status.Conditions[i]
		}
	}
	return nil
}

func (c *Controller) updateStatus(ctx context.Context, d *appsv1.Deployment, newRS *appsv1.ReplicaSet, old []*appsv1.ReplicaSet) error {
	replicas := ptr.Deref(d.Spec.Replicas, 1)
	st := d.Status.DeepCopy()
	st.ObservedGeneration = d.Generation
	st.Replicas, st.UpdatedReplicas, st.ReadyReplicas, st.AvailableReplicas = 0, 0, 0, 0
	all := old
	if newRS != nil {
		all = append([]*appsv1.ReplicaSet{newRS}, old...)
		st.UpdatedReplicas = newRS.Status.Replicas
	}
	for _, rs := range all {
		st.Replicas += rs.Status.Replicas
		st.ReadyReplicas += rs.Status.ReadyReplicas
		st.AvailableReplicas += rs.Status.AvailableReplicas
	}
	st.UnavailableReplicas = max(replicas-st.AvailableReplicas, 0)
	d.Status = *st
	if st.AvailableReplicas >= replicas-unavailable(d, replicas) {
		setCondition(d, appsv1.DeploymentAvailable, corev1.ConditionTrue, "MinimumReplicasAvailable", "Deployment has minimum availability.")
	} else {
		setCondition(d, appsv1.DeploymentAvailable, corev1.ConditionFalse, "MinimumReplicasUnavailable", "Deployment does not have minimum availability.")
	}
	complete := newRS != nil && st.UpdatedReplicas == replicas && st.Replicas == replicas && st.AvailableReplicas == replicas && ptr.Deref(newRS.Spec.Replicas, 0) == replicas
	switch {
	case d.Spec.Paused:
		setCondition(d, appsv1.DeploymentProgressing, corev1.ConditionUnknown, "DeploymentPaused", "Deployment is paused")
	case complete:
		setCondition(d, appsv1.DeploymentProgressing, corev1.ConditionTrue, "NewReplicaSetAvailable", fmt.Sprintf("ReplicaSet %q has successfully progressed.", newRS.Name))
	case newRS != nil:
		cond := condition(d, appsv1.DeploymentProgressing)
		deadline := time.Duration(ptr.Deref(d.Spec.ProgressDeadlineSeconds, 600)) * time.Second
		if cond != nil && cond.Reason != "ProgressDeadlineExceeded" && cond.Status == corev1.ConditionTrue && time.Since(cond.LastUpdateTime.Time) > deadline {
			setCondition(d, appsv1.DeploymentProgressing, corev1.ConditionFalse, "ProgressDeadlineExceeded", fmt.Sprintf("ReplicaSet %q has timed out progressing.", newRS.Name))
		} else if cond == nil || cond.Reason != "NewReplicaSetCreated" && cond.Reason != "ProgressDeadlineExceeded" {
			setCondition(d, appsv1.DeploymentProgressing, corev1.ConditionTrue, "ReplicaSetUpdated", fmt.Sprintf("ReplicaSet %q is progressing.", newRS.Name))
		}
		c.queue.AddAfter(d.Namespace+"/"+d.Name, deadline)
	}
	cur, err := c.dl.Deployments(d.Namespace).Get(d.Name)
	if err == nil && apiequality.Semantic.DeepEqual(cur.Status, d.Status) {
		return nil
	}
	_, err = c.client.AppsV1().Deployments(d.Namespace).UpdateStatus(ctx, d, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
