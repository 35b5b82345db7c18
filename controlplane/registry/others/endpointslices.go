package others

import (
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/navarch/navarch/controlplane/registry"
)

func endpointslices() *registry.Resource {
	return &registry.Resource{Group: "discovery.k8s.io", Version: "v1", Plural: "endpointslices", Singular: "endpointslice", Kind: "EndpointSlice", Namespaced: true,
		New: func() runtime.Object { return &discoveryv1.EndpointSlice{} }, NewList: func() runtime.Object { return &discoveryv1.EndpointSliceList{} }}
}
