// Package bootstrap creates the objects every cluster starts with: the system
// namespaces, the built-in priority classes and the kubernetes Service that
// points at the API server.
package bootstrap

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/navarch/navarch/controlplane/apiserver"
	"github.com/navarch/navarch/controlplane/registry/others"
)

// Namespaces are created on every start (those that exist are left alone).
var Namespaces = []string{"default", "kube-system", "kube-public", "kube-node-lease"}

// Config says where the API server is reachable for the kubernetes Service.
type Config struct {
	ClusterIP  string // the first address of the service range
	EndpointIP string // the API server's address
	SecurePort int32
}

// Run creates what is missing. It is idempotent.
func Run(ctx context.Context, s *apiserver.Server, cfg Config) error {
	create := func(group, version, plural, ns string, obj runtime.Object) error {
		res := s.Resource(group, version, plural)
		if _, err := s.Create(ctx, res, ns, obj, false); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create %s %s/%s: %w", plural, ns, obj.(metav1.Object).GetName(), err)
		}
		return nil
	}
	for _, name := range Namespaces {
		if err := create("", "v1", "namespaces", "", &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
			return err
		}
	}
	// The built-in priority classes, as upstream's API server makes them.
	for _, pc := range others.SystemPriorityClasses() {
		if err := create("scheduling.k8s.io", "v1", "priorityclasses", "", pc); err != nil {
			return err
		}
	}
	labels := map[string]string{"component": "apiserver", "provider": "kubernetes"}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: "default", Labels: labels},
		Spec: corev1.ServiceSpec{
			ClusterIP: cfg.ClusterIP,
			Ports: []corev1.ServicePort{{Name: "https", Port: 443, Protocol: corev1.ProtocolTCP,
				TargetPort: intstr.FromInt32(cfg.SecurePort)}},
			SessionAffinity: corev1.ServiceAffinityNone,
			Type:            corev1.ServiceTypeClusterIP,
		},
	}
	if err := create("", "v1", "services", "default", svc); err != nil {
		return err
	}
	ep := &corev1.Endpoints{
		ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: "default", Labels: map[string]string{"endpointslice.kubernetes.io/skip-mirror": "true"}},
		Subsets: []corev1.EndpointSubset{{
			Addresses: []corev1.EndpointAddress{{IP: cfg.EndpointIP}},
			Ports:     []corev1.EndpointPort{{Name: "https", Port: cfg.SecurePort, Protocol: corev1.ProtocolTCP}},
		}},
	}
	if err := create("", "v1", "endpoints", "default", ep); err != nil {
		return err
	}
	ready := true
	name, proto, port := "https", corev1.ProtocolTCP, cfg.SecurePort
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: "default",
			Labels: map[string]string{discoveryv1.LabelServiceName: "kubernetes", discoveryv1.LabelManagedBy: "navarch-apiserver"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{cfg.EndpointIP}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Protocol: &proto, Port: &port}},
	}
	return create("discovery.k8s.io", "v1", "endpointslices", "default", slice)
}
