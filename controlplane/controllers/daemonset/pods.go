package daemonset

import (
	"sort"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/navarch/navarch/controlplane/scheduler/framework"
	"github.com/navarch/navarch/controlplane/scheduler/plugins/nodeaffinity"
)

// nodeNameField is the field a daemon pod's node affinity names its node by.
const nodeNameField = "metadata.name"

// daemonTolerations are the tolerations upstream gives every daemon pod, so
// that it lands on (and stays on) nodes that are not ready, unreachable,
// under pressure or cordoned: a daemon is often what makes a node work.
func daemonTolerations(spec *corev1.PodSpec) []corev1.Toleration {
	ts := []corev1.Toleration{
		{Key: corev1.TaintNodeNotReady, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
		{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
		{Key: corev1.TaintNodeDiskPressure, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
		{Key: corev1.TaintNodeMemoryPressure, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
		{Key: corev1.TaintNodePIDPressure, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
		{Key: corev1.TaintNodeUnschedulable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
	}
	if spec.HostNetwork {
		ts = append(ts, corev1.Toleration{Key: corev1.TaintNodeNetworkUnavailable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule})
	}
	return ts
}

// addTolerations adds each toleration to spec, replacing one the template
// already has for the same key, operator, value and effect (which may
// differ in tolerationSeconds), as upstream does.
func addTolerations(spec *corev1.PodSpec, add []corev1.Toleration) {
	for _, t := range add {
		found := false
		for i := range spec.Tolerations {
			have := &spec.Tolerations[i]
			if have.Key == t.Key && have.Operator == t.Operator && have.Value == t.Value && have.Effect == t.Effect {
				*have, found = t, true
				break
			}
		}
		if !found {
			spec.Tolerations = append(spec.Tolerations, t)
		}
	}
}

// podSpecFor is the template's spec as a pod for node gets it: the daemon
// tolerations added and the required node affinity replaced by the node's
// name (the controller has already checked the template's own terms).
func podSpecFor(ds *appsv1.DaemonSet, node string) corev1.PodSpec {
	spec := *ds.Spec.Template.Spec.DeepCopy()
	addTolerations(&spec, daemonTolerations(&spec))
	if spec.Affinity == nil {
		spec.Affinity = &corev1.Affinity{}
	}
	if spec.Affinity.NodeAffinity == nil {
		spec.Affinity.NodeAffinity = &corev1.NodeAffinity{}
	}
	spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution = &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
		MatchFields: []corev1.NodeSelectorRequirement{{Key: nodeNameField, Operator: corev1.NodeSelectorOpIn, Values: []string{node}}}}}}
	return spec
}

// newPod is the daemon pod for node, made from the revision named hash.
func newPod(ds *appsv1.DaemonSet, node, hash string) *corev1.Pod {
	t := &ds.Spec.Template
	podLabels := make(map[string]string, len(t.Labels)+2)
	for k, v := range t.Labels {
		podLabels[k] = v
	}
	if gen, ok := ds.Annotations[appsv1.DeprecatedTemplateGeneration]; ok {
		podLabels[GenerationLabel] = gen
	}
	if hash != "" {
		podLabels[HashLabel] = hash
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: ds.Name + "-", Namespace: ds.Namespace, Labels: podLabels, Annotations: t.Annotations, Finalizers: t.Finalizers,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(ds, appsv1.SchemeGroupVersion.WithKind("DaemonSet"))},
		},
		Spec: podSpecFor(ds, node),
	}
}

// shouldRun says whether node should run the DaemonSet's pod, and whether
// a pod already there may stay: a NoSchedule taint keeps new pods off but
// does not evict, a NoExecute one does both, as upstream decides.
func shouldRun(ds *appsv1.DaemonSet, node *corev1.Node) (run, keep bool) {
	if n := ds.Spec.Template.Spec.NodeName; n != "" && n != node.Name {
		return false, false
	}
	spec := ds.Spec.Template.Spec.DeepCopy()
	addTolerations(spec, daemonTolerations(spec))
	if (nodeaffinity.Plugin{}).Filter(&corev1.Pod{Spec: *spec}, &framework.NodeInfo{Node: node}) != "" {
		return false, false
	}
	run, keep = true, true
	for i := range node.Spec.Taints {
		taint := &node.Spec.Taints[i]
		if taint.Effect != corev1.TaintEffectNoSchedule && taint.Effect != corev1.TaintEffectNoExecute {
			continue
		}
		if tolerated(taint, spec.Tolerations) {
			continue
		}
		run = false
		if taint.Effect == corev1.TaintEffectNoExecute {
			keep = false
		}
	}
	return run, keep
}

func tolerated(taint *corev1.Taint, ts []corev1.Toleration) bool {
	for i := range ts {
		if ts[i].ToleratesTaint(taint) {
			return true
		}
	}
	return false
}

// targetNode is the node a daemon pod is on or, before the scheduler has
// bound it, the node its affinity names.
func targetNode(p *corev1.Pod) string {
	if p.Spec.NodeName != "" {
		return p.Spec.NodeName
	}
	a := p.Spec.Affinity
	if a == nil || a.NodeAffinity == nil || a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return ""
	}
	for _, term := range a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
		for _, f := range term.MatchFields {
			if f.Key == nodeNameField && f.Operator == corev1.NodeSelectorOpIn && len(f.Values) == 1 {
				return f.Values[0]
			}
		}
	}
	return ""
}

func templateGeneration(ds *appsv1.DaemonSet) *int64 {
	v, ok := ds.Annotations[appsv1.DeprecatedTemplateGeneration]
	if !ok {
		return nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return nil
	}
	return &n
}

// isUpdated reports whether a pod is of the current template: by revision
// hash, or by template generation for pods made before revisions existed.
func isUpdated(p *corev1.Pod, hash string, gen *int64) bool {
	if hash != "" && p.Labels[HashLabel] == hash {
		return true
	}
	return gen != nil && p.Labels[GenerationLabel] == strconv.FormatInt(*gen, 10)
}

func isReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// isAvailable: ready for at least minReadySeconds.
func isAvailable(p *corev1.Pod, minReadySeconds int32, now time.Time) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue &&
				(minReadySeconds == 0 || !c.LastTransitionTime.Add(time.Duration(minReadySeconds)*time.Second).After(now))
		}
	}
	return false
}

// byAge sorts pods oldest first; of pods made in the same second, a
// running one before a pending one, then by name, so the choice is stable.
func byAge(pods []*corev1.Pod) []*corev1.Pod {
	out := append([]*corev1.Pod(nil), pods...)
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
			return a.CreationTimestamp.Before(&b.CreationTimestamp)
		}
		if ra, rb := a.Status.Phase == corev1.PodRunning, b.Status.Phase == corev1.PodRunning; ra != rb {
			return ra
		}
		return a.Name < b.Name
	})
	return out
}

func oldest(pods []*corev1.Pod) *corev1.Pod { return byAge(pods)[0] }
