package statefulset

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

// A pod of a set is NAME-ORDINAL with the labels upstream sets, a hostname
// and subdomain giving it a stable DNS name under the governing Service,
// and one PersistentVolumeClaim per claim template, TEMPLATE-NAME-ORDINAL.

const (
	podNameLabel  = appsv1.StatefulSetPodNameLabel // statefulset.kubernetes.io/pod-name
	podIndexLabel = appsv1.PodIndexLabel           // apps.kubernetes.io/pod-index
	revisionLabel = appsv1.StatefulSetRevisionLabel
)

var setKind = appsv1.SchemeGroupVersion.WithKind("StatefulSet")

func podName(set *appsv1.StatefulSet, ordinal int) string {
	return set.Name + "-" + strconv.Itoa(ordinal)
}

// ordinalOf returns the ordinal of a pod named after set, or -1.
func ordinalOf(set *appsv1.StatefulSet, pod *corev1.Pod) int {
	rest, ok := strings.CutPrefix(pod.Name, set.Name+"-")
	if !ok {
		return -1
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n < 0 || strconv.Itoa(n) != rest {
		return -1
	}
	return n
}

func claimName(set *appsv1.StatefulSet, t *corev1.PersistentVolumeClaim, ordinal int) string {
	return t.Name + "-" + set.Name + "-" + strconv.Itoa(ordinal)
}

// newPod makes the pod of the given ordinal from template at revision.
func newPod(set *appsv1.StatefulSet, template *corev1.PodTemplateSpec, revision string, ordinal int) *corev1.Pod {
	t := template.DeepCopy()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: podName(set, ordinal), GenerateName: set.Name + "-", Namespace: set.Namespace,
			Labels: t.Labels, Annotations: t.Annotations, Finalizers: t.Finalizers,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(set, setKind)},
		},
		Spec: t.Spec,
	}
	if pod.Labels == nil {
		pod.Labels = map[string]string{}
	}
	pod.Labels[revisionLabel] = revision
	setIdentity(set, pod, ordinal)
	setStorage(set, pod, ordinal)
	return pod
}

// setIdentity writes the name-derived labels, hostname and subdomain.
func setIdentity(set *appsv1.StatefulSet, pod *corev1.Pod, ordinal int) {
	if pod.Labels == nil {
		pod.Labels = map[string]string{}
	}
	pod.Labels[podNameLabel] = pod.Name
	pod.Labels[podIndexLabel] = strconv.Itoa(ordinal)
	pod.Spec.Hostname = pod.Name
	pod.Spec.Subdomain = set.Spec.ServiceName
}

// setStorage points the pod's volumes named after claim templates at its
// own claims, adding those that are missing.
func setStorage(set *appsv1.StatefulSet, pod *corev1.Pod, ordinal int) {
	for i := range set.Spec.VolumeClaimTemplates {
		t := &set.Spec.VolumeClaimTemplates[i]
		vol := corev1.Volume{Name: t.Name, VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claimName(set, t, ordinal)}}}
		found := false
		for j := range pod.Spec.Volumes {
			if pod.Spec.Volumes[j].Name == t.Name {
				pod.Spec.Volumes[j], found = vol, true
			}
		}
		if !found {
			pod.Spec.Volumes = append(pod.Spec.Volumes, vol)
		}
	}
}

// newClaim makes the claim of template t for ordinal: the template with the
// set's selector labels added, so claims can be found like the pods.
func newClaim(set *appsv1.StatefulSet, t *corev1.PersistentVolumeClaim, ordinal int) *corev1.PersistentVolumeClaim {
	c := &corev1.PersistentVolumeClaim{ObjectMeta: *t.ObjectMeta.DeepCopy(), Spec: *t.Spec.DeepCopy()}
	c.Name, c.Namespace = claimName(set, t, ordinal), set.Namespace
	c.ResourceVersion, c.UID, c.GenerateName = "", "", ""
	if set.Spec.Selector != nil && len(set.Spec.Selector.MatchLabels) > 0 {
		if c.Labels == nil {
			c.Labels = map[string]string{}
		}
		for k, v := range set.Spec.Selector.MatchLabels {
			c.Labels[k] = v
		}
	}
	return c
}

// ensureClaims creates the claims of ordinal that do not exist yet. A claim
// being deleted (scaled away with whenScaled: Delete) must be gone before
// the pod can have a fresh one, so that is an error to retry.
func (c *Controller) ensureClaims(ctx context.Context, set *appsv1.StatefulSet, ordinal int) error {
	for i := range set.Spec.VolumeClaimTemplates {
		t := &set.Spec.VolumeClaimTemplates[i]
		name := claimName(set, t, ordinal)
		existing, err := c.claims.PersistentVolumeClaims(set.Namespace).Get(name)
		switch {
		case err == nil && existing.DeletionTimestamp != nil:
			return fmt.Errorf("statefulset %s/%s: claim %s is being deleted", set.Namespace, set.Name, name)
		case err == nil:
			continue
		case !apierrors.IsNotFound(err):
			return err
		}
		claim := newClaim(set, t, ordinal)
		setClaimOwners(claim, set, nil, ordinal)
		_, err = c.client.CoreV1().PersistentVolumeClaims(set.Namespace).Create(ctx, claim, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			c.event(ctx, set, corev1.EventTypeWarning, "FailedCreate",
				fmt.Sprintf("create Claim %s for Pod %s in StatefulSet %s failed error: %v", name, podName(set, ordinal), set.Name, err))
			return fmt.Errorf("statefulset %s/%s: create claim %s: %w", set.Namespace, set.Name, name, err)
		}
		if err == nil {
			c.event(ctx, set, corev1.EventTypeNormal, "SuccessfulCreate",
				fmt.Sprintf("create Claim %s Pod %s in StatefulSet %s success", name, podName(set, ordinal), set.Name))
		}
	}
	return nil
}

// setClaimOwners makes a claim's owner references follow the retention
// policy as upstream does: whenDeleted Delete makes the set an owner (so
// the claim goes with it); whenScaled Delete makes the pod the owner
// instead once its ordinal is scaled away (so the claim goes with the pod).
// pod may be nil (not created yet). It reports whether refs changed.
func setClaimOwners(claim *corev1.PersistentVolumeClaim, set *appsv1.StatefulSet, pod *corev1.Pod, ordinal int) bool {
	policy := set.Spec.PersistentVolumeClaimRetentionPolicy
	whenDeleted, whenScaled := appsv1.RetainPersistentVolumeClaimRetentionPolicyType, appsv1.RetainPersistentVolumeClaimRetentionPolicyType
	if policy != nil {
		whenDeleted, whenScaled = policy.WhenDeleted, policy.WhenScaled
	}
	scaledAway := ordinal >= startOrdinal(set)+int(ptr.Deref(set.Spec.Replicas, 1))
	wantSet := whenDeleted == appsv1.DeletePersistentVolumeClaimRetentionPolicyType &&
		!(scaledAway && whenScaled == appsv1.DeletePersistentVolumeClaimRetentionPolicyType)
	wantPod := pod != nil && scaledAway && whenScaled == appsv1.DeletePersistentVolumeClaimRetentionPolicyType
	changed := false
	changed = setRef(claim, set.UID, wantSet, func() metav1.OwnerReference {
		// Controller, so it is told from refs users add; not blocking, so
		// the set's deletion does not wait on claims a pod still uses.
		return metav1.OwnerReference{APIVersion: setKind.GroupVersion().String(), Kind: setKind.Kind, Name: set.Name, UID: set.UID,
			Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(false)}
	}) || changed
	if pod != nil {
		changed = setRef(claim, pod.UID, wantPod, func() metav1.OwnerReference {
			return metav1.OwnerReference{APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID}
		}) || changed
	}
	return changed
}

// setRef adds (want) or removes the owner reference to uid.
func setRef(claim *corev1.PersistentVolumeClaim, uid types.UID, want bool, ref func() metav1.OwnerReference) bool {
	for i, r := range claim.OwnerReferences {
		if r.UID == uid {
			if want {
				return false
			}
			claim.OwnerReferences = append(claim.OwnerReferences[:i:i], claim.OwnerReferences[i+1:]...)
			return true
		}
	}
	if !want {
		return false
	}
	claim.OwnerReferences = append(claim.OwnerReferences, ref())
	return true
}

// syncClaimOwners brings the owner references of the pod's claims in line
// with the retention policy.
func (c *Controller) syncClaimOwners(ctx context.Context, set *appsv1.StatefulSet, pod *corev1.Pod, ordinal int) error {
	for i := range set.Spec.VolumeClaimTemplates {
		name := claimName(set, &set.Spec.VolumeClaimTemplates[i], ordinal)
		existing, err := c.claims.PersistentVolumeClaims(set.Namespace).Get(name)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return err
		}
		claim := existing.DeepCopy()
		if !setClaimOwners(claim, set, pod, ordinal) {
			continue
		}
		patch, _ := json.Marshal(map[string]interface{}{"metadata": map[string]interface{}{
			"ownerReferences": claim.OwnerReferences, "resourceVersion": existing.ResourceVersion}})
		_, err = c.client.CoreV1().PersistentVolumeClaims(set.Namespace).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("statefulset %s/%s: owners of claim %s: %w", set.Namespace, set.Name, name, err)
		}
	}
	return nil
}

func isCreated(p *corev1.Pod) bool { return p.Status.Phase != "" }

func isTerminating(p *corev1.Pod) bool { return p.DeletionTimestamp != nil }

func isFinished(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded
}

func readyCondition(p *corev1.Pod) *corev1.PodCondition {
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == corev1.PodReady {
			return &p.Status.Conditions[i]
		}
	}
	return nil
}

func isRunningAndReady(p *corev1.Pod) bool {
	c := readyCondition(p)
	return p.Status.Phase == corev1.PodRunning && c != nil && c.Status == corev1.ConditionTrue
}

// availableIn returns how long until a running, ready pod has been ready
// for minReadySeconds (0 or less: it is available).
func availableIn(p *corev1.Pod, minReadySeconds int32, now time.Time) time.Duration {
	if minReadySeconds <= 0 {
		return 0
	}
	c := readyCondition(p)
	if c == nil {
		return time.Duration(minReadySeconds) * time.Second
	}
	return c.LastTransitionTime.Add(time.Duration(minReadySeconds) * time.Second).Sub(now)
}

func isHealthy(p *corev1.Pod) bool { return isRunningAndReady(p) && !isTerminating(p) }
