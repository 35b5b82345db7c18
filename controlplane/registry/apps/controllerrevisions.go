package apps

import (
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/navarch/navarch/controlplane/registry"
)

func controllerrevisions() *registry.Resource {
	return &registry.Resource{Group: "apps", Version: "v1", Plural: "controllerrevisions", Singular: "controllerrevision", Kind: "ControllerRevision", Namespaced: true,
		New: func() runtime.Object { return &appsv1.ControllerRevision{} }, NewList: func() runtime.Object { return &appsv1.ControllerRevisionList{} }}
}
