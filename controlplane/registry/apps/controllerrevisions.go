package apps

import (
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/navarch/navarch/controlplane/registry"
)

func controllerrevisions() *registry.Resource {
	return &registry.Resource{Group: "apps", Version: "v1", Plural: "controllerrevisions", Singular: "controllerrevision", Kind: "ControllerRevision", Namespaced: true,
		New: func() runtime.Object { return &appsv1.ControllerRevision{} }, NewList: func() runtime.Object { return &appsv1.ControllerRevisionList{} },
		Validate: func(obj, old runtime.Object) field.ErrorList {
			cr := obj.(*appsv1.ControllerRevision)
			var errs field.ErrorList
			if cr.Revision < 0 {
				errs = append(errs, field.Invalid(field.NewPath("revision"), cr.Revision, "must be greater than or equal to 0"))
			}
			if o, ok := old.(*appsv1.ControllerRevision); ok && string(o.Data.Raw) != string(cr.Data.Raw) {
				errs = append(errs, field.Invalid(field.NewPath("data"), "", "field is immutable"))
			}
			return errs
		},
		Columns: []metav1.TableColumnDefinition{
			registry.NameColumn,
			{Name: "Controller", Type: "string", Description: "The controller that owns this revision."},
			{Name: "Revision", Type: "integer", Description: "Revision indicates the revision of the state represented by Data."},
			registry.AgeColumn,
		},
		Row: func(obj runtime.Object) []interface{} {
			cr := obj.(*appsv1.ControllerRevision)
			controller := "<none>"
			if ref := metav1.GetControllerOf(cr); ref != nil {
				// kubectl shows kind.group/name, e.g. statefulset.apps/web.
				controller = strings.ToLower(ref.Kind) + "/" + ref.Name
				if group, _, ok := strings.Cut(ref.APIVersion, "/"); ok {
					controller = strings.ToLower(ref.Kind) + "." + group + "/" + ref.Name
				}
			}
			return []interface{}{cr.Name, controller, cr.Revision, registry.Age(cr.CreationTimestamp)}
		},
	}
}
