package apps

import (
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/navarch/navarch/controlplane/registry/core"
)

// This file holds what the apps/v1 workloads share: a label selector that
// must select the pod template, a pod template, replicas.

var spec = field.NewPath("spec")

// validateSelectorAndTemplate checks the selector (required, matching the
// template's labels, immutable once created) and the template itself.
func validateSelectorAndTemplate(sel, oldSel *metav1.LabelSelector, tmpl *corev1.PodTemplateSpec, restartAlways bool) field.ErrorList {
	var errs field.ErrorList
	if sel == nil {
		errs = append(errs, field.Required(spec.Child("selector"), ""))
	} else {
		errs = append(errs, metav1validation.ValidateLabelSelector(sel, metav1validation.LabelSelectorValidationOptions{}, spec.Child("selector"))...)
		if len(sel.MatchLabels)+len(sel.MatchExpressions) == 0 {
			errs = append(errs, field.Invalid(spec.Child("selector"), sel, "empty selector is invalid for deployment"))
		}
		if s, err := metav1.LabelSelectorAsSelector(sel); err == nil && !s.Empty() && !s.Matches(labelsOf(tmpl)) {
			errs = append(errs, field.Invalid(spec.Child("template", "metadata", "labels"), tmpl.Labels, "`selector` does not match template `labels`"))
		}
	}
	if oldSel != nil && !apiequality.Semantic.DeepEqual(sel, oldSel) {
		errs = append(errs, field.Invalid(spec.Child("selector"), sel, "field is immutable"))
	}
	errs = append(errs, core.ValidatePodTemplateSpec(tmpl, spec.Child("template"))...)
	if restartAlways && tmpl.Spec.RestartPolicy != corev1.RestartPolicyAlways {
		errs = append(errs, field.NotSupported(spec.Child("template", "spec", "restartPolicy"), tmpl.Spec.RestartPolicy, []string{string(corev1.RestartPolicyAlways)}))
	}
	if tmpl.Spec.ActiveDeadlineSeconds != nil {
		errs = append(errs, field.Forbidden(spec.Child("template", "spec", "activeDeadlineSeconds"), "activeDeadlineSeconds in ReplicaSet is not Supported"))
	}
	return errs
}

func labelsOf(t *corev1.PodTemplateSpec) labels.Set { return labels.Set(t.Labels) }

func validateReplicas(p *int32, fld *field.Path) field.ErrorList {
	if p != nil && *p < 0 {
		return field.ErrorList{field.Invalid(fld, *p, "must be greater than or equal to 0")}
	}
	return nil
}
