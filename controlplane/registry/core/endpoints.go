package core

import (
	"fmt"
	"net"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/navarch/navarch/controlplane/registry"
)

func endpoints() *registry.Resource {
	return &registry.Resource{Version: "v1", Plural: "endpoints", Singular: "endpoints", Kind: "Endpoints", Namespaced: true, ShortNames: []string{"ep"},
		New: func() runtime.Object { return &corev1.Endpoints{} }, NewList: func() runtime.Object { return &corev1.EndpointsList{} },
		Default: func(obj runtime.Object) {
			ep := obj.(*corev1.Endpoints)
			for i := range ep.Subsets {
				for j := range ep.Subsets[i].Ports {
					if ep.Subsets[i].Ports[j].Protocol == "" {
						ep.Subsets[i].Ports[j].Protocol = corev1.ProtocolTCP
					}
				}
			}
		},
		Validate: func(obj, old runtime.Object) field.ErrorList {
			ep := obj.(*corev1.Endpoints)
			var errs field.ErrorList
			for i, ss := range ep.Subsets {
				p := field.NewPath("subsets").Index(i)
				for j, a := range append(append([]corev1.EndpointAddress{}, ss.Addresses...), ss.NotReadyAddresses...) {
					if net.ParseIP(a.IP) == nil {
						errs = append(errs, field.Invalid(p.Child("addresses").Index(j).Child("ip"), a.IP, "must be a valid IP address"))
					}
				}
				for j, port := range ss.Ports {
					if port.Port < 1 || port.Port > 65535 {
						errs = append(errs, field.Invalid(p.Child("ports").Index(j).Child("port"), port.Port, "must be between 1 and 65535, inclusive"))
					}
				}
			}
			return errs
		},
		Columns: []metav1.TableColumnDefinition{registry.NameColumn,
			{Name: "Endpoints", Type: "string", Description: "Endpoints is the list of endpoints comprising a service."}, registry.AgeColumn},
		Row: func(obj runtime.Object) []interface{} {
			ep := obj.(*corev1.Endpoints)
			return []interface{}{ep.Name, endpointsCell(ep), registry.Age(ep.CreationTimestamp)}
		},
	}
}

// endpointsCell lists up to three ip:port pairs, as kubectl does.
func endpointsCell(ep *corev1.Endpoints) string {
	var list []string
	total := 0
	for _, ss := range ep.Subsets {
		for _, a := range ss.Addresses {
			if len(ss.Ports) == 0 {
				total++
				if len(list) < 3 {
					list = append(list, a.IP)
				}
			}
			for _, port := range ss.Ports {
				total++
				if len(list) < 3 {
					list = append(list, net.JoinHostPort(a.IP, fmt.Sprint(port.Port)))
				}
			}
		}
	}
	if total == 0 {
		return "<none>"
	}
	s := strings.Join(list, ",")
	if total > 3 {
		s += fmt.Sprintf(" + %d more...", total-3)
	}
	return s
}
