package batch

import (
	"encoding/json"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// autoscaling/v1 can only express a CPU utilization target. As upstream, what
// v2 holds beyond that rides along in annotations of the v1 object, so a
// client that reads and writes v1 loses nothing of the v2 object.
const (
	annMetrics        = "autoscaling.alpha.kubernetes.io/metrics"
	annBehavior       = "autoscaling.alpha.kubernetes.io/behavior"
	annConditions     = "autoscaling.alpha.kubernetes.io/conditions"
	annCurrentMetrics = "autoscaling.alpha.kubernetes.io/current-metrics"
)

func isCPUUtilization(m autoscalingv2.MetricSpec) bool {
	return m.Type == autoscalingv2.ResourceMetricSourceType && m.Resource != nil && m.Resource.Name == corev1.ResourceCPU &&
		m.Resource.Target.Type == autoscalingv2.UtilizationMetricType && m.Resource.Target.AverageUtilization != nil
}

func setJSONAnnotation(ann map[string]string, key string, v interface{}) map[string]string {
	data, err := json.Marshal(v)
	if err != nil {
		return ann
	}
	if ann == nil {
		ann = map[string]string{}
	}
	ann[key] = string(data)
	return ann
}

// HPAv2ToV1 converts a stored autoscaling/v2 HPA to autoscaling/v1.
func HPAv2ToV1(obj runtime.Object) (runtime.Object, error) {
	in := obj.(*autoscalingv2.HorizontalPodAutoscaler)
	out := &autoscalingv1.HorizontalPodAutoscaler{ObjectMeta: *in.ObjectMeta.DeepCopy()}
	out.Spec = autoscalingv1.HorizontalPodAutoscalerSpec{
		ScaleTargetRef: autoscalingv1.CrossVersionObjectReference{Kind: in.Spec.ScaleTargetRef.Kind, Name: in.Spec.ScaleTargetRef.Name, APIVersion: in.Spec.ScaleTargetRef.APIVersion},
		MinReplicas:    in.Spec.MinReplicas, MaxReplicas: in.Spec.MaxReplicas,
	}
	var others []autoscalingv2.MetricSpec
	for _, m := range in.Spec.Metrics {
		if isCPUUtilization(m) && out.Spec.TargetCPUUtilizationPercentage == nil {
			out.Spec.TargetCPUUtilizationPercentage = m.Resource.Target.AverageUtilization
			continue
		}
		others = append(others, m)
	}
	if len(others) > 0 {
		out.Annotations = setJSONAnnotation(out.Annotations, annMetrics, others)
	}
	if in.Spec.Behavior != nil {
		out.Annotations = setJSONAnnotation(out.Annotations, annBehavior, in.Spec.Behavior)
	}
	out.Status = autoscalingv1.HorizontalPodAutoscalerStatus{
		ObservedGeneration: in.Status.ObservedGeneration, LastScaleTime: in.Status.LastScaleTime,
		CurrentReplicas: in.Status.CurrentReplicas, DesiredReplicas: in.Status.DesiredReplicas,
	}
	var current []autoscalingv2.MetricStatus
	for _, m := range in.Status.CurrentMetrics {
		if m.Type == autoscalingv2.ResourceMetricSourceType && m.Resource != nil && m.Resource.Name == corev1.ResourceCPU && m.Resource.Current.AverageUtilization != nil && out.Status.CurrentCPUUtilizationPercentage == nil {
			out.Status.CurrentCPUUtilizationPercentage = m.Resource.Current.AverageUtilization
			continue
		}
		current = append(current, m)
	}
	if len(current) > 0 {
		out.Annotations = setJSONAnnotation(out.Annotations, annCurrentMetrics, current)
	}
	if len(in.Status.Conditions) > 0 {
		out.Annotations = setJSONAnnotation(out.Annotations, annConditions, in.Status.Conditions)
	}
	return out, nil
}

// HPAv1ToV2 converts an autoscaling/v1 HPA to the stored autoscaling/v2 form,
// restoring what HPAv2ToV1 put in annotations.
func HPAv1ToV2(obj runtime.Object) (runtime.Object, error) {
	in := obj.(*autoscalingv1.HorizontalPodAutoscaler)
	out := &autoscalingv2.HorizontalPodAutoscaler{ObjectMeta: *in.ObjectMeta.DeepCopy()}
	out.Spec = autoscalingv2.HorizontalPodAutoscalerSpec{
		ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{Kind: in.Spec.ScaleTargetRef.Kind, Name: in.Spec.ScaleTargetRef.Name, APIVersion: in.Spec.ScaleTargetRef.APIVersion},
		MinReplicas:    in.Spec.MinReplicas, MaxReplicas: in.Spec.MaxReplicas,
	}
	if t := in.Spec.TargetCPUUtilizationPercentage; t != nil {
		out.Spec.Metrics = append(out.Spec.Metrics, autoscalingv2.MetricSpec{Type: autoscalingv2.ResourceMetricSourceType,
			Resource: &autoscalingv2.ResourceMetricSource{Name: corev1.ResourceCPU,
				Target: autoscalingv2.MetricTarget{Type: autoscalingv2.UtilizationMetricType, AverageUtilization: t}}})
	}
	out.Status = autoscalingv2.HorizontalPodAutoscalerStatus{
		ObservedGeneration: in.Status.ObservedGeneration, LastScaleTime: in.Status.LastScaleTime,
		CurrentReplicas: in.Status.CurrentReplicas, DesiredReplicas: in.Status.DesiredReplicas,
	}
	if c := in.Status.CurrentCPUUtilizationPercentage; c != nil {
		out.Status.CurrentMetrics = append(out.Status.CurrentMetrics, autoscalingv2.MetricStatus{Type: autoscalingv2.ResourceMetricSourceType,
			Resource: &autoscalingv2.ResourceMetricStatus{Name: corev1.ResourceCPU, Current: autoscalingv2.MetricValueStatus{AverageUtilization: c}}})
	}
	ann := out.Annotations
	if v, ok := ann[annMetrics]; ok {
		var more []autoscalingv2.MetricSpec
		if json.Unmarshal([]byte(v), &more) == nil {
			out.Spec.Metrics = append(out.Spec.Metrics, more...)
		}
	}
	if v, ok := ann[annBehavior]; ok {
		var b autoscalingv2.HorizontalPodAutoscalerBehavior
		if json.Unmarshal([]byte(v), &b) == nil {
			out.Spec.Behavior = &b
		}
	}
	if v, ok := ann[annCurrentMetrics]; ok {
		var more []autoscalingv2.MetricStatus
		if json.Unmarshal([]byte(v), &more) == nil {
			out.Status.CurrentMetrics = append(out.Status.CurrentMetrics, more...)
		}
	}
	if v, ok := ann[annConditions]; ok {
		json.Unmarshal([]byte(v), &out.Status.Conditions)
	}
	for _, k := range []string{annMetrics, annBehavior, annCurrentMetrics, annConditions} {
		delete(ann, k)
	}
	if len(ann) == 0 {
		out.Annotations = nil
	}
	return out, nil
}
