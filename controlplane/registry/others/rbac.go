package others

import (
	"strings"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/navarch/navarch/controlplane/registry"
)

const rbacGroup = "rbac.authorization.k8s.io"

func roles() *registry.Resource {
	return &registry.Resource{Group: rbacGroup, Version: "v1", Plural: "roles", Singular: "role", Kind: "Role", Namespaced: true, NameIsPathSegment: true,
		New: func() runtime.Object { return &rbacv1.Role{} }, NewList: func() runtime.Object { return &rbacv1.RoleList{} },
		Validate: func(obj, old runtime.Object) field.ErrorList { return validateRules(obj.(*rbacv1.Role).Rules, true) },
		Columns:  createdAtColumns,
		Row:      func(obj runtime.Object) []interface{} { return createdAtRow(obj.(*rbacv1.Role)) },
	}
}

func clusterroles() *registry.Resource {
	return &registry.Resource{Group: rbacGroup, Version: "v1", Plural: "clusterroles", Singular: "clusterrole", Kind: "ClusterRole", NameIsPathSegment: true,
		New: func() runtime.Object { return &rbacv1.ClusterRole{} }, NewList: func() runtime.Object { return &rbacv1.ClusterRoleList{} },
		Validate: func(obj, old runtime.Object) field.ErrorList {
			return validateRules(obj.(*rbacv1.ClusterRole).Rules, false)
		},
		Columns: createdAtColumns,
		Row:     func(obj runtime.Object) []interface{} { return createdAtRow(obj.(*rbacv1.ClusterRole)) },
	}
}

func rolebindings() *registry.Resource {
	return &registry.Resource{Group: rbacGroup, Version: "v1", Plural: "rolebindings", Singular: "rolebinding", Kind: "RoleBinding", Namespaced: true, NameIsPathSegment: true,
		New: func() runtime.Object { return &rbacv1.RoleBinding{} }, NewList: func() runtime.Object { return &rbacv1.RoleBindingList{} },
		Default: func(obj runtime.Object) { defaultSubjects(obj.(*rbacv1.RoleBinding).Subjects) },
		Validate: func(obj, old runtime.Object) field.ErrorList {
			b := obj.(*rbacv1.RoleBinding)
			var oldRef *rbacv1.RoleRef
			if o, ok := old.(*rbacv1.RoleBinding); ok {
				oldRef = &o.RoleRef
			}
			return validateBinding(b.RoleRef, oldRef, b.Subjects, true)
		},
		Columns: bindingColumns,
		Row: func(obj runtime.Object) []interface{} {
			b := obj.(*rbacv1.RoleBinding)
			return bindingRow(b.Name, b.RoleRef, b.Subjects, b.CreationTimestamp)
		},
	}
}

func clusterrolebindings() *registry.Resource {
	return &registry.Resource{Group: rbacGroup, Version: "v1", Plural: "clusterrolebindings", Singular: "clusterrolebinding", Kind: "ClusterRoleBinding", NameIsPathSegment: true,
		New: func() runtime.Object { return &rbacv1.ClusterRoleBinding{} }, NewList: func() runtime.Object { return &rbacv1.ClusterRoleBindingList{} },
		Default: func(obj runtime.Object) { defaultSubjects(obj.(*rbacv1.ClusterRoleBinding).Subjects) },
		Validate: func(obj, old runtime.Object) field.ErrorList {
			b := obj.(*rbacv1.ClusterRoleBinding)
			var oldRef *rbacv1.RoleRef
			if o, ok := old.(*rbacv1.ClusterRoleBinding); ok {
				oldRef = &o.RoleRef
			}
			return validateBinding(b.RoleRef, oldRef, b.Subjects, false)
		},
		Columns: bindingColumns,
		Row: func(obj runtime.Object) []interface{} {
			b := obj.(*rbacv1.ClusterRoleBinding)
			return bindingRow(b.Name, b.RoleRef, b.Subjects, b.CreationTimestamp)
		},
	}
}

func validateRules(rules []rbacv1.PolicyRule, namespaced bool) field.ErrorList {
	var errs field.ErrorList
	for i, r := range rules {
		p := field.NewPath("rules").Index(i)
		if len(r.Verbs) == 0 {
			errs = append(errs, field.Required(p.Child("verbs"), "verbs must contain at least one value"))
		}
		if len(r.NonResourceURLs) > 0 {
			if namespaced {
				errs = append(errs, field.Invalid(p.Child("nonResourceURLs"), r.NonResourceURLs, "namespaced rules cannot apply to non-resource URLs"))
			}
			if len(r.APIGroups) > 0 || len(r.Resources) > 0 || len(r.ResourceNames) > 0 {
				errs = append(errs, field.Invalid(p.Child("nonResourceURLs"), r.NonResourceURLs, "rules cannot apply to both regular resources and non-resource URLs"))
			}
			continue
		}
		if len(r.APIGroups) == 0 {
			errs = append(errs, field.Required(p.Child("apiGroups"), "resource rules must supply at least one api group"))
		}
		if len(r.Resources) == 0 {
			errs = append(errs, field.Required(p.Child("resources"), "resource rules must supply at least one resource"))
		}
	}
	return errs
}

func defaultSubjects(subjects []rbacv1.Subject) {
	for i := range subjects {
		s := &subjects[i]
		if s.APIGroup == "" && (s.Kind == rbacv1.UserKind || s.Kind == rbacv1.GroupKind) {
			s.APIGroup = rbacGroup
		}
	}
}

func validateBinding(ref rbacv1.RoleRef, oldRef *rbacv1.RoleRef, subjects []rbacv1.Subject, namespaced bool) field.ErrorList {
	var errs field.ErrorList
	p := field.NewPath("roleRef")
	if ref.APIGroup != rbacGroup {
		errs = append(errs, field.NotSupported(p.Child("apiGroup"), ref.APIGroup, []string{rbacGroup}))
	}
	kinds := []string{"ClusterRole"}
	if namespaced {
		kinds = []string{"Role", "ClusterRole"}
	}
	if ref.Kind != "ClusterRole" && !(namespaced && ref.Kind == "Role") {
		errs = append(errs, field.NotSupported(p.Child("kind"), ref.Kind, kinds))
	}
	if ref.Name == "" {
		errs = append(errs, field.Required(p.Child("name"), ""))
	}
	if oldRef != nil && *oldRef != ref {
		errs = append(errs, field.Invalid(p, ref, "cannot change roleRef"))
	}
	for i, s := range subjects {
		sp := field.NewPath("subjects").Index(i)
		if s.Name == "" {
			errs = append(errs, field.Required(sp.Child("name"), ""))
		}
		switch s.Kind {
		case rbacv1.ServiceAccountKind:
			if s.APIGroup != "" {
				errs = append(errs, field.NotSupported(sp.Child("apiGroup"), s.APIGroup, []string{""}))
			}
			if !namespaced && s.Namespace == "" {
				errs = append(errs, field.Required(sp.Child("namespace"), ""))
			}
		case rbacv1.UserKind, rbacv1.GroupKind:
			if s.APIGroup != rbacGroup {
				errs = append(errs, field.NotSupported(sp.Child("apiGroup"), s.APIGroup, []string{rbacGroup}))
			}
		default:
			errs = append(errs, field.NotSupported(sp.Child("kind"), s.Kind, []string{"ServiceAccount", "User", "Group"}))
		}
	}
	return errs
}

var bindingColumns = []metav1.TableColumnDefinition{registry.NameColumn,
	{Name: "Role", Type: "string", Description: "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace."},
	registry.AgeColumn,
	{Name: "Users", Type: "string", Priority: 1, Description: "Users in the binding"},
	{Name: "Groups", Type: "string", Priority: 1, Description: "Groups in the binding"},
	{Name: "ServiceAccounts", Type: "string", Priority: 1, Description: "ServiceAccounts in the binding"},
}

func bindingRow(name string, ref rbacv1.RoleRef, subjects []rbacv1.Subject, created metav1.Time) []interface{} {
	var users, groups, sas []string
	for _, s := range subjects {
		switch s.Kind {
		case rbacv1.UserKind:
			users = append(users, s.Name)
		case rbacv1.GroupKind:
			groups = append(groups, s.Name)
		case rbacv1.ServiceAccountKind:
			sas = append(sas, s.Namespace+"/"+s.Name)
		}
	}
	return []interface{}{name, ref.Kind + "/" + ref.Name, registry.Age(created), strings.Join(users, ", "), strings.Join(groups, ", "), strings.Join(sas, ", ")}
}
