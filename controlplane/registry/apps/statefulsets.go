package apps

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	"github.com/navarch/navarch/controlplane/registry"
	"github.com/navarch/navarch/controlplane/registry/core"
)

func statefulsets() *registry.Resource {
	return &registry.Resource{Group: "apps", Version: "v1", Plural: "statefulsets", Singular: "statefulset", Kind: "StatefulSet", Namespaced: true, ShortNames: []string{"sts"}, Categories: []string{"all"}, Status: true,
		New: func() runtime.Object { return &appsv1.StatefulSet{} }, NewList: func() runtime.Object { return &appsv1.StatefulSetList{} },
		Default: func(obj runtime.Object) {
			s := obj.(*appsv1.StatefulSet)
			if s.Spec.Replicas == nil {
				s.Spec.Replicas = ptr.To[int32](1)
			}
			if s.Spec.PodManagementPolicy == "" {
				s.Spec.PodManagementPolicy = appsv1.OrderedReadyPodManagement
			}
			if s.Spec.UpdateStrategy.Type == "" {
				s.Spec.UpdateStrategy.Type = appsv1.RollingUpdateStatefulSetStrategyType
			}
			if s.Spec.UpdateStrategy.Type == appsv1.RollingUpdateStatefulSetStrategyType {
				if s.Spec.UpdateStrategy.RollingUpdate == nil {
					s.Spec.UpdateStrategy.RollingUpdate = &appsv1.RollingUpdateStatefulSetStrategy{}
				}
				if s.Spec.UpdateStrategy.RollingUpdate.Partition == nil {
					s.Spec.UpdateStrategy.RollingUpdate.Partition = ptr.To[int32](0)
				}
			}
			if s.Spec.RevisionHistoryLimit == nil {
				s.Spec.RevisionHistoryLimit = ptr.To[int32](10)
			}
			if s.Spec.PersistentVolumeClaimRetentionPolicy == nil {
				s.Spec.PersistentVolumeClaimRetentionPolicy = &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{
					WhenDeleted: appsv1.RetainPersistentVolumeClaimRetentionPolicyType, WhenScaled: appsv1.RetainPersistentVolumeClaimRetentionPolicyType}
			}
			for i := range s.Spec.VolumeClaimTemplates {
				c := &s.Spec.VolumeClaimTemplates[i]
				if c.Spec.VolumeMode == nil {
					m := corev1.PersistentVolumeFilesystem
					c.Spec.VolumeMode = &m
				}
			}
			core.DefaultPodSpec(&s.Spec.Template.Spec)
		},
		Validate: func(obj, old runtime.Object) field.ErrorList {
			s := obj.(*appsv1.StatefulSet)
			var oldSel *metav1.LabelSelector
			if o, ok := old.(*appsv1.StatefulSet); ok {
				oldSel = o.Spec.Selector
			}
			errs := validateReplicas(s.Spec.Replicas, spec.Child("replicas"))
			// Containers mount the claims of volumeClaimTemplates by name, so
			// the template is checked as its pods will be: with those volumes
			// (replacing a template volume of the same name, as the controller does).
			tmpl := s.Spec.Template.DeepCopy()
			for _, c := range s.Spec.VolumeClaimTemplates {
				claim := corev1.Volume{Name: c.Name, VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: c.Name}}}
				replaced := false
				for i := range tmpl.Spec.Volumes {
					if tmpl.Spec.Volumes[i].Name == c.Name {
						tmpl.Spec.Volumes[i], replaced = claim, true
					}
				}
				if !replaced {
					tmpl.Spec.Volumes = append(tmpl.Spec.Volumes, claim)
				}
			}
			errs = append(errs, validateSelectorAndTemplate(s.Spec.Selector, oldSel, tmpl, true)...)
			switch s.Spec.PodManagementPolicy {
			case appsv1.OrderedReadyPodManagement, appsv1.ParallelPodManagement:
			default:
				errs = append(errs, field.NotSupported(spec.Child("podManagementPolicy"), s.Spec.PodManagementPolicy, []string{"OrderedReady", "Parallel"}))
			}
			return errs
		},
		Columns: []metav1.TableColumnDefinition{
			registry.NameColumn,
			{Name: "Ready", Type: "string", Description: "Number of the pod with ready state"},
			registry.AgeColumn,
			{Name: "Containers", Type: "string", Priority: 1, Description: "Names of each container in the template."},
			{Name: "Images", Type: "string", Priority: 1, Description: "Images referenced by each container in the template."},
		},
		Row: func(obj runtime.Object) []interface{} {
			s := obj.(*appsv1.StatefulSet)
			names, images := core.ContainersAndImages(&s.Spec.Template.Spec)
			return []interface{}{s.Name, fmt.Sprintf("%d/%d", s.Status.ReadyReplicas, ptr.Deref(s.Spec.Replicas, 0)), registry.Age(s.CreationTimestamp), names, images}
		},
		Scale: &registry.Scale{
			Get: func(obj runtime.Object) (int32, int32, string) {
				s := obj.(*appsv1.StatefulSet)
				return ptr.Deref(s.Spec.Replicas, 0), s.Status.Replicas, registry.SelectorColumn(s.Spec.Selector)
			},
			SetReplicas: func(obj runtime.Object, n int32) { obj.(*appsv1.StatefulSet).Spec.Replicas = &n },
		},
	}
}
