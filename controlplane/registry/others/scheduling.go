package others

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/navarch/navarch/controlplane/registry"
)

// Priority values upstream fixes: users may not go above
// HighestUserPriority, so that the system classes always outrank them.
const (
	HighestUserPriority   = 1000000000
	SystemPriorityPrefix  = "system-"
	SystemClusterCritical = "system-cluster-critical"
	SystemNodeCritical    = "system-node-critical"
)

// SystemPriorityClasses are the classes every cluster has, created at start;
// they are the only classes allowed the "system-" prefix.
func SystemPriorityClasses() []*schedulingv1.PriorityClass {
	return []*schedulingv1.PriorityClass{
		{ObjectMeta: metav1.ObjectMeta{Name: SystemNodeCritical}, Value: 2000001000,
			Description: "Used for system critical pods that must not be moved from their current node."},
		{ObjectMeta: metav1.ObjectMeta{Name: SystemClusterCritical}, Value: 2000000000,
			Description: "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary."},
	}
}

// knownSystemClass says why a "system-" class is not one of the built-in
// ones as they must be, or "" when it is.
func knownSystemClass(pc *schedulingv1.PriorityClass) string {
	for _, s := range SystemPriorityClasses() {
		if s.Name != pc.Name {
			continue
		}
		if s.Value != pc.Value {
			return fmt.Sprintf("value of %s PriorityClass must be %d", s.Name, s.Value)
		}
		if pc.GlobalDefault {
			return fmt.Sprintf("globalDefault of %s PriorityClass must be false", s.Name)
		}
		return ""
	}
	return fmt.Sprintf("%s is not a known system priority class", pc.Name)
}

func priorityclasses() *registry.Resource {
	return &registry.Resource{Group: "scheduling.k8s.io", Version: "v1", Plural: "priorityclasses", Singular: "priorityclass", Kind: "PriorityClass", ShortNames: []string{"pc"},
		New: func() runtime.Object { return &schedulingv1.PriorityClass{} }, NewList: func() runtime.Object { return &schedulingv1.PriorityClassList{} },
		Default: func(obj runtime.Object) {
			pc := obj.(*schedulingv1.PriorityClass)
			if pc.PreemptionPolicy == nil {
				p := corev1.PreemptLowerPriority
				pc.PreemptionPolicy = &p
			}
		},
		Validate: func(obj, old runtime.Object) field.ErrorList {
			pc := obj.(*schedulingv1.PriorityClass)
			var errs field.ErrorList
			if strings.HasPrefix(pc.Name, SystemPriorityPrefix) {
				if why := knownSystemClass(pc); why != "" {
					errs = append(errs, field.Forbidden(field.NewPath("metadata", "name"),
						"priority class names with '"+SystemPriorityPrefix+"' prefix are reserved for system use only. error: "+why))
				}
			} else if pc.Value > HighestUserPriority {
				errs = append(errs, field.Forbidden(field.NewPath("value"), fmt.Sprintf("maximum allowed value of a user defined priority is %d", HighestUserPriority)))
			}
			pp := field.NewPath("preemptionPolicy")
			switch {
			case pc.PreemptionPolicy == nil:
				errs = append(errs, field.Required(pp, ""))
			case *pc.PreemptionPolicy != corev1.PreemptLowerPriority && *pc.PreemptionPolicy != corev1.PreemptNever:
				errs = append(errs, field.NotSupported(pp, *pc.PreemptionPolicy, []string{string(corev1.PreemptLowerPriority), string(corev1.PreemptNever)}))
			}
			if o, ok := old.(*schedulingv1.PriorityClass); ok {
				// Pods carry the value they were admitted with; changing it
				// would make the class lie about them.
				if o.Value != pc.Value {
					errs = append(errs, field.Forbidden(field.NewPath("value"), "may not be changed in an update."))
				}
				if o.PreemptionPolicy != nil && pc.PreemptionPolicy != nil && *o.PreemptionPolicy != *pc.PreemptionPolicy {
					errs = append(errs, field.Invalid(pp, *pc.PreemptionPolicy, "field is immutable"))
				}
			}
			return errs
		},
		Columns: []metav1.TableColumnDefinition{registry.NameColumn,
			{Name: "Value", Type: "integer", Description: "The value of this priority class."},
			{Name: "Global-Default", Type: "boolean", Description: "Whether this priority class is the default for pods without a priorityClassName."},
			registry.AgeColumn,
			{Name: "PreemptionPolicy", Type: "string", Description: "Whether pods of this class may preempt lower-priority pods."}},
		Row: func(obj runtime.Object) []interface{} {
			pc := obj.(*schedulingv1.PriorityClass)
			policy := ""
			if pc.PreemptionPolicy != nil {
				policy = string(*pc.PreemptionPolicy)
			}
			return []interface{}{pc.Name, int64(pc.Value), pc.GlobalDefault, registry.Age(pc.CreationTimestamp), policy}
		},
	}
}
