package core

import (
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/navarch/navarch/controlplane/registry"
)

func secrets() *registry.Resource {
	return &registry.Resource{Version: "v1", Plural: "secrets", Singular: "secret", Kind: "Secret", Namespaced: true,
		New: func() runtime.Object { return &corev1.Secret{} }, NewList: func() runtime.Object { return &corev1.SecretList{} },
		Default: func(obj runtime.Object) {
			s := obj.(*corev1.Secret)
			if s.Type == "" {
				s.Type = corev1.SecretTypeOpaque
			}
			// stringData is write-only: it is merged into data and dropped.
			for k, v := range s.StringData {
				if s.Data == nil {
					s.Data = map[string][]byte{}
				}
				s.Data[k] = []byte(v)
			}
			s.StringData = nil
		},
		Validate: func(obj, old runtime.Object) field.ErrorList {
			s := obj.(*corev1.Secret)
			var errs field.ErrorList
			for k := range s.Data {
				errs = append(errs, configKeyErrors(field.NewPath("data").Key(k), k)...)
			}
			need := map[corev1.SecretType][]string{
				corev1.SecretTypeTLS:              {corev1.TLSCertKey, corev1.TLSPrivateKeyKey},
				corev1.SecretTypeDockerConfigJson: {corev1.DockerConfigJsonKey},
				corev1.SecretTypeDockercfg:        {corev1.DockerConfigKey},
			}
			for _, k := range need[s.Type] {
				if _, ok := s.Data[k]; !ok {
					errs = append(errs, field.Required(field.NewPath("data").Key(k), ""))
				}
			}
			if s.Type == corev1.SecretTypeServiceAccountToken && s.Annotations[corev1.ServiceAccountNameKey] == "" {
				errs = append(errs, field.Required(field.NewPath("metadata", "annotations").Key(corev1.ServiceAccountNameKey), ""))
			}
			if o, ok := old.(*corev1.Secret); ok {
				if o.Type != s.Type {
					errs = append(errs, field.Invalid(field.NewPath("type"), s.Type, "field is immutable"))
				}
				errs = append(errs, immutableData(o.Immutable, s.Immutable, !apiequality.Semantic.DeepEqual(s.Data, o.Data))...)
			}
			return errs
		},
		Columns: []metav1.TableColumnDefinition{registry.NameColumn,
			{Name: "Type", Type: "string", Description: "The type of the secret."},
			{Name: "Data", Type: "integer", Description: "Number of keys in the secret."}, registry.AgeColumn},
		Row: func(obj runtime.Object) []interface{} {
			s := obj.(*corev1.Secret)
			return []interface{}{s.Name, string(s.Type), int64(len(s.Data)), registry.Age(s.CreationTimestamp)}
		},
		Fields: func(obj runtime.Object) fields.Set { return fields.Set{"type": string(obj.(*corev1.Secret).Type)} },
	}
}
