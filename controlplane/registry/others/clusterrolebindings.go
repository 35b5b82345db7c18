package others

import (
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/navarch/navarch/controlplane/registry"
)

func clusterrolebindings() *registry.Resource {
	return &registry.Resource{Group: "rbac.authorization.k8s.io", Version: "v1", Plural: "clusterrolebindings", Singular: "clusterrolebinding", Kind: "ClusterRoleBinding", NameIsPathSegment: true,
		New: func() runtime.Object { return &rbacv1.ClusterRoleBinding{} }, NewList: func() runtime.Object { return &rbacv1.ClusterRoleBindingList{} }}
}
