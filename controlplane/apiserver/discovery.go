package apiserver

import (
	"encoding/json"
	"net/http"
	"strings"

	apidiscoveryv2 "k8s.io/api/apidiscovery/v2"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/navarch/navarch/controlplane/registry"
)

// discovery holds the discovery documents, built once from the registry:
// legacy (/api, /apis, /api/v1, /apis/G/V) and aggregated (apidiscovery v2
// and v2beta1, asked for through the Accept header).
type discovery struct {
	groups      []metav1.APIGroup                  // non-core groups, in registry order
	lists       map[string]*metav1.APIResourceList // by "v1" or "group/version"
	aggregated  map[bool][]byte                    // core? -> APIGroupDiscoveryList JSON (without apiVersion)
	coreVersion []string
}

var allVerbs = metav1.Verbs{"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"}

func newDiscovery(resources []*registry.Resource) *discovery {
	d := &discovery{lists: map[string]*metav1.APIResourceList{}, aggregated: map[bool][]byte{}}
	groupIndex := map[string]int{}
	var core apidiscoveryv2.APIGroupDiscovery
	var others []apidiscoveryv2.APIGroupDiscovery
	for _, r := range resources {
		gv := r.GroupVersion().String()
		list := d.lists[gv]
		if list == nil {
			list = &metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"}, GroupVersion: gv}
			d.lists[gv] = list
			if r.Group == "" {
				d.coreVersion = append(d.coreVersion, r.Version)
			} else {
				i, ok := groupIndex[r.Group]
				if !ok {
					i = len(d.groups)
					groupIndex[r.Group] = i
					d.groups = append(d.groups, metav1.APIGroup{Name: r.Group})
					others = append(others, apidiscoveryv2.APIGroupDiscovery{ObjectMeta: metav1.ObjectMeta{Name: r.Group}})
				}
				g := &d.groups[i]
				g.Versions = append(g.Versions, metav1.GroupVersionForDiscovery{GroupVersion: gv, Version: r.Version})
				if len(g.Versions) == 1 {
					g.PreferredVersion = g.Versions[0]
				}
			}
		}
		list.APIResources = append(list.APIResources, legacyResources(r)...)

		target := &core
		if r.Group != "" {
			target = &others[groupIndex[r.Group]]
		}
		vi := -1
		for i, v := range target.Versions {
			if v.Version == r.Version {
				vi = i
			}
		}
		if vi < 0 {
			target.Versions = append(target.Versions, apidiscoveryv2.APIVersionDiscovery{Version: r.Version, Freshness: apidiscoveryv2.DiscoveryFreshnessCurrent})
			vi = len(target.Versions) - 1
		}
		target.Versions[vi].Resources = append(target.Versions[vi].Resources, aggregatedResource(r))
	}
	d.aggregated[true], _ = json.Marshal(apidiscoveryv2.APIGroupDiscoveryList{Items: []apidiscoveryv2.APIGroupDiscovery{core}})
	d.aggregated[false], _ = json.Marshal(apidiscoveryv2.APIGroupDiscoveryList{Items: others})
	return d
}

// subresource is one subresource a resource serves.
type subresource struct {
	name  string
	group string
	ver   string
	kind  string
	verbs metav1.Verbs
}

func subresourcesOf(r *registry.Resource) []subresource {
	var out []subresource
	if r.Status {
		out = append(out, subresource{name: "status", group: r.Group, ver: r.Version, kind: r.Kind, verbs: metav1.Verbs{"get", "patch", "update"}})
	}
	if r.Scale != nil {
		out = append(out, subresource{name: "scale", group: "autoscaling", ver: "v1", kind: "Scale", verbs: metav1.Verbs{"get", "patch", "update"}})
	}
	switch {
	case r.Group == "" && r.Plural == "pods":
		out = append(out, subresource{name: "binding", ver: "v1", kind: "Binding", verbs: metav1.Verbs{"create"}})
		out = append(out, subresource{name: "log", ver: "v1", kind: "Pod", verbs: metav1.Verbs{"get"}})
		for _, c := range []struct{ name, kind string }{{"attach", "PodAttachOptions"}, {"exec", "PodExecOptions"}, {"portforward", "PodPortForwardOptions"}} {
			out = append(out, subresource{name: c.name, ver: "v1", kind: c.kind, verbs: metav1.Verbs{"create", "get"}})
		}
	case r.Group == "" && r.Plural == "nodes":
		out = append(out, subresource{name: "proxy", ver: "v1", kind: "NodeProxyOptions", verbs: metav1.Verbs{"create", "delete", "get", "patch", "update"}})
	case r.Group == "" && r.Plural == "serviceaccounts":
		out = append(out, subresource{name: "token", group: "authentication.k8s.io", ver: "v1", kind: "TokenRequest", verbs: metav1.Verbs{"create"}})
	case r.Group == "" && r.Plural == "namespaces":
		out = append(out, subresource{name: "finalize", ver: "v1", kind: "Namespace", verbs: metav1.Verbs{"update"}})
	}
	return out
}

func legacyResources(r *registry.Resource) []metav1.APIResource {
	out := []metav1.APIResource{{
		Name: r.Plural, SingularName: r.Singular, Namespaced: r.Namespaced, Kind: r.Kind,
		Verbs: allVerbs, ShortNames: r.ShortNames, Categories: r.Categories,
	}}
	for _, s := range subresourcesOf(r) {
		ar := metav1.APIResource{Name: r.Plural + "/" + s.name, Namespaced: r.Namespaced, Kind: s.kind, Verbs: s.verbs}
		if s.group != r.Group || s.ver != r.Version {
			ar.Group, ar.Version = s.group, s.ver
		}
		out = append(out, ar)
	}
	return out
}

func aggregatedResource(r *registry.Resource) apidiscoveryv2.APIResourceDiscovery {
	scope := apidiscoveryv2.ScopeCluster
	if r.Namespaced {
		scope = apidiscoveryv2.ScopeNamespace
	}
	gvk := r.GVK()
	out := apidiscoveryv2.APIResourceDiscovery{
		Resource: r.Plural, SingularResource: r.Singular, Scope: scope, Verbs: allVerbs,
		ShortNames: r.ShortNames, Categories: r.Categories,
		ResponseKind: &metav1.GroupVersionKind{Group: gvk.Group, Version: gvk.Version, Kind: gvk.Kind},
	}
	for _, s := range subresourcesOf(r) {
		out.Subresources = append(out.Subresources, apidiscoveryv2.APISubresourceDiscovery{
			Subresource: s.name, Verbs: s.verbs,
			ResponseKind: &metav1.GroupVersionKind{Group: s.group, Version: s.ver, Kind: s.kind},
		})
	}
	return out
}

// aggregatedVersion returns the apidiscovery version the client accepts
// ("v2" or "v2beta1"), or "" for the legacy documents.
func aggregatedVersion(accept string) string {
	for _, part := range strings.Split(accept, ",") {
		if !strings.Contains(part, "as=APIGroupDiscoveryList") || !strings.Contains(part, "g=apidiscovery.k8s.io") {
			continue
		}
		for _, p := range strings.Split(part, ";") {
			switch strings.TrimSpace(p) {
			case "v=v2":
				return "v2"
			case "v=v2beta1":
				return "v2beta1"
			}
		}
	}
	return ""
}

func (d *discovery) serve(w http.ResponseWriter, r *http.Request, serverAddress string) {
	path := strings.TrimSuffix(r.URL.Path, "/")
	if path == "/api" || path == "/apis" {
		if v := aggregatedVersion(r.Header.Get("Accept")); v != "" {
			doc := d.aggregated[path == "/api"]
			w.Header().Set("Content-Type", "application/json;g=apidiscovery.k8s.io;v="+v+";as=APIGroupDiscoveryList")
			w.Header().Set("Vary", "Accept")
			w.WriteHeader(http.StatusOK)
			w.Write([]byte(`{"kind":"APIGroupDiscoveryList","apiVersion":"apidiscovery.k8s.io/` + v + `",` + string(doc[1:])))
			return
		}
	}
	addr := []metav1.ServerAddressByClientCIDR{{ClientCIDR: "0.0.0.0/0", ServerAddress: serverAddress}}
	switch {
	case path == "/api":
		writeJSON(w, http.StatusOK, &metav1.APIVersions{TypeMeta: metav1.TypeMeta{Kind: "APIVersions"}, Versions: d.coreVersion, ServerAddressByClientCIDRs: addr})
	case path == "/apis":
		writeJSON(w, http.StatusOK, &metav1.APIGroupList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"}, Groups: d.groups})
	case strings.HasPrefix(path, "/api/"):
		d.serveList(w, strings.TrimPrefix(path, "/api/"))
	default:
		rest := strings.TrimPrefix(path, "/apis/")
		if !strings.Contains(rest, "/") {
			for _, g := range d.groups {
				if g.Name == rest {
					g := g
					g.TypeMeta = metav1.TypeMeta{Kind: "APIGroup", APIVersion: "v1"}
					writeJSON(w, http.StatusOK, &g)
					return
				}
			}
			writeStatus(w, apierrors.NewNotFound(schemaGR(""), ""))
			return
		}
		d.serveList(w, rest)
	}
}

func (d *discovery) serveList(w http.ResponseWriter, gv string) {
	list, ok := d.lists[gv]
	if !ok {
		writeStatus(w, apierrors.NewNotFound(schemaGR(""), ""))
		return
	}
	writeJSON(w, http.StatusOK, list)
}
