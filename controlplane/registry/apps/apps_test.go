package apps

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestDeploymentDefaultsAndSelector(t *testing.T) {
	r := deployments()
	d := &appsv1.Deployment{Spec: appsv1.DeploymentSpec{
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "nginx:1"}}}},
	}}
	r.Default(d)
	if *d.Spec.Replicas != 1 || d.Spec.Strategy.RollingUpdate.MaxSurge.String() != "25%" || *d.Spec.RevisionHistoryLimit != 10 || *d.Spec.ProgressDeadlineSeconds != 600 {
		t.Fatalf("deployment defaults: %+v", d.Spec)
	}
	if errs := r.Validate(d, nil); len(errs) != 0 {
		t.Fatalf("valid deployment rejected: %v", errs)
	}
	bad := d.DeepCopy()
	bad.Spec.Template.Labels = map[string]string{"app": "other"}
	errs := r.Validate(bad, nil)
	if len(errs) != 1 || errs[0].Field != "spec.template.metadata.labels" {
		t.Fatalf("selector mismatch: %v", errs)
	}
	changed := d.DeepCopy()
	changed.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web", "v": "2"}}
	changed.Spec.Template.Labels["v"] = "2"
	if errs := r.Validate(changed, d); len(errs) != 1 || errs[0].Field != "spec.selector" {
		t.Fatalf("selector change on update: %v", errs)
	}
}
