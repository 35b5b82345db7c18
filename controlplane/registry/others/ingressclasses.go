package others

import (
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/navarch/navarch/controlplane/registry"
)

func ingressclasses() *registry.Resource {
	return &registry.Resource{Group: "networking.k8s.io", Version: "v1", Plural: "ingressclasses", Singular: "ingressclass", Kind: "IngressClass",
		New: func() runtime.Object { return &networkingv1.IngressClass{} }, NewList: func() runtime.Object { return &networkingv1.IngressClassList{} }}
}
