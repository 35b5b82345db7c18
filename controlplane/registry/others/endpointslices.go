package others

import (
	"fmt"
	"net"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/navarch/navarch/controlplane/registry"
)

func endpointslices() *registry.Resource {
	return &registry.Resource{Group: "discovery.k8s.io", Version: "v1", Plural: "endpointslices", Singular: "endpointslice", Kind: "EndpointSlice", Namespaced: true,
		New: func() runtime.Object { return &discoveryv1.EndpointSlice{} }, NewList: func() runtime.Object { return &discoveryv1.EndpointSliceList{} },
		Default: func(obj runtime.Object) {
			s := obj.(*discoveryv1.EndpointSlice)
			for i := range s.Ports {
				if s.Ports[i].Protocol == nil {
					p := "TCP"
					s.Ports[i].Protocol = (*corev1.Protocol)(&p)
				}
			}
		},
		Validate: func(obj, old runtime.Object) field.ErrorList {
			s := obj.(*discoveryv1.EndpointSlice)
			var errs field.ErrorList
			switch s.AddressType {
			case discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6, discoveryv1.AddressTypeFQDN:
			case "":
				errs = append(errs, field.Required(field.NewPath("addressType"), ""))
			default:
				errs = append(errs, field.NotSupported(field.NewPath("addressType"), s.AddressType, []string{"IPv4", "IPv6", "FQDN"}))
			}
			for i, ep := range s.Endpoints {
				p := field.NewPath("endpoints").Index(i).Child("addresses")
				if len(ep.Addresses) == 0 {
					errs = append(errs, field.Required(p, "must contain at least 1 address"))
				}
				for j, a := range ep.Addresses {
					ip := net.ParseIP(a)
					switch {
					case s.AddressType == discoveryv1.AddressTypeIPv4 && (ip == nil || ip.To4() == nil):
						errs = append(errs, field.Invalid(p.Index(j), a, "must be a valid IPv4 address"))
					case s.AddressType == discoveryv1.AddressTypeIPv6 && (ip == nil || ip.To4() != nil):
						errs = append(errs, field.Invalid(p.Index(j), a, "must be a valid IPv6 address"))
					case s.AddressType == discoveryv1.AddressTypeFQDN:
						for _, msg := range validation.IsFullyQualifiedDomainName(p.Index(j), a) {
							errs = append(errs, msg)
						}
					}
				}
			}
			for i, port := range s.Ports {
				if port.Port != nil && (*port.Port < 0 || *port.Port > 65535) {
					errs = append(errs, field.Invalid(field.NewPath("ports").Index(i).Child("port"), *port.Port, "must be between 0 and 65535, inclusive"))
				}
			}
			return errs
		},
		Columns: []metav1.TableColumnDefinition{registry.NameColumn,
			{Name: "AddressType", Type: "string", Description: "Type of address carried by this EndpointSlice."},
			{Name: "Ports", Type: "string", Description: "Ports exposed by the endpoints."},
			{Name: "Endpoints", Type: "string", Description: "Addresses of the endpoints."},
			registry.AgeColumn},
		Row: func(obj runtime.Object) []interface{} {
			s := obj.(*discoveryv1.EndpointSlice)
			var ports, addrs []string
			for _, p := range s.Ports {
				if p.Port != nil {
					ports = append(ports, fmt.Sprint(*p.Port))
				}
			}
			for _, e := range s.Endpoints {
				addrs = append(addrs, e.Addresses...)
			}
			return []interface{}{s.Name, string(s.AddressType), joinOrNone(ports, 3), joinOrNone(addrs, 3), registry.Age(s.CreationTimestamp)}
		},
	}
}
