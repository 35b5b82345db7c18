package priority

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/navarch/navarch/controlplane/registry"
)

// classes is a Reader and Lister over a fixed set of PriorityClasses.
type classes []*schedulingv1.PriorityClass

func (c classes) Get(_ context.Context, g, v, p, ns, name string) (runtime.Object, error) {
	for _, pc := range c {
		if pc.Name == name {
			return pc.DeepCopy(), nil
		}
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Group: g, Resource: p}, name)
}

func (c classes) List(_ context.Context, g, v, p, ns string) ([]runtime.Object, error) {
	var out []runtime.Object
	for _, pc := range c {
		out = append(out, pc.DeepCopy())
	}
	return out, nil
}

func class(name string, value int32, def bool, policy corev1.PreemptionPolicy) *schedulingv1.PriorityClass {
	return &schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Value: value, GlobalDefault: def, PreemptionPolicy: &policy}
}

var (
	podsRes = &registry.Resource{Version: "v1", Plural: "pods", Kind: "Pod", Namespaced: true}
	pcRes   = &registry.Resource{Group: group, Version: version, Plural: plural, Kind: "PriorityClass"}
)

func ptr[T any](v T) *T { return &v }

func TestAdmitPod(t *testing.T) {
	high := class("high", 1000, false, corev1.PreemptLowerPriority)
	never := class("batch", 50, false, corev1.PreemptNever)
	def := class("normal", 7, true, corev1.PreemptLowerPriority)
	cases := []struct {
		name       string
		classes    classes
		className  string
		priority   *int32
		policy     *corev1.PreemptionPolicy
		wantErr    string // the whole message when refused
		wantClass  string
		wantValue  int32
		wantPolicy corev1.PreemptionPolicy
	}{
		{name: "no class, no default", classes: classes{high}, wantValue: 0, wantPolicy: corev1.PreemptLowerPriority},
		{name: "no class, default", classes: classes{high, def}, wantClass: "normal", wantValue: 7, wantPolicy: corev1.PreemptLowerPriority},
		{name: "named class", classes: classes{high, def}, className: "high", wantClass: "high", wantValue: 1000, wantPolicy: corev1.PreemptLowerPriority},
		{name: "never class", classes: classes{never}, className: "batch", wantClass: "batch", wantValue: 50, wantPolicy: corev1.PreemptNever},
		{name: "unknown class", classes: classes{high}, className: "foo",
			wantErr: `pods "x" is forbidden: no PriorityClass with name foo was found`},
		{name: "own priority differs", classes: classes{high}, className: "high", priority: ptr[int32](5),
			wantErr: `pods "x" is forbidden: the integer value of priority (5) must not be provided in pod spec; priority admission controller computed 1000 from the given PriorityClass name`},
		{name: "own priority differs from 0", classes: classes{}, priority: ptr[int32](5),
			wantErr: `pods "x" is forbidden: the integer value of priority (5) must not be provided in pod spec; priority admission controller computed 0 from the given PriorityClass name`},
		{name: "own priority equal", classes: classes{high}, className: "high", priority: ptr[int32](1000), wantClass: "high", wantValue: 1000, wantPolicy: corev1.PreemptLowerPriority},
		{name: "own policy differs", classes: classes{never}, className: "batch", policy: ptr(corev1.PreemptLowerPriority),
			wantErr: `pods "x" is forbidden: the string value of PreemptionPolicy (PreemptLowerPriority) must not be provided in pod spec; priority admission controller computed Never from the given PriorityClass name`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: "default"},
				Spec: corev1.PodSpec{PriorityClassName: c.className, Priority: c.priority, PreemptionPolicy: c.policy}}
			err := New().AdmitCreate(context.Background(), c.classes, podsRes, pod)
			if c.wantErr != "" {
				if !apierrors.IsForbidden(err) || err.Error() != c.wantErr {
					t.Fatalf("got %v, want Forbidden %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if pod.Spec.PriorityClassName != c.wantClass || pod.Spec.Priority == nil || *pod.Spec.Priority != c.wantValue ||
				pod.Spec.PreemptionPolicy == nil || *pod.Spec.PreemptionPolicy != c.wantPolicy {
				t.Fatalf("got class %q priority %v policy %v", pod.Spec.PriorityClassName, pod.Spec.Priority, pod.Spec.PreemptionPolicy)
			}
		})
	}
}

func TestAdmitPriorityClassDefault(t *testing.T) {
	existing := classes{class("normal", 7, true, corev1.PreemptLowerPriority)}
	second := class("other", 9, true, corev1.PreemptLowerPriority)
	err := New().AdmitCreate(context.Background(), existing, pcRes, second)
	if !apierrors.IsForbidden(err) || err.Error() != `priorityclasses.scheduling.k8s.io "other" is forbidden: PriorityClass other is marked as default, but there is already a default PriorityClass normal` {
		t.Fatalf("second default: %v", err)
	}
	if err := New().AdmitCreate(context.Background(), classes{}, pcRes, second); err != nil {
		t.Fatalf("first default refused: %v", err)
	}
	if err := New().AdmitCreate(context.Background(), existing, pcRes, class("plain", 1, false, corev1.PreemptLowerPriority)); err != nil {
		t.Fatalf("non-default refused: %v", err)
	}
	// Objects of other resources are none of this step's business.
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "c"}}
	if err := New().AdmitCreate(context.Background(), classes{}, &registry.Resource{Version: "v1", Plural: "configmaps"}, cm); err != nil {
		t.Fatal(err)
	}
}
