package apps

import (
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	"github.com/navarch/navarch/controlplane/registry"
	"github.com/navarch/navarch/controlplane/registry/core"
)

func daemonsets() *registry.Resource {
	return &registry.Resource{Group: "apps", Version: "v1", Plural: "daemonsets", Singular: "daemonset", Kind: "DaemonSet", Namespaced: true, ShortNames: []string{"ds"}, Categories: []string{"all"}, Status: true,
		New: func() runtime.Object { return &appsv1.DaemonSet{} }, NewList: func() runtime.Object { return &appsv1.DaemonSetList{} },
		Default: func(obj runtime.Object) {
			d := obj.(*appsv1.DaemonSet)
			if d.Spec.UpdateStrategy.Type == "" {
				d.Spec.UpdateStrategy.Type = appsv1.RollingUpdateDaemonSetStrategyType
			}
			if d.Spec.UpdateStrategy.Type == appsv1.RollingUpdateDaemonSetStrategyType {
				if d.Spec.UpdateStrategy.RollingUpdate == nil {
					d.Spec.UpdateStrategy.RollingUpdate = &appsv1.RollingUpdateDaemonSet{}
				}
				ru := d.Spec.UpdateStrategy.RollingUpdate
				if ru.MaxUnavailable == nil {
					v := intstr.FromInt32(1)
					ru.MaxUnavailable = &v
				}
				if ru.MaxSurge == nil {
					v := intstr.FromInt32(0)
					ru.MaxSurge = &v
				}
			}
			if d.Spec.RevisionHistoryLimit == nil {
				d.Spec.RevisionHistoryLimit = ptr.To[int32](10)
			}
			core.DefaultPodSpec(&d.Spec.Template.Spec)
		},
		// The template generation is server-owned, as upstream's: 1 on create,
		// one more whenever the pod template changes. The DaemonSet controller
		// puts it on pods as the pod-template-generation label.
		PrepareForCreate: func(obj runtime.Object) {
			metav1.SetMetaDataAnnotation(&obj.(*appsv1.DaemonSet).ObjectMeta, appsv1.DeprecatedTemplateGeneration, "1")
		},
		PrepareForUpdate: func(obj, old runtime.Object) {
			d, o := obj.(*appsv1.DaemonSet), old.(*appsv1.DaemonSet)
			gen, _ := strconv.ParseInt(o.Annotations[appsv1.DeprecatedTemplateGeneration], 10, 64)
			core.DefaultPodSpec(&d.Spec.Template.Spec) // compare defaulted templates
			if !apiequality.Semantic.DeepEqual(d.Spec.Template, o.Spec.Template) {
				gen++
			}
			metav1.SetMetaDataAnnotation(&d.ObjectMeta, appsv1.DeprecatedTemplateGeneration, strconv.FormatInt(max(gen, 1), 10))
		},
		Validate: func(obj, old runtime.Object) field.ErrorList {
			d := obj.(*appsv1.DaemonSet)
			var oldSel *metav1.LabelSelector
			if o, ok := old.(*appsv1.DaemonSet); ok {
				oldSel = o.Spec.Selector
			}
			return validateSelectorAndTemplate(d.Spec.Selector, oldSel, &d.Spec.Template, true)
		},
		Columns: []metav1.TableColumnDefinition{
			registry.NameColumn,
			{Name: "Desired", Type: "integer", Description: "The total number of nodes that should be running the daemon pod."},
			{Name: "Current", Type: "integer", Description: "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod."},
			{Name: "Ready", Type: "integer", Description: "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready."},
			{Name: "Up-to-date", Type: "integer", Description: "The total number of nodes that are running updated daemon pod"},
			{Name: "Available", Type: "integer", Description: "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available."},
			{Name: "Node Selector", Type: "string", Description: "NodeSelector is a selector which must be true for the pod to fit on a node."},
			registry.AgeColumn,
			{Name: "Containers", Type: "string", Priority: 1, Description: "Names of each container in the template."},
			{Name: "Images", Type: "string", Priority: 1, Description: "Images referenced by each container in the template."},
			{Name: "Selector", Type: "string", Priority: 1, Description: "A label query over pods that are managed by the daemon set."},
		},
		Row: func(obj runtime.Object) []interface{} {
			d := obj.(*appsv1.DaemonSet)
			names, images := core.ContainersAndImages(&d.Spec.Template.Spec)
			sel := labels.FormatLabels(d.Spec.Template.Spec.NodeSelector)
			return []interface{}{d.Name, int64(d.Status.DesiredNumberScheduled), int64(d.Status.CurrentNumberScheduled), int64(d.Status.NumberReady),
				int64(d.Status.UpdatedNumberScheduled), int64(d.Status.NumberAvailable), strings.TrimSpace(sel), registry.Age(d.CreationTimestamp),
				names, images, registry.SelectorColumn(d.Spec.Selector)}
		},
	}
}
