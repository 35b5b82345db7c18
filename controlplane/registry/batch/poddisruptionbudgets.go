package batch

import (
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/navarch/navarch/controlplane/registry"
)

func poddisruptionbudgets() *registry.Resource {
	return &registry.Resource{Group: "policy", Version: "v1", Plural: "poddisruptionbudgets", Singular: "poddisruptionbudget", Kind: "PodDisruptionBudget", Namespaced: true, ShortNames: []string{"pdb"}, Status: true,
		New: func() runtime.Object { return &policyv1.PodDisruptionBudget{} }, NewList: func() runtime.Object { return &policyv1.PodDisruptionBudgetList{} },
		Validate: func(obj, old runtime.Object) field.ErrorList {
			p := obj.(*policyv1.PodDisruptionBudget)
			var errs field.ErrorList
			if p.Spec.MinAvailable != nil && p.Spec.MaxUnavailable != nil {
				errs = append(errs, field.Invalid(spec, p.Spec, "minAvailable and maxUnavailable cannot be both set"))
			}
			errs = append(errs, registry.ValidateCountOrPercent(p.Spec.MinAvailable, spec.Child("minAvailable"))...)
			errs = append(errs, registry.ValidateCountOrPercent(p.Spec.MaxUnavailable, spec.Child("maxUnavailable"))...)
			if p.Spec.Selector != nil {
				errs = append(errs, metav1validation.ValidateLabelSelector(p.Spec.Selector, metav1validation.LabelSelectorValidationOptions{}, spec.Child("selector"))...)
			}
			return errs
		},
		Columns: []metav1.TableColumnDefinition{
			registry.NameColumn,
			{Name: "Min Available", Type: "string", Description: "The minimum number of pods that must be available."},
			{Name: "Max Unavailable", Type: "string", Description: "The maximum number of pods that may be unavailable."},
			{Name: "Allowed Disruptions", Type: "integer", Description: "Number of pod disruptions that are currently allowed."},
			registry.AgeColumn,
		},
		Row: func(obj runtime.Object) []interface{} {
			p := obj.(*policyv1.PodDisruptionBudget)
			show := func(v *intstr.IntOrString) string {
				if v == nil {
					return "N/A"
				}
				return v.String()
			}
			return []interface{}{p.Name, show(p.Spec.MinAvailable), show(p.Spec.MaxUnavailable), int64(p.Status.DisruptionsAllowed), registry.Age(p.CreationTimestamp)}
		},
	}
}
