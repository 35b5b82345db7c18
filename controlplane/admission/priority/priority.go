// Package priority is the Priority admission step: it gives every pod being
// created the priority and preemption policy of its PriorityClass (or of the
// globalDefault class, or 0 when there is none), refuses pods that name a
// class that does not exist or that state a priority of their own, and keeps
// a second globalDefault PriorityClass from being created, as upstream's
// Priority admission plugin does.
package priority

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/navarch/navarch/controlplane/apiserver"
	"github.com/navarch/navarch/controlplane/registry"
)

const group, version, plural = "scheduling.k8s.io", "v1", "priorityclasses"

// Admission is the Priority admission step.
type Admission struct{}

// New returns the Priority admission step.
func New() *Admission { return &Admission{} }

// Name is upstream's plugin name.
func (*Admission) Name() string { return "Priority" }

// AdmitCreate resolves a new pod's priority, or checks a new PriorityClass
// against the existing default; other objects pass untouched.
func (a *Admission) AdmitCreate(ctx context.Context, r apiserver.Reader, res *registry.Resource, obj runtime.Object) error {
	switch {
	case res.Group == "" && res.Plural == "pods":
		if pod, ok := obj.(*corev1.Pod); ok {
			return a.admitPod(ctx, r, res, pod)
		}
	case res.Group == group && res.Plural == plural:
		if pc, ok := obj.(*schedulingv1.PriorityClass); ok && pc.GlobalDefault {
			def, err := defaultClass(ctx, r)
			if err != nil {
				return fmt.Errorf("priorityclass %s: %w", pc.Name, err)
			}
			if def != nil {
				return apierrors.NewForbidden(res.GVR().GroupResource(), pc.Name,
					fmt.Errorf("PriorityClass %s is marked as default, but there is already a default PriorityClass %s", pc.Name, def.Name))
			}
		}
	}
	return nil
}

func (a *Admission) admitPod(ctx context.Context, r apiserver.Reader, res *registry.Resource, pod *corev1.Pod) error {
	forbid := func(format string, args ...interface{}) error {
		return apierrors.NewForbidden(res.GVR().GroupResource(), pod.Name, fmt.Errorf(format, args...))
	}
	var value int32
	policy := corev1.PreemptLowerPriority
	if pod.Spec.PriorityClassName == "" {
		def, err := defaultClass(ctx, r)
		if err != nil {
			return fmt.Errorf("pod %s/%s: default priority class: %w", pod.Namespace, pod.Name, err)
		}
		if def != nil {
			pod.Spec.PriorityClassName = def.Name
			value = def.Value
			if def.PreemptionPolicy != nil {
				policy = *def.PreemptionPolicy
			}
		}
	} else {
		obj, err := r.Get(ctx, group, version, plural, "", pod.Spec.PriorityClassName)
		if apierrors.IsNotFound(err) {
			return forbid("no PriorityClass with name %s was found", pod.Spec.PriorityClassName)
		}
		if err != nil {
			return fmt.Errorf("pod %s/%s: priority class %s: %w", pod.Namespace, pod.Name, pod.Spec.PriorityClassName, err)
		}
		pc := obj.(*schedulingv1.PriorityClass)
		value = pc.Value
		if pc.PreemptionPolicy != nil {
			policy = *pc.PreemptionPolicy
		}
	}
	// The class is the only source of a pod's priority: a pod may repeat
	// the value, never choose another one.
	if pod.Spec.Priority != nil && *pod.Spec.Priority != value {
		return forbid("the integer value of priority (%d) must not be provided in pod spec; priority admission controller computed %d from the given PriorityClass name", *pod.Spec.Priority, value)
	}
	if pod.Spec.PreemptionPolicy != nil && *pod.Spec.PreemptionPolicy != policy {
		return forbid("the string value of PreemptionPolicy (%s) must not be provided in pod spec; priority admission controller computed %s from the given PriorityClass name", *pod.Spec.PreemptionPolicy, policy)
	}
	pod.Spec.Priority = &value
	pod.Spec.PreemptionPolicy = &policy
	return nil
}

// defaultClass returns the globalDefault PriorityClass, or nil. With
// several (made by racing creates or by updates), the lowest value wins, as
// upstream picks.
func defaultClass(ctx context.Context, r apiserver.Reader) (*schedulingv1.PriorityClass, error) {
	l, ok := r.(apiserver.Lister)
	if !ok {
		return nil, nil // a reader that cannot list knows no default
	}
	objs, err := l.List(ctx, group, version, plural, "")
	if err != nil {
		return nil, err
	}
	var def *schedulingv1.PriorityClass
	for _, o := range objs {
		pc, ok := o.(*schedulingv1.PriorityClass)
		if ok && pc.GlobalDefault && (def == nil || pc.Value < def.Value) {
			def = pc
		}
	}
	return def, nil
}
