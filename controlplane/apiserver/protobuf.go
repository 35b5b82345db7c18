package apiserver

import (
	"bytes"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/apimachinery/pkg/runtime/serializer/streaming"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/navarch/navarch/controlplane/registry"
	"github.com/navarch/navarch/controlplane/storage/cache"
)

// This file answers clients that ask for Kubernetes' protobuf encoding, as
// client-go's typed clients do: it is much cheaper for them to decode than
// JSON. The wire format is apimachinery's: an object is the magic prefix and
// a runtime.Unknown envelope (protobufCodec), a watch is a stream of
// length-delimited metav1.WatchEvent frames whose object is such an
// envelope. Tables, types without a protobuf encoding and clients that
// prefer JSON get JSON, as upstream.

// contentTypeProtobufWatch is the media type of a protobuf watch stream.
const contentTypeProtobufWatch = runtime.ContentTypeProtobuf + ";stream=watch"

// protobufRaw encodes the WatchEvent frames of a watch stream (no envelope:
// the frame's length says where it ends).
var protobufRaw = protobuf.NewRawSerializer(scheme.Scheme, scheme.Scheme)

// protoMarshaler is what apimachinery's protobuf serializer can encode: the
// generated types of the built-in APIs.
type protoMarshaler interface {
	Marshal() ([]byte, error)
}

// prefersProtobuf reports whether the media range the client prefers in its
// Accept header is protobuf. Ranges asking for another shape of the object
// (as=PartialObjectMetadata, as=Table) are not plain protobuf: those clients
// are answered as before.
func prefersProtobuf(accept string) bool {
	bestQ, best := -1.0, false
	for _, part := range strings.Split(accept, ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		q := 1.0
		if v, ok := params["q"]; ok {
			if q, err = strconv.ParseFloat(v, 64); err != nil {
				continue
			}
			delete(params, "q")
		}
		var isProtobuf bool
		switch mt {
		case runtime.ContentTypeProtobuf:
			if s, ok := params["stream"]; ok && s == "watch" {
				delete(params, "stream")
			}
			if len(params) > 0 {
				continue
			}
			isProtobuf = true
		case runtime.ContentTypeJSON, runtime.ContentTypeYAML, "*/*", "application/*":
		default:
			continue
		}
		if q > bestQ {
			bestQ, best = q, isProtobuf
		}
	}
	return bestQ > 0 && best
}

// wantsProtobuf reports whether the response to r about res is to be
// protobuf: the client prefers it and the type has a protobuf encoding.
func wantsProtobuf(r *http.Request, res *registry.Resource) bool {
	if !prefersProtobuf(r.Header.Get("Accept")) {
		return false
	}
	_, ok := res.New().(protoMarshaler)
	return ok
}

// encodeProtobuf encodes obj, whose apiVersion and kind are set, with its
// envelope.
func encodeProtobuf(obj runtime.Object) ([]byte, error) {
	var b bytes.Buffer
	if err := protobufCodec.Encode(obj, &b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// entryProtobuf is a cached object's protobuf encoding, made once per
// entry however many clients read it.
func entryProtobuf(e *cache.Entry) ([]byte, error) {
	return e.Alternate(encodeProtobuf)
}

func writeProtobuf(w http.ResponseWriter, code int, data []byte) {
	w.Header().Set("Content-Type", runtime.ContentTypeProtobuf)
	w.WriteHeader(code)
	w.Write(data)
}

// writeEntry answers with a cached object in the encoding the client asked for.
func writeEntry(w http.ResponseWriter, r *http.Request, res *registry.Resource, e *cache.Entry) {
	if wantsProtobuf(r, res) {
		if data, err := entryProtobuf(e); err == nil {
			writeProtobuf(w, http.StatusOK, data)
			return
		}
	}
	writeRaw(w, http.StatusOK, e.Data)
}

// writeObject answers with obj (of res, type meta set) in the encoding the
// client asked for.
func writeObject(w http.ResponseWriter, r *http.Request, res *registry.Resource, code int, obj runtime.Object) {
	if wantsProtobuf(r, res) {
		if data, err := encodeProtobuf(obj); err == nil {
			writeProtobuf(w, code, data)
			return
		}
	}
	writeJSON(w, code, obj)
}

// encodeListProtobuf encodes a list of res from cached entries. The items
// are shallow copies of the cached objects, which are only read.
func encodeListProtobuf(res *registry.Resource, lm metav1.ListMeta, entries []*cache.Entry) ([]byte, error) {
	if res.NewList == nil {
		return nil, fmt.Errorf("%s: no list type", res.GVR())
	}
	list := res.NewList()
	objs := make([]runtime.Object, len(entries))
	for i, e := range entries {
		objs[i] = e.Object
	}
	if err := meta.SetList(list, objs); err != nil {
		return nil, fmt.Errorf("%s list: %w", res.GVR(), err)
	}
	la, err := meta.ListAccessor(list)
	if err != nil {
		return nil, fmt.Errorf("%s list: %w", res.GVR(), err)
	}
	la.SetResourceVersion(lm.ResourceVersion)
	la.SetContinue(lm.Continue)
	list.GetObjectKind().SetGroupVersionKind(res.GroupVersion().WithKind(res.Kind + "List"))
	return encodeProtobuf(list)
}

// writeList answers a list in the encoding the client asked for.
func writeList(w http.ResponseWriter, r *http.Request, res *registry.Resource, lm metav1.ListMeta, entries []*cache.Entry) {
	if wantsProtobuf(r, res) {
		if data, err := encodeListProtobuf(res, lm, entries); err == nil {
			writeProtobuf(w, http.StatusOK, data)
			return
		}
	}
	writeRaw(w, http.StatusOK, encodeList(res, lm, entries))
}

// statusFor is st as a response body, with its HTTP code.
func statusFor(st apierrors.APIStatus) (*metav1.Status, int) {
	s := st.Status()
	s.Kind, s.APIVersion = "Status", "v1"
	if s.Status == "" {
		s.Status = metav1.StatusFailure
	}
	code := int(s.Code)
	if code == 0 {
		code = http.StatusInternalServerError
	}
	return &s, code
}

// writeStatusFor writes a failure Status in the encoding the client asked
// for (upstream encodes Status in protobuf too).
func writeStatusFor(w http.ResponseWriter, r *http.Request, st apierrors.APIStatus) {
	if prefersProtobuf(r.Header.Get("Accept")) {
		s, code := statusFor(st)
		if data, err := encodeProtobuf(s); err == nil {
			writeProtobuf(w, code, data)
			return
		}
	}
	writeStatus(w, st)
}

func writeErrorFor(w http.ResponseWriter, r *http.Request, err error, res *registry.Resource, name string) {
	writeStatusFor(w, r, statusError(err, res, name))
}

// protobufWatch writes watch events as length-delimited WatchEvent frames.
type protobufWatch struct {
	enc streaming.Encoder
}

func newProtobufWatch(w io.Writer) *protobufWatch {
	return &protobufWatch{enc: streaming.NewEncoder(protobuf.LengthDelimitedFramer.NewFrameWriter(w), protobufRaw)}
}

// send writes one event; obj is the object's protobuf encoding with its envelope.
func (p *protobufWatch) send(typ string, obj []byte) error {
	return p.enc.Encode(&metav1.WatchEvent{Type: typ, Object: runtime.RawExtension{Raw: obj}})
}

// bookmarkProtobuf is a BOOKMARK event's object: an empty object of res
// carrying only the revision (and the end-of-initial-events annotation).
func bookmarkProtobuf(res *registry.Resource, rev int64, initialEnd bool) ([]byte, error) {
	obj := res.New()
	m, err := meta.Accessor(obj)
	if err != nil {
		return nil, err
	}
	m.SetResourceVersion(strconv.FormatInt(rev, 10))
	if initialEnd {
		m.SetAnnotations(map[string]string{metav1.InitialEventsAnnotationKey: "true"})
	}
	setTypeMeta(res, obj)
	return encodeProtobuf(obj)
}
