package core

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/navarch/navarch/controlplane/registry"
)

func serviceaccounts() *registry.Resource {
	return &registry.Resource{Version: "v1", Plural: "serviceaccounts", Singular: "serviceaccount", Kind: "ServiceAccount", Namespaced: true, ShortNames: []string{"sa"},
		New: func() runtime.Object { return &corev1.ServiceAccount{} }, NewList: func() runtime.Object { return &corev1.ServiceAccountList{} },
		Columns: []metav1.TableColumnDefinition{registry.NameColumn,
			{Name: "Secrets", Type: "string", Description: "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use."},
			registry.AgeColumn},
		Row: func(obj runtime.Object) []interface{} {
			sa := obj.(*corev1.ServiceAccount)
			return []interface{}{sa.Name, int64(len(sa.Secrets)), registry.Age(sa.CreationTimestamp)}
		},
	}
}
