package core

import (
	"fmt"
	"net"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/navarch/navarch/controlplane/registry"
)

var svcTypes = sets.New(string(corev1.ServiceTypeClusterIP), string(corev1.ServiceTypeNodePort), string(corev1.ServiceTypeLoadBalancer), string(corev1.ServiceTypeExternalName))

func services() *registry.Resource {
	return &registry.Resource{Version: "v1", Plural: "services", Singular: "service", Kind: "Service", Namespaced: true, ShortNames: []string{"svc"}, Categories: []string{"all"}, Status: true, NameIsDNSLabel: true,
		New: func() runtime.Object { return &corev1.Service{} }, NewList: func() runtime.Object { return &corev1.ServiceList{} },
		Default:          func(obj runtime.Object) { svcDefault(obj.(*corev1.Service)) },
		PrepareForUpdate: func(obj, old runtime.Object) { svcCarryOver(obj.(*corev1.Service), old.(*corev1.Service)) },
		Validate: func(obj, old runtime.Object) field.ErrorList {
			svc := obj.(*corev1.Service)
			errs := svcValidate(svc)
			if o, ok := old.(*corev1.Service); ok && o.Spec.ClusterIP != "" && svc.Spec.ClusterIP != o.Spec.ClusterIP &&
				svc.Spec.Type != corev1.ServiceTypeExternalName && o.Spec.Type != corev1.ServiceTypeExternalName {
				errs = append(errs, field.Invalid(field.NewPath("spec", "clusterIPs").Index(0), svc.Spec.ClusterIP, "may not change once set"))
			}
			return errs
		},
		Columns: []metav1.TableColumnDefinition{
			registry.NameColumn,
			{Name: "Type", Type: "string", Description: "The type of the service."},
			{Name: "Cluster-IP", Type: "string", Description: "The cluster IP of the service."},
			{Name: "External-IP", Type: "string", Description: "The external IPs of the service."},
			{Name: "Port(s)", Type: "string", Description: "The ports of the service."},
			registry.AgeColumn,
			{Name: "Selector", Type: "string", Priority: 1, Description: "The selector of the service."},
		},
		Row: func(obj runtime.Object) []interface{} {
			svc := obj.(*corev1.Service)
			clusterIP := svc.Spec.ClusterIP
			if clusterIP == "" {
				clusterIP = "<none>"
			}
			return []interface{}{svc.Name, string(svc.Spec.Type), clusterIP, svcExternalIP(svc), svcPorts(svc), registry.Age(svc.CreationTimestamp), svcSelector(svc.Spec.Selector)}
		},
		Fields: func(obj runtime.Object) fields.Set {
			svc := obj.(*corev1.Service)
			return fields.Set{"spec.clusterIP": svc.Spec.ClusterIP, "spec.type": string(svc.Spec.Type)}
		},
	}
}

func svcDefault(svc *corev1.Service) {
	s := &svc.Spec
	if s.Type == "" {
		s.Type = corev1.ServiceTypeClusterIP
	}
	if s.SessionAffinity == "" {
		s.SessionAffinity = corev1.ServiceAffinityNone
	}
	if s.SessionAffinity == corev1.ServiceAffinityClientIP && s.SessionAffinityConfig == nil {
		t := corev1.DefaultClientIPServiceAffinitySeconds
		s.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: &t}}
	}
	for i := range s.Ports {
		p := &s.Ports[i]
		if p.Protocol == "" {
			p.Protocol = corev1.ProtocolTCP
		}
		if p.TargetPort == intstr.FromInt32(0) || p.TargetPort == intstr.FromString("") {
			p.TargetPort = intstr.FromInt32(p.Port)
		}
	}
	if s.Type == corev1.ServiceTypeExternalName {
		return
	}
	if s.InternalTrafficPolicy == nil {
		p := corev1.ServiceInternalTrafficPolicyCluster
		s.InternalTrafficPolicy = &p
	}
	if (s.Type == corev1.ServiceTypeNodePort || s.Type == corev1.ServiceTypeLoadBalancer) && s.ExternalTrafficPolicy == "" {
		s.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyCluster
	}
	if s.Type == corev1.ServiceTypeLoadBalancer && s.AllocateLoadBalancerNodePorts == nil {
		v := true
		s.AllocateLoadBalancerNodePorts = &v
	}
	if len(s.ClusterIPs) == 0 && s.ClusterIP != "" {
		s.ClusterIPs = []string{s.ClusterIP}
	}
	if s.ClusterIP == "" && len(s.ClusterIPs) > 0 {
		s.ClusterIP = s.ClusterIPs[0]
	}
	if s.IPFamilyPolicy == nil {
		p := corev1.IPFamilyPolicySingleStack
		s.IPFamilyPolicy = &p
	}
	if len(s.IPFamilies) == 0 {
		s.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol}
	}
}

// svcCarryOver keeps the allocated cluster IP and node ports when an update
// leaves them out, as kubectl apply and replace do.
func svcCarryOver(svc, old *corev1.Service) {
	if svc.Spec.ClusterIP == "" && len(svc.Spec.ClusterIPs) == 0 && svc.Spec.Type != corev1.ServiceTypeExternalName && old.Spec.Type != corev1.ServiceTypeExternalName {
		svc.Spec.ClusterIP, svc.Spec.ClusterIPs = old.Spec.ClusterIP, old.Spec.ClusterIPs
	}
	if svc.Spec.Type != corev1.ServiceTypeNodePort && svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return
	}
	for i := range svc.Spec.Ports {
		p := &svc.Spec.Ports[i]
		if p.NodePort != 0 {
			continue
		}
		for _, op := range old.Spec.Ports {
			if op.Port == p.Port && op.Protocol == p.Protocol {
				p.NodePort = op.NodePort
			}
		}
	}
}

func svcValidate(svc *corev1.Service) field.ErrorList {
	var errs field.ErrorList
	spec := field.NewPath("spec")
	s := &svc.Spec
	if !svcTypes.Has(string(s.Type)) {
		errs = append(errs, field.NotSupported(spec.Child("type"), s.Type, sets.List(svcTypes)))
	}
	if s.Type == corev1.ServiceTypeExternalName {
		if s.ClusterIP != "" {
			errs = append(errs, field.Forbidden(spec.Child("clusterIP"), "may not be set for ExternalName services"))
		}
		if s.ExternalName == "" {
			errs = append(errs, field.Required(spec.Child("externalName"), ""))
		} else {
			for _, msg := range validation.IsDNS1123Subdomain(strings.TrimSuffix(s.ExternalName, ".")) {
				errs = append(errs, field.Invalid(spec.Child("externalName"), s.ExternalName, msg))
			}
		}
	} else {
		if len(s.Ports) == 0 && s.ClusterIP != corev1.ClusterIPNone {
			errs = append(errs, field.Required(spec.Child("ports"), ""))
		}
		if ip := s.ClusterIP; ip != "" && ip != corev1.ClusterIPNone && net.ParseIP(ip) == nil {
			errs = append(errs, field.Invalid(spec.Child("clusterIPs").Index(0), ip, "must be empty, 'None', or a valid IP address"))
		}
	}
	if s.ClusterIP == corev1.ClusterIPNone && (s.Type == corev1.ServiceTypeNodePort || s.Type == corev1.ServiceTypeLoadBalancer) {
		errs = append(errs, field.Invalid(spec.Child("clusterIPs").Index(0), s.ClusterIP, "may not be set to 'None' for "+string(s.Type)+" services"))
	}
	names := sets.New[string]()
	keys := sets.New[string]()
	for i, p := range s.Ports {
		pp := spec.Child("ports").Index(i)
		if len(s.Ports) > 1 && p.Name == "" {
			errs = append(errs, field.Required(pp.Child("name"), ""))
		}
		if p.Name != "" {
			for _, msg := range validation.IsDNS1123Label(p.Name) {
				errs = append(errs, field.Invalid(pp.Child("name"), p.Name, msg))
			}
			if names.Has(p.Name) {
				errs = append(errs, field.Duplicate(pp.Child("name"), p.Name))
			}
			names.Insert(p.Name)
		}
		if p.Port < 1 || p.Port > 65535 {
			errs = append(errs, field.Invalid(pp.Child("port"), p.Port, validation.InclusiveRangeError(1, 65535)))
		}
		if !podProtocols.Has(string(p.Protocol)) {
			errs = append(errs, field.NotSupported(pp.Child("protocol"), p.Protocol, sets.List(podProtocols)))
		}
		errs = append(errs, podValidatePort(p.TargetPort, pp.Child("targetPort"))...)
		if p.NodePort != 0 && s.Type != corev1.ServiceTypeNodePort && s.Type != corev1.ServiceTypeLoadBalancer {
			errs = append(errs, field.Forbidden(pp.Child("nodePort"), "may not be used when `type` is '"+string(s.Type)+"'"))
		}
		key := fmt.Sprintf("%d/%s", p.Port, p.Protocol)
		if keys.Has(key) {
			errs = append(errs, field.Duplicate(pp, key))
		}
		keys.Insert(key)
	}
	errs = append(errs, metav1validation.ValidateLabels(s.Selector, spec.Child("selector"))...)
	return errs
}

func svcExternalIP(svc *corev1.Service) string {
	switch svc.Spec.Type {
	case corev1.ServiceTypeExternalName:
		return svc.Spec.ExternalName
	case corev1.ServiceTypeLoadBalancer:
		var ips []string
		for _, in := range svc.Status.LoadBalancer.Ingress {
			if in.IP != "" {
				ips = append(ips, in.IP)
			} else if in.Hostname != "" {
				ips = append(ips, in.Hostname)
			}
		}
		ips = append(ips, svc.Spec.ExternalIPs...)
		if len(ips) == 0 {
			return "<pending>"
		}
		return strings.Join(ips, ",")
	}
	if len(svc.Spec.ExternalIPs) > 0 {
		return strings.Join(svc.Spec.ExternalIPs, ",")
	}
	return "<none>"
}

func svcPorts(svc *corev1.Service) string {
	if len(svc.Spec.Ports) == 0 {
		return "<none>"
	}
	var out []string
	for _, p := range svc.Spec.Ports {
		s := fmt.Sprintf("%d/%s", p.Port, p.Protocol)
		if p.NodePort > 0 {
			s = fmt.Sprintf("%d:%d/%s", p.Port, p.NodePort, p.Protocol)
		}
		out = append(out, s)
	}
	return strings.Join(out, ",")
}

func svcSelector(sel map[string]string) string {
	if len(sel) == 0 {
		return "<none>"
	}
	return fields.Set(sel).String()
}
