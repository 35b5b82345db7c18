// Package batch serves the batch/v1, autoscaling/v1, autoscaling/v2 and policy/v1
// API resources: their defaults, validation, tables and selectable fields.
package batch

import "github.com/navarch/navarch/controlplane/registry"

// Resources returns the resources this package serves.
func Resources() []*registry.Resource {
	return []*registry.Resource{
		jobs(),
		cronjobs(),
		horizontalpodautoscalers(),
		horizontalpodautoscalersV1(),
		poddisruptionbudgets(),
	}
}
