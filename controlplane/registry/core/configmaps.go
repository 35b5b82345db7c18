package core

import (
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/navarch/navarch/controlplane/registry"
)

func configmaps() *registry.Resource {
	return &registry.Resource{Version: "v1", Plural: "configmaps", Singular: "configmap", Kind: "ConfigMap", Namespaced: true, ShortNames: []string{"cm"},
		New: func() runtime.Object { return &corev1.ConfigMap{} }, NewList: func() runtime.Object { return &corev1.ConfigMapList{} },
		Validate: func(obj, old runtime.Object) field.ErrorList {
			cm := obj.(*corev1.ConfigMap)
			var errs field.ErrorList
			for k := range cm.Data {
				errs = append(errs, configKeyErrors(field.NewPath("data").Key(k), k)...)
				if _, dup := cm.BinaryData[k]; dup {
					errs = append(errs, field.Invalid(field.NewPath("data").Key(k), k, "duplicate of key present in binaryData"))
				}
			}
			for k := range cm.BinaryData {
				errs = append(errs, configKeyErrors(field.NewPath("binaryData").Key(k), k)...)
			}
			if o, ok := old.(*corev1.ConfigMap); ok {
				errs = append(errs, immutableData(o.Immutable, cm.Immutable,
					!apiequality.Semantic.DeepEqual(cm.Data, o.Data) || !apiequality.Semantic.DeepEqual(cm.BinaryData, o.BinaryData))...)
			}
			return errs
		},
		Columns: []metav1.TableColumnDefinition{registry.NameColumn,
			{Name: "Data", Type: "integer", Description: "Number of keys in the ConfigMap."}, registry.AgeColumn},
		Row: func(obj runtime.Object) []interface{} {
			cm := obj.(*corev1.ConfigMap)
			return []interface{}{cm.Name, int64(len(cm.Data) + len(cm.BinaryData)), registry.Age(cm.CreationTimestamp)}
		},
	}
}

// configKeyErrors checks a ConfigMap or Secret key.
func configKeyErrors(p *field.Path, key string) field.ErrorList {
	var errs field.ErrorList
	for _, msg := range validation.IsConfigMapKey(key) {
		errs = append(errs, field.Invalid(p, key, msg))
	}
	return errs
}

// immutableData enforces `immutable: true` on ConfigMaps and Secrets.
func immutableData(old, now *bool, dataChanged bool) field.ErrorList {
	if old == nil || !*old {
		return nil
	}
	var errs field.ErrorList
	if now == nil || !*now {
		errs = append(errs, field.Forbidden(field.NewPath("immutable"), "field is immutable when `immutable` is set"))
	}
	if dataChanged {
		errs = append(errs, field.Forbidden(field.NewPath("data"), "field is immutable when `immutable` is set"))
	}
	return errs
}
