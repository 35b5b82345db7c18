package batch

import (
	"fmt"
	"strings"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	"github.com/navarch/navarch/controlplane/registry"
)

// hpaColumns are the columns of `kubectl get hpa` in both versions.
var hpaColumns = []metav1.TableColumnDefinition{
	registry.NameColumn,
	{Name: "Reference", Type: "string", Description: "Reference to the object the autoscaler scales."},
	{Name: "Targets", Type: "string", Description: "Current and target metric values."},
	{Name: "MinPods", Type: "string", Description: "Lower limit for the number of pods."},
	{Name: "MaxPods", Type: "integer", Description: "Upper limit for the number of pods."},
	{Name: "Replicas", Type: "integer", Description: "Current number of replicas of pods managed by this autoscaler."},
	registry.AgeColumn,
}

func horizontalpodautoscalers() *registry.Resource {
	return &registry.Resource{Group: "autoscaling", Version: "v2", Plural: "horizontalpodautoscalers", Singular: "horizontalpodautoscaler", Kind: "HorizontalPodAutoscaler", Namespaced: true, ShortNames: []string{"hpa"}, Categories: []string{"all"}, Status: true,
		New: func() runtime.Object { return &autoscalingv2.HorizontalPodAutoscaler{} }, NewList: func() runtime.Object { return &autoscalingv2.HorizontalPodAutoscalerList{} },
		Default: func(obj runtime.Object) {
			h := obj.(*autoscalingv2.HorizontalPodAutoscaler)
			if h.Spec.MinReplicas == nil {
				h.Spec.MinReplicas = ptr.To[int32](1)
			}
			if len(h.Spec.Metrics) == 0 {
				h.Spec.Metrics = []autoscalingv2.MetricSpec{{Type: autoscalingv2.ResourceMetricSourceType, Resource: &autoscalingv2.ResourceMetricSource{
					Name: corev1.ResourceCPU, Target: autoscalingv2.MetricTarget{Type: autoscalingv2.UtilizationMetricType, AverageUtilization: ptr.To[int32](80)}}}}
			}
			if b := h.Spec.Behavior; b != nil {
				b.ScaleUp = defaultScalingRules(b.ScaleUp, 0, []autoscalingv2.HPAScalingPolicy{
					{Type: autoscalingv2.PodsScalingPolicy, Value: 4, PeriodSeconds: 15}, {Type: autoscalingv2.PercentScalingPolicy, Value: 100, PeriodSeconds: 15}})
				b.ScaleDown = defaultScalingRules(b.ScaleDown, 300, []autoscalingv2.HPAScalingPolicy{
					{Type: autoscalingv2.PercentScalingPolicy, Value: 100, PeriodSeconds: 15}})
			}
		},
		Validate: func(obj, old runtime.Object) field.ErrorList {
			h := obj.(*autoscalingv2.HorizontalPodAutoscaler)
			ref := h.Spec.ScaleTargetRef
			return validateHPA(ref.Kind, ref.Name, h.Spec.MinReplicas, h.Spec.MaxReplicas)
		},
		Columns: hpaColumns,
		Row: func(obj runtime.Object) []interface{} {
			h := obj.(*autoscalingv2.HorizontalPodAutoscaler)
			var targets []string
			for i, m := range h.Spec.Metrics {
				current := "<unknown>"
				if m.Resource != nil && m.Resource.Target.AverageUtilization != nil {
					if i < len(h.Status.CurrentMetrics) && h.Status.CurrentMetrics[i].Resource != nil && h.Status.CurrentMetrics[i].Resource.Current.AverageUtilization != nil {
						current = fmt.Sprintf("%d%%", *h.Status.CurrentMetrics[i].Resource.Current.AverageUtilization)
					}
					targets = append(targets, fmt.Sprintf("%s: %s/%d%%", m.Resource.Name, current, *m.Resource.Target.AverageUtilization))
				} else {
					targets = append(targets, current+"/"+string(m.Type))
				}
			}
			t := "<none>"
			if len(targets) > 0 {
				t = strings.Join(targets, ", ")
			}
			ref := h.Spec.ScaleTargetRef
			return []interface{}{h.Name, ref.Kind + "/" + ref.Name, t, minPods(h.Spec.MinReplicas), int64(h.Spec.MaxReplicas), int64(h.Status.CurrentReplicas), registry.Age(h.CreationTimestamp)}
		},
	}
}

func horizontalpodautoscalersV1() *registry.Resource {
	return &registry.Resource{Group: "autoscaling", Version: "v1", Plural: "horizontalpodautoscalers", Singular: "horizontalpodautoscaler", Kind: "HorizontalPodAutoscaler", Namespaced: true, ShortNames: []string{"hpa"}, Categories: []string{"all"}, Status: true,
		New: func() runtime.Object { return &autoscalingv1.HorizontalPodAutoscaler{} }, NewList: func() runtime.Object { return &autoscalingv1.HorizontalPodAutoscalerList{} },
		StoredAs: &registry.StoredAs{Group: "autoscaling", Version: "v2", Plural: "horizontalpodautoscalers", ToStorage: HPAv1ToV2, FromStorage: HPAv2ToV1},
		Default: func(obj runtime.Object) {
			if h := obj.(*autoscalingv1.HorizontalPodAutoscaler); h.Spec.MinReplicas == nil {
				h.Spec.MinReplicas = ptr.To[int32](1)
			}
		},
		Validate: func(obj, old runtime.Object) field.ErrorList {
			h := obj.(*autoscalingv1.HorizontalPodAutoscaler)
			errs := validateHPA(h.Spec.ScaleTargetRef.Kind, h.Spec.ScaleTargetRef.Name, h.Spec.MinReplicas, h.Spec.MaxReplicas)
			if t := h.Spec.TargetCPUUtilizationPercentage; t != nil && *t < 1 {
				errs = append(errs, field.Invalid(spec.Child("targetCPUUtilizationPercentage"), *t, "must be greater than or equal to 1"))
			}
			return errs
		},
		Columns: hpaColumns,
		Row: func(obj runtime.Object) []interface{} {
			h := obj.(*autoscalingv1.HorizontalPodAutoscaler)
			t := "<unknown>/<none>"
			if h.Spec.TargetCPUUtilizationPercentage != nil {
				current := "<unknown>"
				if c := h.Status.CurrentCPUUtilizationPercentage; c != nil {
					current = fmt.Sprintf("%d%%", *c)
				}
				t = fmt.Sprintf("%s/%d%%", current, *h.Spec.TargetCPUUtilizationPercentage)
			}
			ref := h.Spec.ScaleTargetRef
			return []interface{}{h.Name, ref.Kind + "/" + ref.Name, t, minPods(h.Spec.MinReplicas), int64(h.Spec.MaxReplicas), int64(h.Status.CurrentReplicas), registry.Age(h.CreationTimestamp)}
		},
	}
}

func defaultScalingRules(r *autoscalingv2.HPAScalingRules, window int32, policies []autoscalingv2.HPAScalingPolicy) *autoscalingv2.HPAScalingRules {
	if r == nil {
		r = &autoscalingv2.HPAScalingRules{}
	}
	if r.StabilizationWindowSeconds == nil {
		r.StabilizationWindowSeconds = ptr.To[int32](window)
	}
	if r.SelectPolicy == nil {
		p := autoscalingv2.MaxChangePolicySelect
		r.SelectPolicy = &p
	}
	if len(r.Policies) == 0 {
		r.Policies = policies
	}
	return r
}

func validateHPA(kind, name string, min *int32, max int32) field.ErrorList {
	var errs field.ErrorList
	ref := spec.Child("scaleTargetRef")
	if kind == "" {
		errs = append(errs, field.Required(ref.Child("kind"), ""))
	}
	if name == "" {
		errs = append(errs, field.Required(ref.Child("name"), ""))
	}
	if min != nil && *min < 1 {
		errs = append(errs, field.Invalid(spec.Child("minReplicas"), *min, "must be greater than or equal to 1"))
	}
	if max < 1 {
		errs = append(errs, field.Invalid(spec.Child("maxReplicas"), max, "must be greater than 0"))
	}
	if min != nil && max < *min {
		errs = append(errs, field.Invalid(spec.Child("maxReplicas"), max, "must be greater than or equal to `minReplicas`"))
	}
	return errs
}

func minPods(min *int32) string {
	if min == nil {
		return "<unset>"
	}
	return fmt.Sprint(*min)
}
