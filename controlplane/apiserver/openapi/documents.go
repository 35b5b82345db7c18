package openapi

import (
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"sync"

	openapi_v2 "github.com/google/gnostic-models/openapiv2"
	"google.golang.org/protobuf/proto"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/navarch/navarch/controlplane/registry"
)

// Documents are the built OpenAPI documents, ready to serve.
type Documents struct {
	v2JSON []byte
	v2Hash string

	v2ProtoOnce sync.Once
	v2Proto     []byte
	v2ProtoErr  error

	v3Index []byte
	v3      map[string]v3Doc // by "api/v1" or "apis/GROUP/VERSION"
}

type v3Doc struct {
	data []byte
	hash string
}

func hashOf(data []byte) string {
	sum := sha512.Sum512(data)
	return strings.ToUpper(hex.EncodeToString(sum[:]))
}

// gvPath is the document key of a group-version.
func gvPath(r *registry.Resource) string {
	if r.Group == "" {
		return "api/" + r.Version
	}
	return "apis/" + r.Group + "/" + r.Version
}

// New builds every document for resources.
func New(resources []*registry.Resource) (*Documents, error) {
	d := &Documents{v3: map[string]v3Doc{}}

	// v2: one document for everything.
	b2 := newBuilder(false)
	paths2 := schema{}
	for _, r := range resources {
		addResource(b2, paths2, r)
	}
	addCommon(b2, resources)
	v2 := schema{
		"swagger": "2.0",
		"info":    schema{"title": "Kubernetes", "version": "v1.34.0"},
		"paths":   paths2, "definitions": b2.defs,
	}
	var err error
	if d.v2JSON, err = json.Marshal(v2); err != nil {
		return nil, err
	}
	d.v2Hash = hashOf(d.v2JSON)

	// v3: one document per group-version.
	byGV := map[string][]*registry.Resource{}
	var order []string
	for _, r := range resources {
		k := gvPath(r)
		if _, ok := byGV[k]; !ok {
			order = append(order, k)
		}
		byGV[k] = append(byGV[k], r)
	}
	index := schema{}
	for _, k := range order {
		b3 := newBuilder(true)
		paths := schema{}
		for _, r := range byGV[k] {
			addResource(b3, paths, r)
		}
		addCommon(b3, byGV[k])
		doc := schema{
			"openapi": "3.0.0",
			"info":    schema{"title": "Kubernetes", "version": "v1.34.0"},
			"paths":   paths,
			"components": schema{"schemas": b3.defs, "securitySchemes": schema{
				"BearerToken": schema{"type": "apiKey", "name": "authorization", "in": "header", "description": "Bearer Token authentication"}}},
		}
		data, err := json.Marshal(doc)
		if err != nil {
			return nil, err
		}
		h := hashOf(data)
		d.v3[k] = v3Doc{data: data, hash: h}
		index[k] = schema{"serverRelativeURL": "/openapi/v3/" + k + "?hash=" + h}
	}
	if d.v3Index, err = json.Marshal(schema{"paths": index}); err != nil {
		return nil, err
	}
	return d, nil
}

// addCommon adds the meta types every group-version document refers to, each
// tagged with the GVKs it serves, as upstream does.
func addCommon(b *builder, resources []*registry.Resource) {
	var gvks []interface{}
	seen := map[string]bool{}
	for _, r := range resources {
		gv := r.GroupVersion()
		if seen[gv.String()] {
			continue
		}
		seen[gv.String()] = true
		gvks = append(gvks, schema{"group": gv.Group, "version": gv.Version, "kind": "DeleteOptions"})
	}
	for _, t := range []reflect.Type{reflect.TypeOf(metav1.DeleteOptions{}), reflect.TypeOf(metav1.Status{}), reflect.TypeOf(metav1.WatchEvent{})} {
		b.refTo(t)
	}
	b.defs[definitionName(reflect.TypeOf(metav1.DeleteOptions{}))]["x-kubernetes-group-version-kind"] = gvks
}

// typeOf is the struct type behind a New function.
func typeOf(obj interface{}) reflect.Type { return reflect.TypeOf(obj).Elem() }

func gvkExt(group, version, kind string) schema {
	return schema{"group": group, "version": version, "kind": kind}
}

// operationName builds upstream-style operation ids: listAppsV1NamespacedDeployment.
func operationName(verb string, r *registry.Resource, namespaced bool, suffix string) string {
	group := "Core"
	if r.Group != "" {
		group = ""
		for _, part := range strings.Split(strings.TrimSuffix(r.Group, ".k8s.io"), ".") {
			group += strings.ToUpper(part[:1]) + part[1:]
		}
	}
	ns := ""
	if namespaced {
		ns = "Namespaced"
	}
	return verb + group + strings.ToUpper(r.Version[:1]) + r.Version[1:] + ns + r.Kind + suffix
}

func addResource(b *builder, paths schema, r *registry.Resource) {
	kind := b.refTo(typeOf(r.New()))
	list := b.refTo(typeOf(r.NewList()))
	kindName, listName := definitionName(typeOf(r.New())), definitionName(typeOf(r.NewList()))
	b.defs[kindName]["x-kubernetes-group-version-kind"] = []interface{}{gvkExt(r.Group, r.Version, r.Kind)}
	b.defs[listName]["x-kubernetes-group-version-kind"] = []interface{}{gvkExt(r.Group, r.Version, r.Kind+"List")}
	gvk := gvkExt(r.Group, r.Version, r.Kind)

	base := "/" + gvPath(r)
	collection := base + "/" + r.Plural
	if r.Namespaced {
		collection = base + "/namespaces/{namespace}/" + r.Plural
		// Listing across namespaces.
		paths[base+"/"+r.Plural] = schema{
			"get": b.operation("list", operationName("list", r, false, "ForAllNamespaces"), gvk, list, listParams),
		}
	}
	item := collection + "/{name}"
	pathParams := []interface{}{b.param("name", "path", "name of the "+r.Kind)}
	if r.Namespaced {
		pathParams = append(pathParams, b.param("namespace", "path", "object name and auth scope, such as for teams and projects"))
	}
	collParams := pathParams[1:]
	paths[collection] = schema{
		"parameters": collParams,
		"get":        b.operation("list", operationName("list", r, r.Namespaced, ""), gvk, list, listParams),
		"post":       b.operation("post", operationName("create", r, r.Namespaced, ""), gvk, kind, writeParams),
		"delete":     b.operation("deletecollection", operationName("deletecollection", r, r.Namespaced, ""), gvk, b.refTo(typeOf(&metav1.Status{})), listParams),
	}
	paths[item] = schema{
		"parameters": pathParams,
		"get":        b.operation("get", operationName("read", r, r.Namespaced, ""), gvk, kind, nil),
		"put":        b.operation("put", operationName("replace", r, r.Namespaced, ""), gvk, kind, writeParams),
		"patch":      b.operation("patch", operationName("patch", r, r.Namespaced, ""), gvk, kind, patchParams),
		"delete":     b.operation("delete", operationName("delete", r, r.Namespaced, ""), gvk, kind, []string{"dryRun", "gracePeriodSeconds", "propagationPolicy"}),
	}
	if r.Status {
		paths[item+"/status"] = schema{
			"parameters": pathParams,
			"get":        b.operation("get", operationName("read", r, r.Namespaced, "Status"), gvk, kind, nil),
			"put":        b.operation("put", operationName("replace", r, r.Namespaced, "Status"), gvk, kind, writeParams),
			"patch":      b.operation("patch", operationName("patch", r, r.Namespaced, "Status"), gvk, kind, patchParams),
		}
	}
}

var (
	listParams  = []string{"labelSelector", "fieldSelector", "limit", "continue", "resourceVersion", "resourceVersionMatch", "timeoutSeconds", "watch", "allowWatchBookmarks", "sendInitialEvents"}
	writeParams = []string{"dryRun", "fieldManager", "fieldValidation"}
	patchParams = []string{"dryRun", "fieldManager", "fieldValidation", "force"}
)

var paramDocs = map[string]string{
	"labelSelector":        "A selector to restrict the list of returned objects by their labels. Defaults to everything.",
	"fieldSelector":        "A selector to restrict the list of returned objects by their fields. Defaults to everything.",
	"limit":                "limit is a maximum number of responses to return for a list call.",
	"continue":             "The continue option should be set when retrieving more results from the server.",
	"resourceVersion":      "resourceVersion sets a constraint on what resource versions a request may be served from.",
	"resourceVersionMatch": "resourceVersionMatch determines how resourceVersion is applied to list calls.",
	"timeoutSeconds":       "Timeout for the list/watch call.",
	"watch":                "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications.",
	"allowWatchBookmarks":  "allowWatchBookmarks requests watch events with type \"BOOKMARK\".",
	"sendInitialEvents":    "sendInitialEvents=true may be set together with watch=true to begin the watch stream with synthetic events of the current state.",
	"dryRun":               "When present, indicates that modifications should not be persisted. The only valid value is All.",
	"fieldManager":         "fieldManager is a name associated with the actor or entity that is making these changes.",
	"fieldValidation":      "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields. Valid values are: Ignore, Warn (default), Strict.",
	"force":                "Force is going to \"force\" Apply requests.",
	"gracePeriodSeconds":   "The duration in seconds before the object should be deleted.",
	"propagationPolicy":    "Whether and how garbage collection will be performed: Orphan, Background or Foreground.",
}

var paramTypes = map[string]string{"limit": "integer", "timeoutSeconds": "integer", "gracePeriodSeconds": "integer", "watch": "boolean", "allowWatchBookmarks": "boolean", "sendInitialEvents": "boolean", "force": "boolean"}

func (b *builder) param(name, in, desc string) schema {
	typ := paramTypes[name]
	if typ == "" {
		typ = "string"
	}
	p := schema{"name": name, "in": in, "description": desc, "uniqueItems": true}
	if in == "path" {
		p["required"] = true
	}
	if b.v3 {
		p["schema"] = schema{"type": typ}
	} else {
		p["type"] = typ
	}
	return p
}

func (b *builder) operation(action, id string, gvk, result schema, query []string) schema {
	var params []interface{}
	for _, q := range query {
		params = append(params, b.param(q, "query", paramDocs[q]))
	}
	op := schema{
		"operationId":                     id,
		"x-kubernetes-action":             action,
		"x-kubernetes-group-version-kind": gvk,
		"responses":                       schema{"200": b.response(result), "401": schema{"description": "Unauthorized"}},
	}
	if len(params) > 0 {
		op["parameters"] = params
	}
	if action == "post" || action == "put" || action == "patch" {
		body := result
		if action == "patch" {
			body = schema{"type": "object"}
		}
		if b.v3 {
			types := []string{"application/json", "application/yaml"}
			if action == "patch" {
				types = []string{"application/json-patch+json", "application/merge-patch+json", "application/strategic-merge-patch+json", "application/apply-patch+yaml"}
			}
			content := schema{}
			for _, t := range types {
				content[t] = schema{"schema": body}
			}
			op["requestBody"] = schema{"content": content, "required": true}
		} else {
			op["parameters"] = append(params, schema{"name": "body", "in": "body", "required": true, "schema": body})
		}
	}
	return op
}

func (b *builder) response(result schema) schema {
	if b.v3 {
		return schema{"description": "OK", "content": schema{
			"application/json": schema{"schema": result}, "application/yaml": schema{"schema": result}}}
	}
	return schema{"description": "OK", "schema": result}
}

// Lazy builds the documents on first use: they are large, most server
// starts never need them, and building them would delay readiness.
type Lazy struct {
	resources []*registry.Resource
	once      sync.Once
	docs      *Documents
	err       error
}

// NewLazy returns documents for resources, built when first served.
func NewLazy(resources []*registry.Resource) *Lazy { return &Lazy{resources: resources} }

func (l *Lazy) get(w http.ResponseWriter) *Documents {
	l.once.Do(func() { l.docs, l.err = New(l.resources) })
	if l.err != nil {
		http.Error(w, fmt.Sprintf("openapi: %v", l.err), http.StatusInternalServerError)
		return nil
	}
	return l.docs
}

// ServeV2 serves /openapi/v2.
func (l *Lazy) ServeV2(w http.ResponseWriter, r *http.Request) {
	if d := l.get(w); d != nil {
		d.ServeV2(w, r)
	}
}

// ServeV3 serves /openapi/v3 and the group-version documents.
func (l *Lazy) ServeV3(w http.ResponseWriter, r *http.Request) {
	if d := l.get(w); d != nil {
		d.ServeV3(w, r)
	}
}

// ServeV2 serves /openapi/v2 as JSON or, when asked, protobuf.
func (d *Documents) ServeV2(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Etag", `"`+d.v2Hash+`"`)
	w.Header().Set("Vary", "Accept")
	if r.Header.Get("If-None-Match") == `"`+d.v2Hash+`"` {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	if strings.Contains(r.Header.Get("Accept"), "application/com.github.proto-openapi.spec.v2") {
		d.v2ProtoOnce.Do(func() {
			doc, err := openapi_v2.ParseDocument(d.v2JSON)
			if err != nil {
				d.v2ProtoErr = err
				return
			}
			d.v2Proto, d.v2ProtoErr = proto.Marshal(doc)
		})
		if d.v2ProtoErr != nil {
			http.Error(w, fmt.Sprintf("openapi v2 protobuf: %v", d.v2ProtoErr), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/com.github.proto-openapi.spec.v2.v1.0+protobuf")
		w.Write(d.v2Proto)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(d.v2JSON)
}

// ServeV3 serves the /openapi/v3 index and the per group-version documents.
func (d *Documents) ServeV3(w http.ResponseWriter, r *http.Request) {
	key := strings.Trim(strings.TrimPrefix(r.URL.Path, "/openapi/v3"), "/")
	if key == "" {
		w.Header().Set("Content-Type", "application/json")
		w.Write(d.v3Index)
		return
	}
	doc, ok := d.v3[key]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Etag", `"`+doc.hash+`"`)
	w.Header().Set("Vary", "Accept")
	if r.URL.Query().Get("hash") == doc.hash {
		w.Header().Set("Cache-Control", "public, immutable")
		w.Header().Set("Expires", "Thu, 01 Jan 2099 00:00:00 GMT")
	} else {
		w.Header().Set("Cache-Control", "no-cache, private")
	}
	if r.Header.Get("If-None-Match") == `"`+doc.hash+`"` {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(doc.data)
}

// groupVersions lists the v3 document keys, sorted (for tests).
func (d *Documents) groupVersions() []string {
	var out []string
	for k := range d.v3 {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
