package apiserver

import (
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/client-go/kubernetes/scheme"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/navarch/navarch/controlplane/registry"
	"github.com/navarch/navarch/controlplane/storage/cache"
)

// maxBodyBytes bounds request bodies as upstream does (3 MiB).
const maxBodyBytes = 3 << 20

// groupSegment is the storage key segment of a group ("core" for the legacy group).
func groupSegment(group string) string {
	if group == "" {
		return "core"
	}
	return group
}

// resourcePrefix is where every object of res is stored.
func resourcePrefix(res *registry.Resource) string {
	return "/registry/" + groupSegment(res.Group) + "/" + res.StorageName() + "/"
}

// keyPrefix is where the objects of res in namespace ns (all when empty) are.
func keyPrefix(res *registry.Resource, ns string) string {
	if res.Namespaced && ns != "" {
		return resourcePrefix(res) + ns + "/"
	}
	return resourcePrefix(res)
}

func objectKey(res *registry.Resource, ns, name string) string {
	if res.Namespaced {
		return resourcePrefix(res) + ns + "/" + name
	}
	return resourcePrefix(res) + name
}

// setTypeMeta stamps the resource's apiVersion and kind on obj.
func setTypeMeta(res *registry.Resource, obj runtime.Object) {
	obj.GetObjectKind().SetGroupVersionKind(res.GVK())
}

// encodeForStorage encodes obj as stored: with type meta, without resourceVersion
// (the store's revision is the version).
func encodeForStorage(res *registry.Resource, obj runtime.Object) ([]byte, error) {
	m, err := meta.Accessor(obj)
	if err != nil {
		return nil, err
	}
	rv := m.GetResourceVersion()
	m.SetResourceVersion("")
	setTypeMeta(res, obj)
	data, err := json.Marshal(obj)
	m.SetResourceVersion(rv)
	return data, err
}

// decoder makes the cache's view of a stored object of res.
func decoder(res *registry.Resource) cache.Decoder {
	return func(key string, value []byte, revision int64) (*cache.Entry, error) {
		obj := res.New()
		if err := sigsjson.UnmarshalCaseSensitivePreserveInts(value, obj); err != nil {
			return nil, fmt.Errorf("decode %s: %w", key, err)
		}
		return newEntry(res, key, obj, revision)
	}
}

// restamper re-encodes a cached object at another revision.
func restamper(res *registry.Resource) cache.Restamp {
	return func(e *cache.Entry, revision int64) (*cache.Entry, error) {
		return newEntry(res, e.Key, e.Object.DeepCopyObject(), revision)
	}
}

func newEntry(res *registry.Resource, key string, obj runtime.Object, revision int64) (*cache.Entry, error) {
	m, err := meta.Accessor(obj)
	if err != nil {
		return nil, err
	}
	m.SetResourceVersion(fmt.Sprint(revision))
	setTypeMeta(res, obj)
	data, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	return &cache.Entry{
		Key: key, Namespace: m.GetNamespace(), Name: m.GetName(), Revision: revision,
		Object: obj, Data: data, Labels: labels.Set(m.GetLabels()), Fields: selectableFields(res, obj, m.GetName(), m.GetNamespace()),
	}, nil
}

func selectableFields(res *registry.Resource, obj runtime.Object, name, ns string) fields.Set {
	set := fields.Set{"metadata.name": name}
	if res.Namespaced {
		set["metadata.namespace"] = ns
	}
	if res.Fields != nil {
		for k, v := range res.Fields(obj) {
			set[k] = v
		}
	}
	return set
}

// protobufCodec decodes the protobuf bodies client-go sends by default for
// built-in types.
var protobufCodec = protobuf.NewSerializer(scheme.Scheme, scheme.Scheme)

// readBody reads a request body as JSON: YAML bodies are converted, and so
// are protobuf bodies, decoded as an object made by into (nil where a
// protobuf body is not expected).
func readBody(r *http.Request, into func() runtime.Object) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes+1))
	if err != nil {
		return nil, badRequest("reading request body: %v", err)
	}
	if len(data) > maxBodyBytes {
		return nil, requestTooLarge()
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct == runtime.ContentTypeProtobuf && len(data) > 0 {
		if into == nil {
			return nil, unsupportedMediaType(ct)
		}
		obj, _, err := protobufCodec.Decode(data, nil, into())
		if err != nil {
			return nil, badRequest("invalid protobuf body: %v", err)
		}
		return json.Marshal(obj)
	}
	if strings.Contains(ct, "yaml") {
		if data, err = yaml.YAMLToJSON(data); err != nil {
			return nil, badRequest("invalid YAML: %v", err)
		}
	}
	return data, nil
}

// fieldValidation is how unknown and duplicate fields in a body are treated.
type fieldValidation string

const (
	validationIgnore fieldValidation = "Ignore"
	validationWarn   fieldValidation = "Warn"
	validationStrict fieldValidation = "Strict"
)

func parseFieldValidation(r *http.Request) (fieldValidation, error) {
	switch v := r.URL.Query().Get("fieldValidation"); v {
	case "":
		return validationWarn, nil
	case "Ignore", "Warn", "Strict":
		return fieldValidation(v), nil
	default:
		return "", badRequest("fieldValidation parameter unsupported: %q, valid values are Ignore, Warn, Strict", v)
	}
}

// decodeObject decodes a JSON body into a new object of res, checking
// apiVersion and kind, and applying the field validation mode. It returns
// warnings to send (Warn mode).
func decodeObject(res *registry.Resource, data []byte, mode fieldValidation) (runtime.Object, []string, error) {
	obj := res.New()
	strictErrs, err := sigsjson.UnmarshalStrict(data, obj, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	if err != nil {
		return nil, nil, badRequest("the object provided is unrecognized (must be of type %s): %v", res.Kind, err)
	}
	gvk := obj.GetObjectKind().GroupVersionKind()
	want := res.GVK()
	if gvk.Kind != "" && gvk.Kind != want.Kind {
		return nil, nil, badRequest("the object provided is unrecognized (must be of type %s): kind %q does not match", res.Kind, gvk.Kind)
	}
	if gv := gvk.GroupVersion().String(); gvk.Version != "" && gv != want.GroupVersion().String() {
		return nil, nil, badRequest("the API version in the data (%s) does not match the expected API version (%s)", gv, want.GroupVersion().String())
	}
	var warnings []string
	if len(strictErrs) > 0 {
		switch mode {
		case validationStrict:
			msgs := make([]string, len(strictErrs))
			for i, e := range strictErrs {
				msgs[i] = e.Error()
			}
			return nil, nil, badRequest("strict decoding error: %s", strings.Join(msgs, ", "))
		case validationWarn:
			for _, e := range strictErrs {
				warnings = append(warnings, e.Error())
			}
		}
	}
	setTypeMeta(res, obj)
	return obj, warnings, nil
}

// addWarnings sets Warning headers the way kubectl prints them.
func addWarnings(w http.ResponseWriter, warnings []string) {
	for _, msg := range warnings {
		w.Header().Add("Warning", fmt.Sprintf("299 - %q", msg))
	}
}
