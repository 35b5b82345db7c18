// Package others serves the smaller API groups: coordination.k8s.io,
// discovery.k8s.io, events.k8s.io, networking.k8s.io and rbac.authorization.k8s.io.
package others

import "github.com/navarch/navarch/controlplane/registry"

// Resources returns the resources this package serves.
func Resources() []*registry.Resource {
	return []*registry.Resource{
		leases(),
		endpointslices(),
		eventsV1(),
		ingresses(),
		ingressclasses(),
		networkpolicies(),
		roles(),
		rolebindings(),
		clusterroles(),
		clusterrolebindings(),
		priorityclasses(),
	}
}
