package apiserver

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/apimachinery/pkg/util/httpstream/wsstream"
)

// The connect subresources of pods: each is a stream to the pod's kubelet.
const (
	subExec        = "exec"
	subAttach      = "attach"
	subPortForward = "portforward"
)

// streamOptions are the connect options of pods/exec and pods/attach
// (upstream's PodExecOptions and PodAttachOptions) read from the query.
type streamOptions struct {
	container                  string
	command                    []string
	stdin, stdout, stderr, tty bool
}

// parseStreamOptions reads the options as upstream's query conversion does:
// a flag is false only when absent, "0" or "false".
func parseStreamOptions(q url.Values) streamOptions {
	flag := func(name string) bool {
		v, out := q[name], false
		_ = runtime.Convert_Slice_string_To_bool(&v, &out, nil)
		return out
	}
	return streamOptions{container: q.Get("container"), command: q["command"],
		stdin: flag("stdin"), stdout: flag("stdout"), stderr: flag("stderr"), tty: flag("tty")}
}

// kubeletParams are the options as the kubelet's streaming URLs take them.
func (o streamOptions) kubeletParams() url.Values {
	p := url.Values{}
	for _, c := range o.command {
		p.Add("command", c)
	}
	for name, on := range map[string]bool{"input": o.stdin, "output": o.stdout, "error": o.stderr, "tty": o.tty} {
		if on {
			p.Set(name, "1")
		}
	}
	return p
}

// podStream serves pods/exec, pods/attach and pods/portforward: it checks the
// request against the pod as upstream does, then connects the client to the
// kubelet's streaming endpoint. A SPDY upgrade is proxied as it is; a
// WebSocket (which kubectl 1.30+ tries first) is translated to SPDY here,
// since the kubelet speaks only SPDY.
func (s *Server) podStream(w http.ResponseWriter, r *http.Request, req request) {
	pod, ok := s.requestPod(w, r, req)
	if !ok {
		return
	}
	q := r.URL.Query()
	opts := parseStreamOptions(q)
	var path string
	params := url.Values{}
	if req.subresource == subPortForward {
		path = "/portforward/" + url.PathEscape(pod.Namespace) + "/" + url.PathEscape(pod.Name)
		for _, p := range q["ports"] {
			params.Add("port", p)
		}
	} else {
		container, err := logContainer(pod, opts.container)
		if err != nil {
			writeStatus(w, apierrors.NewBadRequest(err.Error()))
			return
		}
		opts.container = container
		path = "/" + req.subresource + "/" + url.PathEscape(pod.Namespace) + "/" + url.PathEscape(pod.Name) + "/" + url.PathEscape(container)
		params = opts.kubeletParams()
	}
	if pod.Spec.NodeName == "" {
		writeStatus(w, apierrors.NewBadRequest(fmt.Sprintf("pod %s does not have a host assigned", pod.Name)))
		return
	}
	if msg := streamRefusal(pod, req.subresource, opts); msg != "" {
		writeStatus(w, apierrors.NewBadRequest(msg))
		return
	}
	host, port, err := s.kubeletAddress(pod.Spec.NodeName)
	if err != nil {
		writeStatus(w, apierrors.NewBadRequest(fmt.Sprintf("pod %s/%s: %v", pod.Namespace, pod.Name, err)))
		return
	}
	target := &url.URL{Scheme: "https", Host: joinHostPort(host, port), Path: path, RawQuery: params.Encode()}
	switch {
	case wsstream.IsWebSocketRequest(r) && req.subresource == subPortForward:
		s.tunnelPortForward(w, r, target)
	case wsstream.IsWebSocketRequest(r):
		s.translateStream(w, r, target, opts)
	case httpstream.IsUpgradeRequest(r):
		s.proxyToKubelet(w, r, pod.Spec.NodeName, target)
	default:
		writeStatus(w, apierrors.NewBadRequest("Upgrade request required"))
	}
}

// streamRefusal is why a stream to the pod cannot work, in the words
// upstream uses (kubectl's checks for the phase, the kubelet's for the
// streams), or "".
func streamRefusal(pod *corev1.Pod, sub string, opts streamOptions) string {
	done := pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
	switch {
	case sub == subPortForward && pod.Status.Phase != corev1.PodRunning:
		return fmt.Sprintf("unable to forward port because pod is not running. Current status=%v", pod.Status.Phase)
	case sub == subExec && done:
		return fmt.Sprintf("cannot exec into a container in a completed pod; current phase is %s", pod.Status.Phase)
	case sub == subAttach && done:
		return fmt.Sprintf("cannot attach a container in a completed pod; current phase is %s", pod.Status.Phase)
	case sub != subPortForward && !opts.stdin && !opts.stdout && !opts.stderr:
		return "you must specify at least 1 of stdin, stdout, stderr"
	}
	return ""
}

// nodeProxy serves nodes/{name}/proxy/{path}: any method, proxied to the
// kubelet's https://node:port/{path} with the query as given.
func (s *Server) nodeProxy(w http.ResponseWriter, r *http.Request, req request) {
	if err := s.waitForVersion(r.Context(), ""); err != nil {
		writeError(w, err, req.res, req.name)
		return
	}
	if e, _ := s.cache.Get(s.caches[req.res], s.key(req.res, "", req.name)); s.view(req.res, e) == nil {
		writeStatus(w, apierrors.NewNotFound(req.res.GVR().GroupResource(), req.name))
		return
	}
	host, port, err := s.kubeletAddress(req.name)
	if err != nil {
		writeStatus(w, apierrors.NewBadRequest(err.Error()))
		return
	}
	prefix := "/api/v1/nodes/" + req.name + "/proxy"
	path := strings.TrimPrefix(r.URL.Path, prefix)
	if path == "" {
		path = "/"
	}
	target := &url.URL{Scheme: "https", Host: joinHostPort(host, port), Path: path, RawQuery: r.URL.RawQuery}
	s.proxyToKubelet(w, r, req.name, target)
}

// parseNodeProxy maps /api/v1/nodes/{name}/proxy/{path...}, which is deeper
// than parseRequest's paths, to a request for the proxy subresource.
func (s *Server) parseNodeProxy(r *http.Request) (request, bool) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(parts) < 5 || parts[0] != "api" || parts[1] != "v1" || parts[2] != "nodes" || parts[3] == "" || parts[4] != "proxy" {
		return request{}, false
	}
	res := s.lookup("", "v1", "nodes")
	if res == nil {
		return request{}, false
	}
	verb := map[string]string{http.MethodGet: "get", http.MethodHead: "get", http.MethodPost: "create",
		http.MethodPut: "update", http.MethodPatch: "patch", http.MethodDelete: "delete"}[r.Method]
	if verb == "" {
		verb = strings.ToLower(r.Method)
	}
	return request{res: res, name: parts[3], subresource: "proxy", verb: verb}, true
}

// proxyToKubelet proxies the request to target on a kubelet, upgrades
// included: after the kubelet's 101 the reverse proxy pipes the raw
// connection (SPDY) both ways. The client's credentials stay here; the
// kubelet sees the API server's client certificate.
func (s *Server) proxyToKubelet(w http.ResponseWriter, r *http.Request, node string, target *url.URL) {
	t, err := s.kubeletTransport()
	if err != nil {
		writeStatus(w, apierrors.NewInternalError(err))
		return
	}
	defer t.CloseIdleConnections()
	p := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			u := *target
			pr.Out.URL = &u
			pr.Out.Host = ""
			for h := range pr.Out.Header {
				if h == "Authorization" || strings.HasPrefix(h, "Impersonate-") {
					pr.Out.Header.Del(h)
				}
			}
		},
		Transport:     t,
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			// Upstream's words; the error names the node's address.
			slog.Debug("kubelet proxy failed", "node", node, "path", target.Path, "err", err)
			writeStatus(w, kubeletError(http.StatusInternalServerError, fmt.Sprintf("error dialing backend: %v", err)))
		},
	}
	p.ServeHTTP(w, r)
}

func joinHostPort(host string, port int32) string {
	return net.JoinHostPort(host, strconv.Itoa(int(port)))
}
