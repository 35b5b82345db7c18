package apiserver

import (
	"fmt"
	"net/http"
	"net/http/pprof"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// serveProfiling serves Go's runtime profiles under /debug/pprof, as
// upstream's API server does with --profiling (on by default), so that a
// slow cluster can be examined with `go tool pprof`. Profiles reveal the
// server's internals, so only cluster admins (system:masters) may read them.
func (s *Server) serveProfiling(w http.ResponseWriter, r *http.Request) {
	if u := userFrom(r.Context()); u == nil || !slices.Contains(u.Groups, "system:masters") {
		writeStatus(w, apierrors.NewForbidden(schemaGR(""), "", fmt.Errorf("profiles are for system:masters only")))
		return
	}
	switch name := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, "/debug/pprof"), "/"); name {
	case "":
		pprof.Index(w, r)
	case "profile":
		pprof.Profile(w, r)
	case "trace":
		pprof.Trace(w, r)
	case "symbol":
		pprof.Symbol(w, r)
	case "cmdline":
		pprof.Cmdline(w, r)
	default:
		pprof.Handler(name).ServeHTTP(w, r)
	}
}
