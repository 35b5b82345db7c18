package others

import (
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/navarch/navarch/controlplane/registry"
)

func roles() *registry.Resource {
	return &registry.Resource{Group: "rbac.authorization.k8s.io", Version: "v1", Plural: "roles", Singular: "role", Kind: "Role", Namespaced: true, NameIsPathSegment: true,
		New: func() runtime.Object { return &rbacv1.Role{} }, NewList: func() runtime.Object { return &rbacv1.RoleList{} }}
}
