// Package core serves the core ("" group, v1) API resources: their defaults,
// validation, tables and selectable fields.
package core

import "github.com/navarch/navarch/controlplane/registry"

// Resources returns the resources this package serves.
func Resources() []*registry.Resource {
	return []*registry.Resource{
		namespaces(),
		pods(),
		services(),
		endpoints(),
		configmaps(),
		secrets(),
		serviceaccounts(),
		nodes(),
		events(),
		replicationcontrollers(),
		limitranges(),
		resourcequotas(),
		persistentvolumeclaims(),
	}
}
