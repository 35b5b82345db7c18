package core

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/navarch/navarch/controlplane/registry"
)

// nsNameLabel is the label upstream keeps equal to a namespace's name, so that
// namespace selectors can select by name.
const nsNameLabel = "kubernetes.io/metadata.name"

func namespaces() *registry.Resource {
	return &registry.Resource{Version: "v1", Plural: "namespaces", Singular: "namespace", Kind: "Namespace", ShortNames: []string{"ns"}, Status: true, NameIsDNSLabel: true,
		New: func() runtime.Object { return &corev1.Namespace{} }, NewList: func() runtime.Object { return &corev1.NamespaceList{} },
		Default: func(obj runtime.Object) {
			ns := obj.(*corev1.Namespace)
			if ns.Name == "" {
				return // generateName: labelled once named, on update
			}
			if ns.Labels == nil {
				ns.Labels = map[string]string{}
			}
			ns.Labels[nsNameLabel] = ns.Name
		},
		PrepareForCreate: func(obj runtime.Object) {
			ns := obj.(*corev1.Namespace)
			// The "kubernetes" finalizer holds a deleted namespace until the
			// namespace controller has emptied it.
			ns.Spec.Finalizers = []corev1.FinalizerName{corev1.FinalizerKubernetes}
			ns.Status = corev1.NamespaceStatus{Phase: corev1.NamespaceActive}
			if ns.Labels == nil {
				ns.Labels = map[string]string{}
			}
			ns.Labels[nsNameLabel] = ns.Name
		},
		PrepareForUpdate: func(obj, old runtime.Object) {
			// Finalizers change only through the finalize subresource.
			obj.(*corev1.Namespace).Spec.Finalizers = old.(*corev1.Namespace).Spec.Finalizers
		},
		Validate: func(obj, old runtime.Object) field.ErrorList {
			ns := obj.(*corev1.Namespace)
			var errs field.ErrorList
			for i, f := range ns.Spec.Finalizers {
				if f == "" {
					errs = append(errs, field.Required(field.NewPath("spec", "finalizers").Index(i), ""))
				}
			}
			return errs
		},
		Columns: []metav1.TableColumnDefinition{registry.NameColumn,
			{Name: "Status", Type: "string", Description: "The status of the namespace"},
			registry.AgeColumn},
		Row: func(obj runtime.Object) []interface{} {
			ns := obj.(*corev1.Namespace)
			return []interface{}{ns.Name, string(ns.Status.Phase), registry.Age(ns.CreationTimestamp)}
		},
		Fields: func(obj runtime.Object) fields.Set {
			return fields.Set{"status.phase": string(obj.(*corev1.Namespace).Status.Phase)}
		},
	}
}
