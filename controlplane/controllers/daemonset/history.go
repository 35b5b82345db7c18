package daemonset

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"sort"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/utils/ptr"
)

// A DaemonSet's template history is a ControllerRevision per template,
// holding a strategic merge patch that puts the template back: kubectl
// rollout history shows the revisions it owns, and rollout undo applies one
// revision's patch to the DaemonSet. The current template's revision has
// the highest number; going back to an older template renumbers its
// revision instead of making a new one.

// templatePatch is the revision data for ds's template, shaped as upstream
// (and kubectl, which compares it byte for byte) make it.
func templatePatch(ds *appsv1.DaemonSet) ([]byte, error) {
	raw, err := json.Marshal(ds)
	if err != nil {
		return nil, err
	}
	var obj map[string]interface{}
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, err
	}
	spec, _ := obj["spec"].(map[string]interface{})
	template, _ := spec["template"].(map[string]interface{})
	if template == nil {
		template = map[string]interface{}{}
	}
	template["$patch"] = "replace"
	return json.Marshal(map[string]interface{}{"spec": map[string]interface{}{"template": template}})
}

// sameTemplate reports whether a revision holds ds's template; it compares
// decoded templates, so a re-encoding of the data does not matter.
func sameTemplate(ds *appsv1.DaemonSet, r *appsv1.ControllerRevision) bool {
	var data struct {
		Spec struct {
			Template corev1.PodTemplateSpec `json:"template"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(r.Data.Raw, &data); err != nil {
		return false
	}
	return apiequality.Semantic.DeepEqual(data.Spec.Template, ds.Spec.Template)
}

// revisionHash names a revision's data, salted by the collision count.
func revisionHash(data []byte, collisions *int32) string {
	h := fnv.New32a()
	h.Write(data)
	if collisions != nil {
		h.Write([]byte(strconv.Itoa(int(*collisions))))
	}
	return rand.SafeEncodeString(fmt.Sprint(h.Sum32()))
}

// history returns the current template's revision (made or renumbered as
// needed) and the older ones, adopting orphan revisions the selector
// matches.
func (c *Controller) history(ctx context.Context, ds *appsv1.DaemonSet, sel labels.Selector) (*appsv1.ControllerRevision, []*appsv1.ControllerRevision, error) {
	all, err := c.revs.ControllerRevisions(ds.Namespace).List(labels.Everything())
	if err != nil {
		return nil, nil, err
	}
	var owned []*appsv1.ControllerRevision
	for _, r := range all {
		ref := metav1.GetControllerOf(r)
		switch {
		case ref != nil && ref.UID == ds.UID:
			owned = append(owned, r)
		case ref == nil && r.DeletionTimestamp == nil && sel.Matches(labels.Set(r.Labels)):
			adopted, err := c.adoptRevision(ctx, ds, r)
			if err != nil {
				return nil, nil, err
			}
			if adopted != nil {
				owned = append(owned, adopted)
			}
		}
	}
	var cur *appsv1.ControllerRevision
	var old []*appsv1.ControllerRevision
	var maxRev int64
	for _, r := range owned {
		maxRev = max(maxRev, r.Revision)
	}
	sort.Slice(owned, func(i, j int) bool { return owned[i].Revision > owned[j].Revision })
	for _, r := range owned {
		switch {
		case cur == nil && sameTemplate(ds, r):
			cur = r
		case sameTemplate(ds, r):
			// A duplicate of the current template (from a collision or
			// a stale cache): the one with the highest number stays.
			err := c.client.AppsV1().ControllerRevisions(ds.Namespace).Delete(ctx, r.Name, metav1.DeleteOptions{Preconditions: metav1.NewUIDPreconditions(string(r.UID))})
			if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
				return nil, nil, fmt.Errorf("delete duplicate revision %s: %w", r.Name, err)
			}
		default:
			old = append(old, r)
		}
	}
	if cur == nil {
		cur, err = c.newRevision(ctx, ds, maxRev+1)
		return cur, old, err
	}
	if cur.Revision < maxRev {
		// Back to an older template (kubectl rollout undo): it becomes the newest.
		r := cur.DeepCopy()
		r.Revision = maxRev + 1
		if cur, err = c.client.AppsV1().ControllerRevisions(ds.Namespace).Update(ctx, r, metav1.UpdateOptions{}); err != nil {
			return nil, nil, fmt.Errorf("renumber revision %s: %w", r.Name, err)
		}
	}
	return cur, old, nil
}

func (c *Controller) adoptRevision(ctx context.Context, ds *appsv1.DaemonSet, r *appsv1.ControllerRevision) (*appsv1.ControllerRevision, error) {
	refs := append([]metav1.OwnerReference{}, r.OwnerReferences...)
	refs = append(refs, *metav1.NewControllerRef(ds, appsv1.SchemeGroupVersion.WithKind("DaemonSet")))
	data, _ := json.Marshal(map[string]interface{}{"metadata": map[string]interface{}{"ownerReferences": refs, "uid": r.UID}})
	adopted, err := c.client.AppsV1().ControllerRevisions(ds.Namespace).Patch(ctx, r.Name, types.MergePatchType, data, metav1.PatchOptions{})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("adopt revision %s: %w", r.Name, err)
	}
	return adopted, nil
}

// newRevision records ds's template as the given revision. A name already
// taken by another template is a hash collision: the collision count goes
// up and the next sync tries another name, as upstream.
func (c *Controller) newRevision(ctx context.Context, ds *appsv1.DaemonSet, revision int64) (*appsv1.ControllerRevision, error) {
	data, err := templatePatch(ds)
	if err != nil {
		return nil, err
	}
	hash := revisionHash(data, ds.Status.CollisionCount)
	revLabels := map[string]string{}
	for k, v := range ds.Spec.Template.Labels {
		revLabels[k] = v
	}
	revLabels[HashLabel] = hash
	name := ds.Name
	if len(name) > 223 {
		name = name[:223]
	}
	r := &appsv1.ControllerRevision{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-" + hash, Namespace: ds.Namespace, Labels: revLabels, Annotations: ds.Annotations,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(ds, appsv1.SchemeGroupVersion.WithKind("DaemonSet"))}},
		Data: runtime.RawExtension{Raw: data}, Revision: revision,
	}
	created, err := c.client.AppsV1().ControllerRevisions(ds.Namespace).Create(ctx, r, metav1.CreateOptions{})
	if err == nil {
		return created, nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("create revision %s: %w", r.Name, err)
	}
	existing, getErr := c.client.AppsV1().ControllerRevisions(ds.Namespace).Get(ctx, r.Name, metav1.GetOptions{})
	if getErr != nil {
		return nil, fmt.Errorf("get revision %s: %w", r.Name, getErr)
	}
	if metav1.IsControlledBy(existing, ds) && sameTemplate(ds, existing) {
		return existing, nil // ours, made by a sync the cache has not shown yet
	}
	fresh, err := c.client.AppsV1().DaemonSets(ds.Namespace).Get(ctx, ds.Name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	fresh.Status.CollisionCount = ptr.To(ptr.Deref(fresh.Status.CollisionCount, 0) + 1)
	if _, err := c.client.AppsV1().DaemonSets(ds.Namespace).UpdateStatus(ctx, fresh, metav1.UpdateOptions{}); err != nil {
		return nil, fmt.Errorf("count collision: %w", err)
	}
	return nil, fmt.Errorf("revision name %s collides with another template, retrying", r.Name)
}

// cleanupHistory deletes the oldest revisions beyond revisionHistoryLimit
// that no pod was made from.
func (c *Controller) cleanupHistory(ctx context.Context, ds *appsv1.DaemonSet, old []*appsv1.ControllerRevision, byNode map[string][]*corev1.Pod) error {
	limit := int(ptr.Deref(ds.Spec.RevisionHistoryLimit, 10))
	if len(old) <= limit {
		return nil
	}
	live := map[string]bool{}
	for _, pods := range byNode {
		for _, p := range pods {
			if h := p.Labels[HashLabel]; h != "" {
				live[h] = true
			}
		}
	}
	var idle []*appsv1.ControllerRevision
	for _, r := range old {
		if !live[r.Labels[HashLabel]] && r.DeletionTimestamp == nil {
			idle = append(idle, r)
		}
	}
	sort.Slice(idle, func(i, j int) bool { return idle[i].Revision < idle[j].Revision })
	for i := 0; i < len(old)-limit && i < len(idle); i++ {
		err := c.client.AppsV1().ControllerRevisions(ds.Namespace).Delete(ctx, idle[i].Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete revision %s: %w", idle[i].Name, err)
		}
	}
	return nil
}
