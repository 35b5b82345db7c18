package batch

import (
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/navarch/navarch/controlplane/registry"
)

func horizontalpodautoscalersV1() *registry.Resource {
	return &registry.Resource{Group: "autoscaling", Version: "v1", Plural: "horizontalpodautoscalers", Singular: "horizontalpodautoscaler", Kind: "HorizontalPodAutoscaler", Namespaced: true, ShortNames: []string{"hpa"}, Categories: []string{"all"}, Status: true,
		New: func() runtime.Object { return &autoscalingv1.HorizontalPodAutoscaler{} }, NewList: func() runtime.Object { return &autoscalingv1.HorizontalPodAutoscalerList{} },
		StoredAs: &registry.StoredAs{Group: "autoscaling", Version: "v2", Plural: "horizontalpodautoscalers", ToStorage: HPAv1ToV2, FromStorage: HPAv2ToV1}}
}
