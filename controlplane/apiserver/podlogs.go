package apiserver

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// defaultKubeletPort is upstream's, used when a Node publishes none.
const defaultKubeletPort = 10250

// podLogParams are the query parameters of pods/log passed on to the
// kubelet's containerLogs endpoint.
var podLogParams = []string{"follow", "previous", "timestamps", "sinceSeconds", "sinceTime", "tailLines", "limitBytes"}

// podLogs serves pods/log: it finds the pod's container and node and proxies
// to the kubelet's /containerLogs over HTTPS with the API server's client
// certificate, streaming the body back as it arrives (so follow works). As
// upstream without --kubelet-certificate-authority, the kubelet's serving
// certificate is not verified.
func (s *Server) podLogs(w http.ResponseWriter, r *http.Request, req request) {
	pod, ok := s.requestPod(w, r, req)
	if !ok {
		return
	}
	q := r.URL.Query()
	container, err := logContainer(pod, q.Get("container"))
	if err != nil {
		writeStatus(w, apierrors.NewBadRequest(err.Error()))
		return
	}
	if pod.Spec.NodeName == "" {
		writeStatus(w, apierrors.NewBadRequest(fmt.Sprintf("pod %s does not have a host assigned", pod.Name)))
		return
	}
	host, port, err := s.kubeletAddress(pod.Spec.NodeName)
	if err != nil {
		writeStatus(w, apierrors.NewBadRequest(fmt.Sprintf("pod %s/%s: %v", pod.Namespace, pod.Name, err)))
		return
	}
	params := url.Values{}
	for _, p := range podLogParams {
		if v := q.Get(p); v != "" {
			params.Set(p, v)
		}
	}
	target := url.URL{Scheme: "https", Host: net.JoinHostPort(host, strconv.Itoa(int(port))),
		Path:     "/containerLogs/" + url.PathEscape(pod.Namespace) + "/" + url.PathEscape(pod.Name) + "/" + url.PathEscape(container),
		RawQuery: params.Encode()}
	client, err := s.kubeletClient()
	if err != nil {
		writeStatus(w, apierrors.NewInternalError(err))
		return
	}
	defer client.CloseIdleConnections()
	kreq, err := http.NewRequestWithContext(r.Context(), http.MethodGet, target.String(), nil)
	if err != nil {
		writeStatus(w, apierrors.NewInternalError(err))
		return
	}
	resp, err := client.Do(kreq)
	if err != nil {
		writeStatus(w, apierrors.NewInternalError(fmt.Errorf("pod %s/%s: kubelet on node %s: %w", pod.Namespace, pod.Name, pod.Spec.NodeName, err)))
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// As upstream, the kubelet's message becomes the Status's.
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		writeStatus(w, kubeletError(resp.StatusCode, strings.TrimSpace(string(body))))
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
		if err != nil {
			return
		}
	}
}

// requestPod is the pod a pods/* subresource request names, read from the
// watch cache; ok is false when the answer (an error Status) is written.
func (s *Server) requestPod(w http.ResponseWriter, r *http.Request, req request) (*corev1.Pod, bool) {
	if err := s.waitForVersion(r.Context(), ""); err != nil {
		writeError(w, err, req.res, req.name)
		return nil, false
	}
	e, _ := s.cache.Get(s.caches[req.res], s.key(req.res, req.namespace, req.name))
	e = s.view(req.res, e)
	if e == nil {
		writeStatus(w, apierrors.NewNotFound(req.res.GVR().GroupResource(), req.name))
		return nil, false
	}
	pod, ok := e.Object.(*corev1.Pod)
	if !ok {
		writeStatus(w, apierrors.NewInternalError(fmt.Errorf("pod %s/%s: unexpected object %T", req.namespace, req.name, e.Object)))
		return nil, false
	}
	return pod, true
}

// logContainer picks the container pods/log reads, with upstream's messages.
func logContainer(pod *corev1.Pod, name string) (string, error) {
	if name == "" {
		if len(pod.Spec.Containers) == 1 {
			return pod.Spec.Containers[0].Name, nil
		}
		names := containerNames(pod.Spec.Containers)
		if len(pod.Spec.InitContainers) > 0 {
			return "", fmt.Errorf("a container name must be specified for pod %s, choose one of: %v or one of the init containers: %v",
				pod.Name, names, containerNames(pod.Spec.InitContainers))
		}
		return "", fmt.Errorf("a container name must be specified for pod %s, choose one of: %v", pod.Name, names)
	}
	for _, cs := range [][]corev1.Container{pod.Spec.Containers, pod.Spec.InitContainers} {
		for _, c := range cs {
			if c.Name == name {
				return name, nil
			}
		}
	}
	for _, c := range pod.Spec.EphemeralContainers {
		if c.Name == name {
			return name, nil
		}
	}
	return "", fmt.Errorf("container %s is not valid for pod %s", name, pod.Name)
}

func containerNames(cs []corev1.Container) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Name
	}
	return out
}

// kubeletAddress is the node's InternalIP and kubelet port.
func (s *Server) kubeletAddress(nodeName string) (string, int32, error) {
	res := s.lookup("", "v1", "nodes")
	if res == nil {
		return "", 0, fmt.Errorf("nodes are not served")
	}
	e, _ := s.cache.Get(s.caches[res], s.key(res, "", nodeName))
	e = s.view(res, e)
	if e == nil {
		return "", 0, fmt.Errorf("node %s not found", nodeName)
	}
	node, ok := e.Object.(*corev1.Node)
	if !ok {
		return "", 0, fmt.Errorf("node %s: unexpected object %T", nodeName, e.Object)
	}
	port := node.Status.DaemonEndpoints.KubeletEndpoint.Port
	if port == 0 {
		port = defaultKubeletPort
	}
	for _, a := range node.Status.Addresses {
		if a.Type == corev1.NodeInternalIP && a.Address != "" {
			return a.Address, port, nil
		}
	}
	return "", 0, fmt.Errorf("node %s has no InternalIP address", nodeName)
}

// kubeletClient is an HTTPS client with the API server's client certificate.
// One client per request, without keep-alives: no connection lingers after
// a log stream.
func (s *Server) kubeletClient() (*http.Client, error) {
	t, err := s.kubeletTransport()
	if err != nil {
		return nil, err
	}
	return &http.Client{Transport: t}, nil
}

// kubeletTransport is the transport of kubeletClient, also used to proxy
// upgraded (SPDY) connections, which it hands over after a 101.
func (s *Server) kubeletTransport() (*http.Transport, error) {
	tc, err := s.kubeletTLSConfig()
	if err != nil {
		return nil, err
	}
	return &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true, Proxy: nil}, nil
}

// kubeletTLSConfig presents the API server's client certificate to kubelets.
// It offers only HTTP/1.1, which SPDY upgrades need.
func (s *Server) kubeletTLSConfig() (*tls.Config, error) {
	if len(s.cfg.KubeletClientCertPEM) == 0 {
		return nil, fmt.Errorf("the API server has no client certificate for kubelets")
	}
	cert, err := tls.X509KeyPair(s.cfg.KubeletClientCertPEM, s.cfg.KubeletClientKeyPEM)
	if err != nil {
		return nil, fmt.Errorf("kubelet client certificate: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true,
		MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}, nil
}

// kubeletError is the Status of a kubelet's error answer.
func kubeletError(code int, message string) *apierrors.StatusError {
	reason := metav1.StatusReasonInternalError
	switch code {
	case http.StatusBadRequest:
		reason = metav1.StatusReasonBadRequest
	case http.StatusNotFound:
		reason = metav1.StatusReasonNotFound
	case http.StatusUnauthorized:
		reason = metav1.StatusReasonUnauthorized
	case http.StatusForbidden:
		reason = metav1.StatusReasonForbidden
	case http.StatusNotImplemented:
		reason = metav1.StatusReasonMethodNotAllowed
	}
	if message == "" {
		message = fmt.Sprintf("the kubelet answered %d", code)
	}
	return &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: int32(code), Reason: reason, Message: message}}
}
