package others

import (
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/navarch/navarch/controlplane/registry"
)

func eventsV1() *registry.Resource {
	return &registry.Resource{Group: "events.k8s.io", Version: "v1", Plural: "events", Singular: "event", Kind: "Event", Namespaced: true, ShortNames: []string{"ev"},
		New: func() runtime.Object { return &eventsv1.Event{} }, NewList: func() runtime.Object { return &eventsv1.EventList{} },
		StoredAs: &registry.StoredAs{Group: "", Version: "v1", Plural: "events", ToStorage: EventToCore, FromStorage: EventFromCore}}
}
