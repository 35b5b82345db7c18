package statefulset

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
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/utils/ptr"
)

// Template history is kept as upstream keeps it, because kubectl reads it:
// one ControllerRevision per pod template, named SET-HASH, whose data is a
// strategic merge patch replacing spec.template. `kubectl rollout history`
// shows these; `kubectl rollout undo` sends one back as a patch, and skips
// when its bytes equal the patch it makes of the current set, so the patch
// is built the way kubectl builds it (template through a generic map, keys
// sorted).

// hashLabel is the label every ControllerRevision carries with its hash.
const hashLabel = appsv1.ControllerRevisionHashLabelKey // controller.kubernetes.io/hash

// revisionPatch is the data of the revision of set's current template.
func revisionPatch(set *appsv1.StatefulSet) ([]byte, error) {
	raw, err := json.Marshal(&set.Spec.Template)
	if err != nil {
		return nil, err
	}
	var template map[string]interface{}
	if err := json.Unmarshal(raw, &template); err != nil {
		return nil, err
	}
	template["$patch"] = "replace"
	return json.Marshal(map[string]interface{}{"spec": map[string]interface{}{"template": template}})
}

// revisionTemplate reads the pod template back out of a revision's data.
func revisionTemplate(cr *appsv1.ControllerRevision) (*corev1.PodTemplateSpec, error) {
	var patch struct {
		Spec struct {
			Template corev1.PodTemplateSpec `json:"template"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(cr.Data.Raw, &patch); err != nil {
		return nil, fmt.Errorf("controllerrevision %s/%s: %w", cr.Namespace, cr.Name, err)
	}
	return &patch.Spec.Template, nil
}

// revisionHash names a revision's data; the set's collision count is part
// of it so that a hash taken by another template can be stepped past.
func revisionHash(data []byte, collisions int32) string {
	h := fnv.New32a()
	h.Write(data)
	h.Write([]byte(strconv.Itoa(int(collisions))))
	return rand.SafeEncodeString(strconv.FormatUint(uint64(h.Sum32()), 10))
}

// resolveRevisions returns the set's current and update revisions, creating the
// update revision when the template is new and renumbering an old one that
// becomes the update revision again (a rollback), so history stays ordered.
// The collision count is the one the status should report.
func (c *Controller) resolveRevisions(ctx context.Context, set *appsv1.StatefulSet, owned []*appsv1.ControllerRevision) (current, update *appsv1.ControllerRevision, collisions int32, err error) {
	collisions = ptr.Deref(set.Status.CollisionCount, 0)
	data, err := revisionPatch(set)
	if err != nil {
		return nil, nil, collisions, fmt.Errorf("statefulset %s/%s: %w", set.Namespace, set.Name, err)
	}
	sort.SliceStable(owned, func(i, j int) bool { return owned[i].Revision < owned[j].Revision })
	var next int64 = 1
	if len(owned) > 0 {
		next = owned[len(owned)-1].Revision + 1
	}
	for _, cr := range owned {
		if same, _ := sameTemplate(cr, &set.Spec.Template); same {
			update = cr
		}
	}
	switch {
	case update != nil && update.Revision != next-1:
		cr := update.DeepCopy()
		cr.Revision = next
		if update, err = c.client.AppsV1().ControllerRevisions(set.Namespace).Update(ctx, cr, metav1.UpdateOptions{}); err != nil {
			return nil, nil, collisions, fmt.Errorf("statefulset %s/%s: renumber revision %s: %w", set.Namespace, set.Name, cr.Name, err)
		}
	case update == nil:
		if update, collisions, err = c.createRevision(ctx, set, data, next, collisions); err != nil {
			return nil, nil, collisions, err
		}
	}
	for _, cr := range owned {
		if cr.Name == set.Status.CurrentRevision {
			current = cr
		}
	}
	if current == nil || current.Name == update.Name {
		current = update
	}
	return current, update, collisions, nil
}

func sameTemplate(cr *appsv1.ControllerRevision, t *corev1.PodTemplateSpec) (bool, error) {
	rt, err := revisionTemplate(cr)
	if err != nil {
		return false, err
	}
	return apiequality.Semantic.DeepEqual(rt, t), nil
}

func (c *Controller) createRevision(ctx context.Context, set *appsv1.StatefulSet, data []byte, number int64, collisions int32) (*appsv1.ControllerRevision, int32, error) {
	labels := map[string]string{}
	for k, v := range set.Spec.Template.Labels {
		labels[k] = v
	}
	hash := revisionHash(data, collisions)
	labels[hashLabel] = hash
	// kubectl shows a revision's change-cause from its annotations, which
	// are the set's at the time.
	annotations := map[string]string{}
	for k, v := range set.Annotations {
		annotations[k] = v
	}
	prefix := set.Name
	if len(prefix) > 223 {
		prefix = prefix[:223]
	}
	cr := &appsv1.ControllerRevision{
		ObjectMeta: metav1.ObjectMeta{Name: prefix + "-" + hash, Namespace: set.Namespace, Labels: labels, Annotations: annotations,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(set, appsv1.SchemeGroupVersion.WithKind("StatefulSet"))}},
		Data:     runtime.RawExtension{Raw: data},
		Revision: number,
	}
	created, err := c.client.AppsV1().ControllerRevisions(set.Namespace).Create(ctx, cr, metav1.CreateOptions{})
	if err == nil {
		return created, collisions, nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return nil, collisions, fmt.Errorf("statefulset %s/%s: create revision: %w", set.Namespace, set.Name, err)
	}
	// The name is taken: by this very template (our cache was behind), or
	// by another one (a hash collision, stepped past with the count).
	existing, gerr := c.client.AppsV1().ControllerRevisions(set.Namespace).Get(ctx, cr.Name, metav1.GetOptions{})
	if gerr != nil {
		return nil, collisions, fmt.Errorf("statefulset %s/%s: get revision %s: %w", set.Namespace, set.Name, cr.Name, gerr)
	}
	if same, _ := sameTemplate(existing, &set.Spec.Template); same && metav1.IsControlledBy(existing, set) {
		return existing, collisions, nil
	}
	return nil, collisions + 1, fmt.Errorf("statefulset %s/%s: revision name %s collides, retrying", set.Namespace, set.Name, cr.Name)
}

// truncateHistory deletes the oldest revisions beyond revisionHistoryLimit
// that neither the set's status nor any pod still refers to.
func (c *Controller) truncateHistory(ctx context.Context, set *appsv1.StatefulSet, owned []*appsv1.ControllerRevision, pods []*corev1.Pod, current, update *appsv1.ControllerRevision) error {
	live := map[string]bool{current.Name: true, update.Name: true}
	for _, p := range pods {
		live[p.Labels[appsv1.StatefulSetRevisionLabel]] = true
	}
	var idle []*appsv1.ControllerRevision
	for _, cr := range owned {
		if !live[cr.Name] {
			idle = append(idle, cr)
		}
	}
	sort.SliceStable(idle, func(i, j int) bool { return idle[i].Revision < idle[j].Revision })
	limit := int(ptr.Deref(set.Spec.RevisionHistoryLimit, 10))
	for i := 0; i < len(idle)-limit; i++ {
		err := c.client.AppsV1().ControllerRevisions(set.Namespace).Delete(ctx, idle[i].Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("statefulset %s/%s: delete revision %s: %w", set.Namespace, set.Name, idle[i].Name, err)
		}
	}
	return nil
}
