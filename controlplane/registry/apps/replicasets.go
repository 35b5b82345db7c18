package apps

import (
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	"github.com/navarch/navarch/controlplane/registry"
	"github.com/navarch/navarch/controlplane/registry/core"
)

func replicasets() *registry.Resource {
	return &registry.Resource{Group: "apps", Version: "v1", Plural: "replicasets", Singular: "replicaset", Kind: "ReplicaSet", Namespaced: true, ShortNames: []string{"rs"}, Categories: []string{"all"}, Status: true,
		New: func() runtime.Object { return &appsv1.ReplicaSet{} }, NewList: func() runtime.Object { return &appsv1.ReplicaSetList{} },
		Default: func(obj runtime.Object) {
			rs := obj.(*appsv1.ReplicaSet)
			if rs.Spec.Replicas == nil {
				rs.Spec.Replicas = ptr.To[int32](1)
			}
			core.DefaultPodSpec(&rs.Spec.Template.Spec)
		},
		Validate: func(obj, old runtime.Object) field.ErrorList {
			rs := obj.(*appsv1.ReplicaSet)
			var oldSel *metav1.LabelSelector
			if o, ok := old.(*appsv1.ReplicaSet); ok {
				oldSel = o.Spec.Selector
			}
			errs := validateReplicas(rs.Spec.Replicas, spec.Child("replicas"))
			return append(errs, validateSelectorAndTemplate(rs.Spec.Selector, oldSel, &rs.Spec.Template, true)...)
		},
		Columns: []metav1.TableColumnDefinition{
			registry.NameColumn,
			{Name: "Desired", Type: "integer", Description: "Replicas is the number of desired replicas."},
			{Name: "Current", Type: "integer", Description: "Replicas is the most recently observed number of replicas."},
			{Name: "Ready", Type: "integer", Description: "The number of ready replicas for this replica set."},
			registry.AgeColumn,
			{Name: "Containers", Type: "string", Priority: 1, Description: "Names of each container in the template."},
			{Name: "Images", Type: "string", Priority: 1, Description: "Images referenced by each container in the template."},
			{Name: "Selector", Type: "string", Priority: 1, Description: "Selector is a label query over pods that should match the replica count."},
		},
		Row: func(obj runtime.Object) []interface{} {
			rs := obj.(*appsv1.ReplicaSet)
			names, images := core.ContainersAndImages(&rs.Spec.Template.Spec)
			return []interface{}{rs.Name, int64(ptr.Deref(rs.Spec.Replicas, 0)), int64(rs.Status.Replicas), int64(rs.Status.ReadyReplicas),
				registry.Age(rs.CreationTimestamp), names, images, registry.SelectorColumn(rs.Spec.Selector)}
		},
		Scale: &registry.Scale{
			Get: func(obj runtime.Object) (int32, int32, string) {
				rs := obj.(*appsv1.ReplicaSet)
				return ptr.Deref(rs.Spec.Replicas, 0), rs.Status.Replicas, registry.SelectorColumn(rs.Spec.Selector)
			},
			SetReplicas: func(obj runtime.Object, n int32) { obj.(*appsv1.ReplicaSet).Spec.Replicas = &n },
		},
	}
}
