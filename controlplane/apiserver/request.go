package apiserver

import (
	"net/http"
	"strings"

	"github.com/navarch/navarch/controlplane/registry"
)

// request is what a resource URL and method name: the resource, the object,
// the subresource and the verb.
type request struct {
	res         *registry.Resource
	namespace   string
	name        string
	subresource string
	verb        string // get list watch create update patch delete deletecollection
}

// namespaceSubresources are the subresources of namespaces, which would
// otherwise read as a namespaced collection (/api/v1/namespaces/NAME/status).
var namespaceSubresources = map[string]bool{"status": true, "finalize": true}

// parseRequest maps /api/v1/... and /apis/GROUP/VERSION/... paths to a
// request; ok is false when the path names no served resource.
func (s *Server) parseRequest(r *http.Request) (request, bool) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	var group, version string
	switch {
	case len(parts) >= 3 && parts[0] == "api":
		version, parts = parts[1], parts[2:]
	case len(parts) >= 4 && parts[0] == "apis":
		group, version, parts = parts[1], parts[2], parts[3:]
	default:
		return request{}, false
	}
	var req request
	if len(parts) >= 3 && parts[0] == "namespaces" && !(len(parts) == 3 && namespaceSubresources[parts[2]]) {
		req.namespace = parts[1]
		parts = parts[2:]
	}
	if len(parts) > 3 {
		return request{}, false
	}
	res := s.lookup(group, version, parts[0])
	if res == nil {
		return request{}, false
	}
	req.res = res
	if len(parts) >= 2 {
		req.name = parts[1]
	}
	if len(parts) == 3 {
		req.subresource = parts[2]
	}
	if res.Plural == "namespaces" && req.name != "" {
		req.namespace = ""
	}
	q := r.URL.Query()
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		switch {
		case q.Get("watch") == "true" || q.Get("watch") == "1":
			req.verb = "watch"
		case req.name == "":
			req.verb = "list"
		default:
			req.verb = "get"
		}
	case http.MethodPost:
		req.verb = "create"
	case http.MethodPut:
		req.verb = "update"
	case http.MethodPatch:
		req.verb = "patch"
	case http.MethodDelete:
		req.verb = "delete"
		if req.name == "" {
			req.verb = "deletecollection"
		}
	default:
		return request{}, false
	}
	return req, true
}
