package kubelet

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// serviceEnv is the environment upstream gives every container about the
// Services it may reach: the kubernetes Service of the default namespace
// always (in-cluster clients find the API server so), and with
// enableServiceLinks (the default) every Service of the pod's namespace,
// each as NAME_SERVICE_HOST/_PORT plus docker-link style NAME_PORT_* vars.
func (k *Kubelet) serviceEnv(pod *corev1.Pod) []nameValue {
	if k.services == nil {
		return nil
	}
	all, err := k.services.List(labels.Everything())
	if err != nil {
		return nil
	}
	links := pod.Spec.EnableServiceLinks == nil || *pod.Spec.EnableServiceLinks
	chosen := map[string]*corev1.Service{}
	for _, s := range all {
		if s.Spec.ClusterIP == "" || s.Spec.ClusterIP == corev1.ClusterIPNone {
			continue
		}
		switch {
		case s.Namespace == pod.Namespace && links:
			chosen[s.Name] = s
		case s.Namespace == "default" && s.Name == "kubernetes":
			if _, taken := chosen[s.Name]; !taken {
				chosen[s.Name] = s
			}
		}
	}
	names := make([]string, 0, len(chosen))
	for n := range chosen {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []nameValue
	for _, n := range names {
		s := chosen[n]
		prefix := strings.ToUpper(strings.ReplaceAll(s.Name, "-", "_"))
		ip := s.Spec.ClusterIP
		out = append(out, nameValue{prefix + "_SERVICE_HOST", ip})
		if len(s.Spec.Ports) == 0 {
			continue
		}
		out = append(out, nameValue{prefix + "_SERVICE_PORT", strconv.Itoa(int(s.Spec.Ports[0].Port))})
		for _, p := range s.Spec.Ports {
			if p.Name != "" {
				out = append(out, nameValue{prefix + "_SERVICE_PORT_" + strings.ToUpper(strings.ReplaceAll(p.Name, "-", "_")), strconv.Itoa(int(p.Port))})
			}
		}
		first := s.Spec.Ports[0]
		out = append(out, nameValue{prefix + "_PORT", fmt.Sprintf("%s://%s:%d", strings.ToLower(string(first.Protocol)), ip, first.Port)})
		for _, p := range s.Spec.Ports {
			proto := strings.ToLower(string(p.Protocol))
			base := fmt.Sprintf("%s_PORT_%d_%s", prefix, p.Port, strings.ToUpper(proto))
			out = append(out,
				nameValue{base, fmt.Sprintf("%s://%s:%d", proto, ip, p.Port)},
				nameValue{base + "_PROTO", proto},
				nameValue{base + "_PORT", strconv.Itoa(int(p.Port))},
				nameValue{base + "_ADDR", ip})
		}
	}
	return out
}

type nameValue struct{ name, value string }
