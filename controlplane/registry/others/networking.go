package others

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/navarch/navarch/controlplane/registry"
)

func ingresses() *registry.Resource {
	return &registry.Resource{Group: "networking.k8s.io", Version: "v1", Plural: "ingresses", Singular: "ingress", Kind: "Ingress", Namespaced: true, ShortNames: []string{"ing"}, Status: true,
		New: func() runtime.Object { return &networkingv1.Ingress{} }, NewList: func() runtime.Object { return &networkingv1.IngressList{} },
		Validate: func(obj, old runtime.Object) field.ErrorList {
			ing := obj.(*networkingv1.Ingress)
			var errs field.ErrorList
			if ing.Spec.DefaultBackend == nil && len(ing.Spec.Rules) == 0 {
				errs = append(errs, field.Invalid(spec.Child("rules"), ing.Spec.Rules, "either `defaultBackend` or `rules` must be specified"))
			}
			if b := ing.Spec.DefaultBackend; b != nil {
				errs = append(errs, validateBackend(b, spec.Child("defaultBackend"))...)
			}
			for i, r := range ing.Spec.Rules {
				rp := spec.Child("rules").Index(i)
				if r.HTTP == nil {
					continue
				}
				if len(r.HTTP.Paths) == 0 {
					errs = append(errs, field.Required(rp.Child("http", "paths"), ""))
				}
				for j, p := range r.HTTP.Paths {
					pp := rp.Child("http", "paths").Index(j)
					if p.PathType == nil {
						errs = append(errs, field.Required(pp.Child("pathType"), "pathType must be specified"))
					} else {
						switch *p.PathType {
						case networkingv1.PathTypeExact, networkingv1.PathTypePrefix, networkingv1.PathTypeImplementationSpecific:
						default:
							errs = append(errs, field.NotSupported(pp.Child("pathType"), *p.PathType, []string{"Exact", "ImplementationSpecific", "Prefix"}))
						}
					}
					if !strings.HasPrefix(p.Path, "/") && !(p.PathType != nil && *p.PathType == networkingv1.PathTypeImplementationSpecific && p.Path == "") {
						errs = append(errs, field.Invalid(pp.Child("path"), p.Path, "must be an absolute path"))
					}
					errs = append(errs, validateBackend(&p.Backend, pp.Child("backend"))...)
				}
			}
			return errs
		},
		Columns: []metav1.TableColumnDefinition{registry.NameColumn,
			{Name: "Class", Type: "string", Description: "The name of the IngressClass resource."},
			{Name: "Hosts", Type: "string", Description: "Hosts that incoming requests are matched against."},
			{Name: "Address", Type: "string", Description: "Address is a list containing ingress points for the load-balancer."},
			{Name: "Ports", Type: "string", Description: "Ports of TLS configurations that open."},
			registry.AgeColumn},
		Row: func(obj runtime.Object) []interface{} {
			ing := obj.(*networkingv1.Ingress)
			class := "<none>"
			if ing.Spec.IngressClassName != nil {
				class = *ing.Spec.IngressClassName
			}
			var hosts, addrs []string
			for _, r := range ing.Spec.Rules {
				if r.Host != "" {
					hosts = append(hosts, r.Host)
				}
			}
			if len(hosts) == 0 {
				hosts = []string{"*"}
			}
			for _, in := range ing.Status.LoadBalancer.Ingress {
				if in.IP != "" {
					addrs = append(addrs, in.IP)
				} else if in.Hostname != "" {
					addrs = append(addrs, in.Hostname)
				}
			}
			ports := "80"
			if len(ing.Spec.TLS) > 0 {
				ports = "80, 443"
			}
			return []interface{}{ing.Name, class, joinOrNone(hosts, 4), strings.Join(addrs, ","), ports, registry.Age(ing.CreationTimestamp)}
		},
	}
}

func validateBackend(b *networkingv1.IngressBackend, p *field.Path) field.ErrorList {
	switch {
	case b.Service != nil && b.Resource != nil:
		return field.ErrorList{field.Invalid(p, b, "cannot set both resource and service backends")}
	case b.Service != nil:
		var errs field.ErrorList
		if b.Service.Name == "" {
			errs = append(errs, field.Required(p.Child("service", "name"), ""))
		}
		if (b.Service.Port.Name == "") == (b.Service.Port.Number == 0) {
			errs = append(errs, field.Invalid(p.Child("service", "port"), b.Service.Port, "port name or number is required"))
		}
		return errs
	case b.Resource == nil:
		return field.ErrorList{field.Invalid(p, b, "resource or service backend is required")}
	}
	return nil
}

func ingressclasses() *registry.Resource {
	return &registry.Resource{Group: "networking.k8s.io", Version: "v1", Plural: "ingressclasses", Singular: "ingressclass", Kind: "IngressClass",
		New: func() runtime.Object { return &networkingv1.IngressClass{} }, NewList: func() runtime.Object { return &networkingv1.IngressClassList{} },
		Validate: func(obj, old runtime.Object) field.ErrorList {
			c := obj.(*networkingv1.IngressClass)
			var errs field.ErrorList
			if c.Spec.Controller == "" {
				errs = append(errs, field.Required(spec.Child("controller"), ""))
			}
			if o, ok := old.(*networkingv1.IngressClass); ok && o.Spec.Controller != c.Spec.Controller {
				errs = append(errs, field.Invalid(spec.Child("controller"), c.Spec.Controller, "field is immutable"))
			}
			return errs
		},
		Columns: []metav1.TableColumnDefinition{registry.NameColumn,
			{Name: "Controller", Type: "string", Description: "Controller that is responsible for handling this class."},
			{Name: "Parameters", Type: "string", Description: "A reference to a resource with additional parameters."},
			registry.AgeColumn},
		Row: func(obj runtime.Object) []interface{} {
			c := obj.(*networkingv1.IngressClass)
			params := "<none>"
			if p := c.Spec.Parameters; p != nil {
				params = p.Kind + "/" + p.Name
				if p.APIGroup != nil && *p.APIGroup != "" {
					params = fmt.Sprintf("%s.%s/%s", p.Kind, *p.APIGroup, p.Name)
				}
			}
			return []interface{}{c.Name, c.Spec.Controller, params, registry.Age(c.CreationTimestamp)}
		},
	}
}

func networkpolicies() *registry.Resource {
	return &registry.Resource{Group: "networking.k8s.io", Version: "v1", Plural: "networkpolicies", Singular: "networkpolicy", Kind: "NetworkPolicy", Namespaced: true, ShortNames: []string{"netpol"},
		New: func() runtime.Object { return &networkingv1.NetworkPolicy{} }, NewList: func() runtime.Object { return &networkingv1.NetworkPolicyList{} },
		Default: func(obj runtime.Object) {
			np := obj.(*networkingv1.NetworkPolicy)
			tcp := corev1.ProtocolTCP
			for i := range np.Spec.Ingress {
				for j := range np.Spec.Ingress[i].Ports {
					if np.Spec.Ingress[i].Ports[j].Protocol == nil {
						np.Spec.Ingress[i].Ports[j].Protocol = &tcp
					}
				}
			}
			for i := range np.Spec.Egress {
				for j := range np.Spec.Egress[i].Ports {
					if np.Spec.Egress[i].Ports[j].Protocol == nil {
						np.Spec.Egress[i].Ports[j].Protocol = &tcp
					}
				}
			}
			if len(np.Spec.PolicyTypes) == 0 {
				np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
				if len(np.Spec.Egress) > 0 {
					np.Spec.PolicyTypes = append(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress)
				}
			}
		},
		Validate: func(obj, old runtime.Object) field.ErrorList {
			np := obj.(*networkingv1.NetworkPolicy)
			var errs field.ErrorList
			for i, t := range np.Spec.PolicyTypes {
				if t != networkingv1.PolicyTypeIngress && t != networkingv1.PolicyTypeEgress {
					errs = append(errs, field.NotSupported(spec.Child("policyTypes").Index(i), t, []string{"Ingress", "Egress"}))
				}
			}
			return errs
		},
		Columns: []metav1.TableColumnDefinition{registry.NameColumn,
			{Name: "Pod-Selector", Type: "string", Description: "Selects the pods to which this NetworkPolicy object applies."},
			registry.AgeColumn},
		Row: func(obj runtime.Object) []interface{} {
			np := obj.(*networkingv1.NetworkPolicy)
			sel, _ := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
			s := sel.String()
			if s == "" {
				s = "<none>"
			}
			return []interface{}{np.Name, s, registry.Age(np.CreationTimestamp)}
		},
	}
}
