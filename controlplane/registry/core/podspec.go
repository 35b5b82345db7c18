package core

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// DefaultPodSpec fills in upstream's defaults for a pod spec, in place. Workload
// resources (ReplicaSet, Deployment, Job ...) call it for their pod templates.
func DefaultPodSpec(spec *corev1.PodSpec) {}

// ValidatePodSpec checks a pod spec; fldPath is where the spec sits in the object
// (spec for a pod, spec.template.spec for a Deployment).
func ValidatePodSpec(spec *corev1.PodSpec, fldPath *field.Path) field.ErrorList { return nil }

// ValidatePodTemplateSpec checks a pod template (labels, annotations and spec).
func ValidatePodTemplateSpec(t *corev1.PodTemplateSpec, fldPath *field.Path) field.ErrorList {
	return ValidatePodSpec(&t.Spec, fldPath.Child("spec"))
}
