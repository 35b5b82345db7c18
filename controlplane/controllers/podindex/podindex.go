// Package podindex indexes the shared pod informer by controller: the pods
// each owner controls, and the orphans of each namespace that an owner may
// adopt. Controllers that own pods (replica sets, daemon sets, stateful sets,
// jobs) look up their own pods here instead of listing every pod of the
// namespace on every sync, which made a sync cost O(pods in the namespace).
package podindex

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
)

const (
	byController = "navarch.io/controller-uid"
	orphans      = "navarch.io/orphans-by-namespace"
)

// Add installs the indexes on the pod informer; it may be called by every
// controller sharing the informer, before or after it starts.
func Add(inf cache.SharedIndexInformer) error {
	err := inf.AddIndexers(cache.Indexers{
		byController: func(obj interface{}) ([]string, error) {
			if p, ok := obj.(*corev1.Pod); ok {
				if ref := metav1.GetControllerOfNoCopy(p); ref != nil {
					return []string{string(ref.UID)}, nil
				}
			}
			return nil, nil
		},
		orphans: func(obj interface{}) ([]string, error) {
			if p, ok := obj.(*corev1.Pod); ok && metav1.GetControllerOfNoCopy(p) == nil {
				return []string{p.Namespace}, nil
			}
			return nil, nil
		},
	})
	if err != nil && strings.Contains(err.Error(), "indexer conflict") {
		return nil // another controller installed them first
	}
	return err
}

// Controlled returns the pods whose controller is the owner with uid.
func Controlled(inf cache.SharedIndexInformer, uid types.UID) []*corev1.Pod {
	return list(inf, byController, string(uid))
}

// Orphans returns the pods of namespace that no controller owns.
func Orphans(inf cache.SharedIndexInformer, namespace string) []*corev1.Pod {
	return list(inf, orphans, namespace)
}

func list(inf cache.SharedIndexInformer, index, key string) []*corev1.Pod {
	objs, err := inf.GetIndexer().ByIndex(index, key)
	if err != nil {
		return nil
	}
	out := make([]*corev1.Pod, 0, len(objs))
	for _, o := range objs {
		if p, ok := o.(*corev1.Pod); ok {
			out = append(out, p)
		}
	}
	return out
}
