package apps

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	"github.com/navarch/navarch/controlplane/registry"
	"github.com/navarch/navarch/controlplane/registry/core"
)

func deployments() *registry.Resource {
	return &registry.Resource{Group: "apps", Version: "v1", Plural: "deployments", Singular: "deployment", Kind: "Deployment", Namespaced: true, ShortNames: []string{"deploy"}, Categories: []string{"all"}, Status: true,
		New: func() runtime.Object { return &appsv1.Deployment{} }, NewList: func() runtime.Object { return &appsv1.DeploymentList{} },
		Default: func(obj runtime.Object) {
			d := obj.(*appsv1.Deployment)
			if d.Spec.Replicas == nil {
				d.Spec.Replicas = ptr.To[int32](1)
			}
			if d.Spec.Strategy.Type == "" {
				d.Spec.Strategy.Type = appsv1.RollingUpdateDeploymentStrategyType
			}
			if d.Spec.Strategy.Type == appsv1.RollingUpdateDeploymentStrategyType {
				if d.Spec.Strategy.RollingUpdate == nil {
					d.Spec.Strategy.RollingUpdate = &appsv1.RollingUpdateDeployment{}
				}
				quarter := intstr.FromString("25%")
				if d.Spec.Strategy.RollingUpdate.MaxUnavailable == nil {
					d.Spec.Strategy.RollingUpdate.MaxUnavailable = &quarter
				}
				if d.Spec.Strategy.RollingUpdate.MaxSurge == nil {
					q := quarter
					d.Spec.Strategy.RollingUpdate.MaxSurge = &q
				}
			}
			if d.Spec.RevisionHistoryLimit == nil {
				d.Spec.RevisionHistoryLimit = ptr.To[int32](10)
			}
			if d.Spec.ProgressDeadlineSeconds == nil {
				d.Spec.ProgressDeadlineSeconds = ptr.To[int32](600)
			}
			core.DefaultPodSpec(&d.Spec.Template.Spec)
		},
		Validate: func(obj, old runtime.Object) field.ErrorList {
			d := obj.(*appsv1.Deployment)
			var oldSel *metav1.LabelSelector
			if o, ok := old.(*appsv1.Deployment); ok {
				oldSel = o.Spec.Selector
			}
			errs := validateReplicas(d.Spec.Replicas, spec.Child("replicas"))
			errs = append(errs, validateSelectorAndTemplate(d.Spec.Selector, oldSel, &d.Spec.Template, true)...)
			st := spec.Child("strategy")
			switch d.Spec.Strategy.Type {
			case appsv1.RecreateDeploymentStrategyType:
				if d.Spec.Strategy.RollingUpdate != nil {
					errs = append(errs, field.Forbidden(st.Child("rollingUpdate"), "may not be specified when strategy `type` is 'Recreate'"))
				}
			case appsv1.RollingUpdateDeploymentStrategyType:
				ru := d.Spec.Strategy.RollingUpdate
				errs = append(errs, registry.ValidateCountOrPercent(ru.MaxSurge, st.Child("rollingUpdate", "maxSurge"))...)
				errs = append(errs, registry.ValidateCountOrPercent(ru.MaxUnavailable, st.Child("rollingUpdate", "maxUnavailable"))...)
				if isZero(ru.MaxSurge) && isZero(ru.MaxUnavailable) {
					errs = append(errs, field.Invalid(st.Child("rollingUpdate", "maxUnavailable"), ru.MaxUnavailable.String(), "may not be 0 when `maxSurge` is 0"))
				}
			default:
				errs = append(errs, field.NotSupported(st.Child("type"), d.Spec.Strategy.Type, []string{"Recreate", "RollingUpdate"}))
			}
			if p := d.Spec.ProgressDeadlineSeconds; p != nil && *p <= d.Spec.MinReadySeconds {
				errs = append(errs, field.Invalid(spec.Child("progressDeadlineSeconds"), *p, "must be greater than minReadySeconds"))
			}
			if d.Spec.MinReadySeconds < 0 {
				errs = append(errs, field.Invalid(spec.Child("minReadySeconds"), d.Spec.MinReadySeconds, "must be greater than or equal to 0"))
			}
			return errs
		},
		Columns: []metav1.TableColumnDefinition{
			registry.NameColumn,
			{Name: "Ready", Type: "string", Description: "Number of the pod with ready state"},
			{Name: "Up-to-date", Type: "string", Description: "Total number of non-terminated pods targeted by this deployment that have the desired template spec."},
			{Name: "Available", Type: "string", Description: "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."},
			registry.AgeColumn,
			{Name: "Containers", Type: "string", Priority: 1, Description: "Names of each container in the template."},
			{Name: "Images", Type: "string", Priority: 1, Description: "Images referenced by each container in the template."},
			{Name: "Selector", Type: "string", Priority: 1, Description: "Label selector for pods."},
		},
		Row: func(obj runtime.Object) []interface{} {
			d := obj.(*appsv1.Deployment)
			names, images := core.ContainersAndImages(&d.Spec.Template.Spec)
			return []interface{}{d.Name, fmt.Sprintf("%d/%d", d.Status.ReadyReplicas, ptr.Deref(d.Spec.Replicas, 0)),
				int64(d.Status.UpdatedReplicas), int64(d.Status.AvailableReplicas), registry.Age(d.CreationTimestamp),
				names, images, registry.SelectorColumn(d.Spec.Selector)}
		},
		Scale: &registry.Scale{
			Get: func(obj runtime.Object) (int32, int32, string) {
				d := obj.(*appsv1.Deployment)
				return ptr.Deref(d.Spec.Replicas, 0), d.Status.Replicas, registry.SelectorColumn(d.Spec.Selector)
			},
			SetReplicas: func(obj runtime.Object, n int32) { obj.(*appsv1.Deployment).Spec.Replicas = &n },
		},
	}
}

func isZero(v *intstr.IntOrString) bool {
	return v != nil && ((v.Type == intstr.Int && v.IntVal == 0) || (v.Type == intstr.String && v.StrVal == "0%"))
}
