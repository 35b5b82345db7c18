package core

import (
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	"github.com/navarch/navarch/controlplane/registry"
)

func replicationcontrollers() *registry.Resource {
	return &registry.Resource{Version: "v1", Plural: "replicationcontrollers", Singular: "replicationcontroller", Kind: "ReplicationController", Namespaced: true, ShortNames: []string{"rc"}, Categories: []string{"all"}, Status: true,
		New: func() runtime.Object { return &corev1.ReplicationController{} }, NewList: func() runtime.Object { return &corev1.ReplicationControllerList{} },
		Default: func(obj runtime.Object) {
			rc := obj.(*corev1.ReplicationController)
			if rc.Spec.Replicas == nil {
				one := int32(1)
				rc.Spec.Replicas = &one
			}
			if t := rc.Spec.Template; t != nil {
				if len(rc.Spec.Selector) == 0 {
					rc.Spec.Selector = t.Labels
				}
				if len(rc.Labels) == 0 {
					rc.Labels = t.Labels
				}
				DefaultPodSpec(&t.Spec)
			}
		},
		Validate: func(obj, old runtime.Object) field.ErrorList {
			rc := obj.(*corev1.ReplicationController)
			spec := field.NewPath("spec")
			var errs field.ErrorList
			if rc.Spec.Replicas != nil && *rc.Spec.Replicas < 0 {
				errs = append(errs, field.Invalid(spec.Child("replicas"), *rc.Spec.Replicas, "must be greater than or equal to 0"))
			}
			if len(rc.Spec.Selector) == 0 {
				errs = append(errs, field.Required(spec.Child("selector"), ""))
			}
			if rc.Spec.Template == nil {
				return append(errs, field.Required(spec.Child("template"), ""))
			}
			if !labels.SelectorFromSet(rc.Spec.Selector).Matches(labels.Set(rc.Spec.Template.Labels)) {
				errs = append(errs, field.Invalid(spec.Child("template", "metadata", "labels"), rc.Spec.Template.Labels, "`selector` does not match template `labels`"))
			}
			errs = append(errs, ValidatePodTemplateSpec(rc.Spec.Template, spec.Child("template"))...)
			if p := rc.Spec.Template.Spec.RestartPolicy; p != corev1.RestartPolicyAlways {
				errs = append(errs, field.NotSupported(spec.Child("template", "spec", "restartPolicy"), p, []string{string(corev1.RestartPolicyAlways)}))
			}
			return errs
		},
		Columns: []metav1.TableColumnDefinition{
			registry.NameColumn,
			{Name: "Desired", Type: "integer", Description: "Replicas is the number of desired replicas."},
			{Name: "Current", Type: "integer", Description: "Replicas is the most recently observed number of replicas."},
			{Name: "Ready", Type: "integer", Description: "The number of ready replicas for this replication controller."},
			registry.AgeColumn,
			{Name: "Containers", Type: "string", Priority: 1, Description: "Names of each container in the template."},
			{Name: "Images", Type: "string", Priority: 1, Description: "Images referenced by each container in the template."},
			{Name: "Selector", Type: "string", Priority: 1, Description: "Selector is a label query over pods that should match the replica count."},
		},
		Row: func(obj runtime.Object) []interface{} {
			rc := obj.(*corev1.ReplicationController)
			var spec corev1.PodSpec
			if rc.Spec.Template != nil {
				spec = rc.Spec.Template.Spec
			}
			names, images := ContainersAndImages(&spec)
			return []interface{}{rc.Name, int64(ptr.Deref(rc.Spec.Replicas, 0)), int64(rc.Status.Replicas), int64(rc.Status.ReadyReplicas),
				registry.Age(rc.CreationTimestamp), names, images, labels.FormatLabels(rc.Spec.Selector)}
		},
		Fields: func(obj runtime.Object) fields.Set {
			return fields.Set{"status.replicas": strconv.Itoa(int(obj.(*corev1.ReplicationController).Status.Replicas))}
		},
		Scale: &registry.Scale{
			Get: func(obj runtime.Object) (int32, int32, string) {
				rc := obj.(*corev1.ReplicationController)
				return ptr.Deref(rc.Spec.Replicas, 0), rc.Status.Replicas, labels.SelectorFromSet(rc.Spec.Selector).String()
			},
			SetReplicas: func(obj runtime.Object, n int32) { obj.(*corev1.ReplicationController).Spec.Replicas = &n },
		},
	}
}

// ContainersAndImages renders the CONTAINERS and IMAGES columns of workloads.
func ContainersAndImages(spec *corev1.PodSpec) (string, string) {
	var names, images []string
	for _, c := range spec.Containers {
		names = append(names, c.Name)
		images = append(images, c.Image)
	}
	return strings.Join(names, ","), strings.Join(images, ",")
}
