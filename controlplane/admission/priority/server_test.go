package priority_test

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/navarch/navarch/controlplane/admission/priority"
	"github.com/navarch/navarch/controlplane/apiserver/apiservertest"
)

// Through a real API server: the globalDefault class is found by listing
// the classes the server holds, and refusals reach clients as 403s.
func TestPriorityAdmissionOnServer(t *testing.T) {
	s := apiservertest.Start(t, priority.New())
	ctx := context.Background()
	pcs := s.Client.SchedulingV1().PriorityClasses()
	for _, pc := range []*schedulingv1.PriorityClass{
		{ObjectMeta: metav1.ObjectMeta{Name: "normal"}, Value: 7, GlobalDefault: true},
		{ObjectMeta: metav1.ObjectMeta{Name: "high"}, Value: 1000},
	} {
		if _, err := pcs.Create(ctx, pc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := pcs.Create(ctx, &schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: "other"}, Value: 8, GlobalDefault: true}, metav1.CreateOptions{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("second globalDefault class: %v", err)
	}

	pods := s.Client.CoreV1().Pods("default")
	mk := func(name, class string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.PodSpec{PriorityClassName: class, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
	}
	p, err := pods.Create(ctx, mk("plain", ""), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Spec.PriorityClassName != "normal" || *p.Spec.Priority != 7 || *p.Spec.PreemptionPolicy != corev1.PreemptLowerPriority {
		t.Fatalf("pod without a class: class %q priority %d", p.Spec.PriorityClassName, *p.Spec.Priority)
	}
	_, err = pods.Create(ctx, mk("x", "foo"), metav1.CreateOptions{})
	if !apierrors.IsForbidden(err) || err.Error() != `pods "x" is forbidden: no PriorityClass with name foo was found` {
		t.Fatalf("unknown class: %v", err)
	}
	if _, err := pods.Get(ctx, "x", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("refused pod stored: %v", err)
	}
}
