// Package apiserver serves the Kubernetes REST API over a storage.Store: it
// authenticates and authorizes requests, decodes and validates bodies through
// the registry, stores objects, and answers reads and watches from the watch
// cache. Routes are derived from the registry's Resources; nothing here names
// a particular resource except the few with server-side behaviour of their own
// (namespaces, services, the scale, binding and log subresources, and the
// streams to kubelets: pods/exec, attach, portforward and nodes/proxy).
package apiserver

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/version"

	"github.com/navarch/navarch/controlplane/registry"
	"github.com/navarch/navarch/controlplane/storage"
	"github.com/navarch/navarch/controlplane/storage/cache"
)

// Config is what a Server is made from.
type Config struct {
	Store          storage.Store
	Resources      []*registry.Resource
	Authenticators []Authenticator
	Authorizer     Authorizer
	Version        version.Info
	// ServerAddress is host:port clients reach the server at (for discovery).
	ServerAddress string
	// OpenAPIV2 and OpenAPIV3 serve /openapi/v2 and /openapi/v3/...; nil means 404.
	OpenAPIV2, OpenAPIV3 http.HandlerFunc
	// Hooks adds server-side behaviour to writes of particular resources
	// (allocation of service IPs and ports), keyed by group/resource.
	Hooks map[string]WriteHooks
	// CompactionInterval is how often old revisions are compacted (0: never).
	CompactionInterval time.Duration
	// Admission is the list of admission steps creates go through, in
	// order, besides NamespaceLifecycle, which always runs.
	Admission []Admitter
	// KubeletClientCertPEM and KubeletClientKeyPEM are the client
	// certificate pods/log presents to kubelets; without them it fails.
	KubeletClientCertPEM, KubeletClientKeyPEM []byte
}

// WriteHooks run around the storage writes of one resource. Each returns an
// undo function, called if the write then fails, so nothing leaks.
type WriteHooks interface {
	BeforeCreate(ctx context.Context, obj runtime.Object) (undo func(), err error)
	BeforeUpdate(ctx context.Context, obj, old runtime.Object) (undo func(), err error)
	AfterUpdate(ctx context.Context, obj, old runtime.Object)
	AfterDelete(ctx context.Context, obj runtime.Object)
}

// Server is the API server.
type Server struct {
	cfg       Config
	store     storage.Store
	cache     *cache.Cache
	resources map[string]*registry.Resource // group/version/plural
	caches    map[*registry.Resource]*cache.Resource
	discovery *discovery
	ready     atomic.Bool
	// lastWrite is the newest revision this server wrote; reads wait for the
	// cache to reach it, which gives every client read-your-writes.
	lastWrite atomic.Int64
}

// New makes a Server; call Start before serving.
func New(cfg Config) (*Server, error) {
	if cfg.Authorizer == nil {
		cfg.Authorizer = AllowAuthenticated{}
	}
	s := &Server{cfg: cfg, store: cfg.Store, cache: cache.New(cfg.Store),
		resources: map[string]*registry.Resource{}, caches: map[*registry.Resource]*cache.Resource{}}
	bindServiceAccountTokens(s)
	byPrefix := map[string]*cache.Resource{}
	for _, r := range cfg.Resources {
		key := r.Group + "/" + r.Version + "/" + r.Plural
		if _, dup := s.resources[key]; dup {
			return nil, fmt.Errorf("resource %s registered twice", key)
		}
		s.resources[key] = r
		if r.StoredAs != nil {
			continue
		}
		p := resourcePrefix(r)
		if _, shared := byPrefix[p]; shared {
			return nil, fmt.Errorf("resource %s shares storage %s with another resource without StoredAs", key, p)
		}
		byPrefix[p] = s.cache.Register(p, decoder(r), restamper(r))
		s.caches[r] = byPrefix[p]
	}
	for _, r := range cfg.Resources {
		if r.StoredAs == nil {
			continue
		}
		st := s.stored(r)
		if st == nil || st.StoredAs != nil {
			return nil, fmt.Errorf("resource %s/%s/%s is stored as %v, which is not served", r.Group, r.Version, r.Plural, *r.StoredAs)
		}
		s.caches[r] = s.caches[st]
	}
	s.discovery = newDiscovery(cfg.Resources)
	return s, nil
}

func (s *Server) lookup(group, version, plural string) *registry.Resource {
	return s.resources[group+"/"+version+"/"+plural]
}

// Start loads the cache and follows the store until ctx ends. The server
// serves once Start returns, but reports ready only after MarkReady, so that
// start-up work (the bootstrap objects) is done before clients rely on it.
func (s *Server) Start(ctx context.Context) error {
	if err := s.cache.Load(ctx, "/registry/"); err != nil {
		return err
	}
	s.lastWrite.Store(s.cache.Revision())
	go func() {
		if err := s.cache.Run(ctx, "/registry/"); err != nil {
			slog.Error("watch cache stopped", "err", err)
		}
	}()
	if s.cfg.CompactionInterval > 0 {
		go s.compactLoop(ctx, s.cfg.CompactionInterval)
	}
	return nil
}

// MarkReady makes /readyz report success.
func (s *Server) MarkReady() { s.ready.Store(true) }

// compactLoop compacts the store to the revision seen one interval earlier,
// as upstream does, so that watchers have one interval to catch up.
func (s *Server) compactLoop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	var previous int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if previous > 0 {
			if err := s.store.Compact(ctx, previous); err != nil {
				slog.Warn("compaction failed", "revision", previous, "err", err)
			} else {
				s.cache.Compacted(previous)
			}
		}
		rev, err := s.store.Revision(ctx)
		if err == nil {
			previous = rev
		}
	}
}

// noteWrite records a revision this server wrote.
func (s *Server) noteWrite(rev int64) {
	for {
		cur := s.lastWrite.Load()
		if rev <= cur || s.lastWrite.CompareAndSwap(cur, rev) {
			return
		}
	}
}

// Handler returns the HTTP handler of the whole API.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(s.serveHTTP)
}

// public paths are served without credentials, as upstream's
// system:public-info-viewer role allows.
func isPublic(path string) bool {
	switch path {
	case "/healthz", "/livez", "/readyz", "/version":
		return true
	}
	return strings.HasPrefix(path, "/healthz/") || strings.HasPrefix(path, "/livez/") || strings.HasPrefix(path, "/readyz/")
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if !isPublic(path) {
		user, err := s.authenticate(r)
		if err != nil || user == nil {
			writeStatus(w, apierrors.NewUnauthorized("Unauthorized"))
			return
		}
		r = r.WithContext(withUser(r.Context(), user))
	}
	switch {
	case path == "/healthz" || path == "/livez" || path == "/readyz" ||
		strings.HasPrefix(path, "/healthz/") || strings.HasPrefix(path, "/livez/") || strings.HasPrefix(path, "/readyz/"):
		s.serveHealth(w, r)
	case path == "/version":
		writeJSON(w, http.StatusOK, s.cfg.Version)
	case path == "/openapi/v2":
		serveOptional(w, r, s.cfg.OpenAPIV2)
	case path == "/openapi/v3" || strings.HasPrefix(path, "/openapi/v3/"):
		serveOptional(w, r, s.cfg.OpenAPIV3)
	case path == "/debug/pprof" || strings.HasPrefix(path, "/debug/pprof/"):
		s.serveProfiling(w, r)
	case path == issuerDiscoveryPath || path == jwksPath:
		s.serveIssuerDiscovery(w, r)
	case path == "/api" || path == "/apis" || path == "/api/v1" || (strings.HasPrefix(path, "/apis/") && strings.Count(strings.Trim(path, "/"), "/") <= 2):
		s.discovery.serve(w, r, s.cfg.ServerAddress)
	default:
		req, ok := s.parseRequest(r)
		if !ok {
			req, ok = s.parseNodeProxy(r)
		}
		if !ok {
			writeStatus(w, apierrors.NewNotFound(schemaGR(path), ""))
			return
		}
		if allowed, reason := s.cfg.Authorizer.Authorize(r.Context(), userFrom(r.Context()), req.verb, req); !allowed {
			writeStatus(w, apierrors.NewForbidden(schemaGR(req.res.Plural), req.name, fmt.Errorf("%s", reason)))
			return
		}
		s.serveResource(w, r, req)
	}
}

func (s *Server) authenticate(r *http.Request) (*User, error) {
	for _, a := range s.cfg.Authenticators {
		u, ok, err := a.Authenticate(r)
		if err != nil {
			return nil, err
		}
		if ok {
			return u, nil
		}
	}
	return nil, nil
}

func serveOptional(w http.ResponseWriter, r *http.Request, h http.HandlerFunc) {
	if h == nil {
		http.NotFound(w, r)
		return
	}
	h(w, r)
}

func (s *Server) serveHealth(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !s.ready.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "[-]informer-sync failed: not ready")
		return
	}
	if r.URL.Query().Has("verbose") {
		fmt.Fprintln(w, "[+]ping ok\n[+]etcd ok\n[+]informer-sync ok")
		fmt.Fprintf(w, "%s check passed\n", strings.Trim(r.URL.Path, "/"))
		return
	}
	fmt.Fprint(w, "ok")
}

// serveResource dispatches a resource request by verb and subresource.
func (s *Server) serveResource(w http.ResponseWriter, r *http.Request, req request) {
	res, sub, verb := req.res, req.subresource, req.verb
	switch {
	case sub == "" && verb == "get":
		s.get(w, r, req)
	case sub == "" && verb == "list":
		s.list(w, r, req)
	case sub == "" && verb == "watch":
		s.watch(w, r, req)
	case sub == "" && verb == "create" && req.name == "":
		s.create(w, r, req)
	case sub == "" && verb == "delete":
		s.delete(w, r, req)
	case sub == "" && verb == "deletecollection":
		s.deleteCollection(w, r, req)
	case (sub == "" || sub == "status" && res.Status || sub == "finalize" && res.Plural == "namespaces") && verb == "update":
		s.update(w, r, req)
	case (sub == "" || sub == "status" && res.Status) && verb == "patch":
		s.patch(w, r, req)
	case sub == "status" && res.Status && verb == "get":
		s.get(w, r, req)
	case sub == "scale" && res.Scale != nil:
		s.serveScale(w, r, req)
	case sub == "binding" && res.Plural == "pods" && verb == "create":
		s.bind(w, r, req)
	case sub == "log" && res.Group == "" && res.Plural == "pods" && verb == "get":
		s.podLogs(w, r, req)
	case sub == "token" && res.Group == "" && res.Plural == "serviceaccounts" && verb == "create":
		s.tokenRequest(w, r, req)
	case (sub == subExec || sub == subAttach || sub == subPortForward) && res.Group == "" && res.Plural == "pods" && (verb == "get" || verb == "create"):
		s.podStream(w, r, req)
	case sub == "proxy" && res.Group == "" && res.Plural == "nodes":
		s.nodeProxy(w, r, req)
	default:
		writeStatus(w, apierrors.NewMethodNotSupported(schemaGR(res.Plural+"/"+sub), verb))
	}
}

func schemaGR(resource string) schema.GroupResource { return schema.GroupResource{Resource: resource} }

// Resource returns the served resource group/version/plural, or nil.
func (s *Server) Resource(group, version, plural string) *registry.Resource {
	return s.lookup(group, version, plural)
}

// Compact discards all store history before the current revision now (the
// periodic compaction does the same one interval behind).
func (s *Server) Compact(ctx context.Context) error {
	rev, err := s.store.Revision(ctx)
	if err != nil {
		return err
	}
	if err := s.store.Compact(ctx, rev); err != nil {
		return err
	}
	s.cache.Compacted(rev)
	return nil
}
