package core

import (
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/navarch/navarch/controlplane/registry"
)

func nodes() *registry.Resource {
	return &registry.Resource{Version: "v1", Plural: "nodes", Singular: "node", Kind: "Node", ShortNames: []string{"no"}, Status: true,
		New: func() runtime.Object { return &corev1.Node{} }, NewList: func() runtime.Object { return &corev1.NodeList{} },
		Validate: func(obj, old runtime.Object) field.ErrorList {
			n := obj.(*corev1.Node)
			var errs field.ErrorList
			for i, t := range n.Spec.Taints {
				p := field.NewPath("spec", "taints").Index(i)
				if t.Key == "" {
					errs = append(errs, field.Required(p.Child("key"), ""))
				}
				if !podTaintEffects.Has(string(t.Effect)) {
					errs = append(errs, field.NotSupported(p.Child("effect"), t.Effect, sets.List(podTaintEffects)))
				}
			}
			if o, ok := old.(*corev1.Node); ok && o.Spec.PodCIDR != "" && n.Spec.PodCIDR != o.Spec.PodCIDR {
				errs = append(errs, field.Forbidden(field.NewPath("spec", "podCIDR"), "node updates may not change podCIDR except from \"\" to valid"))
			}
			return errs
		},
		Columns: []metav1.TableColumnDefinition{
			registry.NameColumn,
			{Name: "Status", Type: "string", Description: "The status of the node"},
			{Name: "Roles", Type: "string", Description: "The roles of the node"},
			registry.AgeColumn,
			{Name: "Version", Type: "string", Description: "Kubelet Version reported by the node."},
			{Name: "Internal-IP", Type: "string", Priority: 1, Description: "List of addresses reachable to the node."},
			{Name: "External-IP", Type: "string", Priority: 1, Description: "List of addresses reachable to the node."},
			{Name: "OS-Image", Type: "string", Priority: 1, Description: "OS Image reported by the node from /etc/os-release."},
			{Name: "Kernel-Version", Type: "string", Priority: 1, Description: "Kernel Version reported by the node."},
			{Name: "Container-Runtime", Type: "string", Priority: 1, Description: "Container Runtime Version reported by the node."},
		},
		Row: func(obj runtime.Object) []interface{} {
			n := obj.(*corev1.Node)
			return []interface{}{n.Name, nodeStatus(n), nodeRoles(n), registry.Age(n.CreationTimestamp), n.Status.NodeInfo.KubeletVersion,
				nodeAddress(n, corev1.NodeInternalIP), nodeAddress(n, corev1.NodeExternalIP), nodeOr(n.Status.NodeInfo.OSImage),
				nodeOr(n.Status.NodeInfo.KernelVersion), nodeOr(n.Status.NodeInfo.ContainerRuntimeVersion)}
		},
		Fields: func(obj runtime.Object) fields.Set {
			return fields.Set{"spec.unschedulable": strconv.FormatBool(obj.(*corev1.Node).Spec.Unschedulable)}
		},
	}
}

func nodeStatus(n *corev1.Node) string {
	status := "Unknown"
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			switch c.Status {
			case corev1.ConditionTrue:
				status = "Ready"
			default: // False or Unknown: kubectl shows both as NotReady
				status = "NotReady"
			}
		}
	}
	if n.Spec.Unschedulable {
		status += ",SchedulingDisabled"
	}
	return status
}

func nodeRoles(n *corev1.Node) string {
	roles := sets.New[string]()
	for k, v := range n.Labels {
		switch {
		case strings.HasPrefix(k, "node-role.kubernetes.io/"):
			if r := strings.TrimPrefix(k, "node-role.kubernetes.io/"); r != "" {
				roles.Insert(r)
			}
		case k == "kubernetes.io/role" && v != "":
			roles.Insert(v)
		}
	}
	if roles.Len() == 0 {
		return "<none>"
	}
	list := sets.List(roles)
	sort.Strings(list)
	return strings.Join(list, ",")
}

func nodeAddress(n *corev1.Node, t corev1.NodeAddressType) string {
	for _, a := range n.Status.Addresses {
		if a.Type == t {
			return a.Address
		}
	}
	return "<none>"
}

func nodeOr(s string) string {
	if s == "" {
		return "<unknown>"
	}
	return s
}
