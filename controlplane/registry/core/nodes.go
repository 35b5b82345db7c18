package core

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/navarch/navarch/controlplane/registry"
)

func nodes() *registry.Resource {
	return &registry.Resource{Version: "v1", Plural: "nodes", Singular: "node", Kind: "Node", ShortNames: []string{"no"}, Status: true,
		New: func() runtime.Object { return &corev1.Node{} }, NewList: func() runtime.Object { return &corev1.NodeList{} }}
}
