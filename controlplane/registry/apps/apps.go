// Package apps serves the apps/v1 API resources: their defaults, validation,
// tables and selectable fields.
package apps

import "github.com/navarch/navarch/controlplane/registry"

// Resources returns the resources this package serves.
func Resources() []*registry.Resource {
	return []*registry.Resource{
		deployments(),
		replicasets(),
		statefulsets(),
		daemonsets(),
		controllerrevisions(),
	}
}
