package kubelet

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// This file runs liveness, readiness and startup probes: one goroutine per
// running container and probe kind (as upstream's probe workers), with the
// timing fields' upstream meaning. Results live in memory per container id:
// a restarted kubelet probes again from scratch, as upstream's does.

type probeKind int

const (
	liveness probeKind = iota
	readiness
	startup
)

func (p probeKind) String() string {
	return [...]string{"Liveness", "Readiness", "Startup"}[p]
}

type probeKey struct {
	containerID string
	kind        probeKind
}

// probeResult is what the probes say about one container.
type probeResult struct {
	ready   bool // readiness succeeded (successThreshold times)
	started bool // startup succeeded
}

func probeOf(c *corev1.Container, kind probeKind) *corev1.Probe {
	switch kind {
	case liveness:
		return c.LivenessProbe
	case readiness:
		return c.ReadinessProbe
	}
	return c.StartupProbe
}

// ensureProbes starts the probe workers of the pod's running containers and
// stops those of containers that no longer run.
func (k *Kubelet) ensureProbes(ctx context.Context, pod *corev1.Pod, st *podState) {
	running := map[string]bool{}
	// Sidecars are probed like the app containers.
	var probed []*corev1.Container
	for i := range pod.Spec.InitContainers {
		if isSidecar(&pod.Spec.InitContainers[i]) {
			probed = append(probed, &pod.Spec.InitContainers[i])
		}
	}
	for i := range pod.Spec.Containers {
		probed = append(probed, &pod.Spec.Containers[i])
	}
	for _, c := range probed {
		cs := st.latest(c.Name)
		if cs == nil || cs.GetState() != runtimeapi.ContainerState_CONTAINER_RUNNING {
			continue
		}
		running[cs.GetId()] = true
		for _, kind := range []probeKind{liveness, readiness, startup} {
			p := probeOf(c, kind)
			if p == nil {
				continue
			}
			key := probeKey{cs.GetId(), kind}
			k.mu.Lock()
			if _, ok := k.probes[key]; !ok {
				wctx, cancel := context.WithCancel(ctx)
				k.probes[key] = probeWorker{uid: pod.UID, cancel: cancel}
				go k.probe(wctx, pod.DeepCopy(), c.DeepCopy(), cs.GetId(), time.Unix(0, cs.GetStartedAt()), st.ip, kind, p)
			}
			k.mu.Unlock()
		}
	}
	k.stopProbes(pod.UID, running)
}

// stopProbes stops the workers of uid's containers not in keep.
func (k *Kubelet) stopProbes(uid types.UID, keep map[string]bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for key, w := range k.probes {
		if w.uid == uid && !keep[key.containerID] {
			w.cancel()
			delete(k.probes, key)
			delete(k.probeResults, key.containerID)
		}
	}
}

type probeWorker struct {
	uid    types.UID
	cancel context.CancelFunc
}

func (k *Kubelet) result(containerID string) probeResult {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.probeResults[containerID]
}

// probe is one probe worker's loop.
func (k *Kubelet) probe(ctx context.Context, pod *corev1.Pod, c *corev1.Container, id string, started time.Time, podIP string, kind probeKind, p *corev1.Probe) {
	period := time.Duration(max(p.PeriodSeconds, 1)) * time.Second
	timeout := time.Duration(max(p.TimeoutSeconds, 1)) * time.Second
	success, failure := max(p.SuccessThreshold, 1), max(p.FailureThreshold, 1)
	if d := time.Until(started.Add(time.Duration(p.InitialDelaySeconds) * time.Second)); d > 0 {
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
	}
	var okRun, failRun int32
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		// Liveness and readiness wait for the startup probe, as upstream.
		if kind == startup || c.StartupProbe == nil || k.result(id).started {
			err := k.runProbe(ctx, pod, c, id, podIP, p, timeout)
			if ctx.Err() != nil {
				return
			}
			if err == nil {
				okRun, failRun = okRun+1, 0
			} else {
				okRun, failRun = 0, failRun+1
				slog.Debug("kubelet probe failed", "pod", pod.Namespace+"/"+pod.Name, "container", c.Name, "probe", kind.String(), "err", err)
				k.event(pod, c.Name, corev1.EventTypeWarning, "Unhealthy", kind.String()+" probe failed: "+err.Error())
			}
			if k.probeOutcome(ctx, pod, c, id, kind, p, okRun >= success, failRun >= failure) {
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// probeOutcome records a probe's verdict and acts on it; it returns true
// when the worker is done (the container is being killed, or started).
func (k *Kubelet) probeOutcome(ctx context.Context, pod *corev1.Pod, c *corev1.Container, id string, kind probeKind, p *corev1.Probe, succeeded, failed bool) bool {
	k.mu.Lock()
	r := k.probeResults[id]
	before := r
	switch {
	case kind == readiness && succeeded:
		r.ready = true
	case kind == readiness && failed:
		r.ready = false
	case kind == startup && succeeded:
		r.started = true
	}
	k.probeResults[id] = r
	k.mu.Unlock()
	if r != before {
		k.enqueue(pod.UID)
	}
	if kind == startup && succeeded {
		return true
	}
	if (kind == liveness || kind == startup) && failed {
		slog.Info("kubelet restarts container after failed probe", "pod", pod.Namespace+"/"+pod.Name, "container", c.Name, "probe", kind.String())
		k.event(pod, c.Name, corev1.EventTypeNormal, "Killing", fmt.Sprintf("Container %s failed %s probe, will be restarted", c.Name, strings.ToLower(kind.String())))
		grace := gracePeriod(pod)
		if p.TerminationGracePeriodSeconds != nil {
			grace = max(*p.TerminationGracePeriodSeconds, minGracePeriod)
		}
		if _, err := k.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: grace}); err != nil && ctx.Err() == nil {
			slog.Warn("kubelet cannot stop container", "container", id, "err", err)
		}
		k.enqueue(pod.UID)
		return true
	}
	return false
}

// runProbe runs one probe attempt; nil is success.
func (k *Kubelet) runProbe(ctx context.Context, pod *corev1.Pod, c *corev1.Container, id, podIP string, p *corev1.Probe, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	host := podIP
	if pod.Spec.HostNetwork || host == "" {
		host = k.nodeIP
	}
	switch {
	case p.Exec != nil:
		resp, err := k.rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: p.Exec.Command, Timeout: int64(timeout / time.Second)})
		if err != nil {
			return err
		}
		if resp.GetExitCode() != 0 {
			return fmt.Errorf("command %q exited with %d: %s", p.Exec.Command, resp.GetExitCode(), resp.GetStdout())
		}
		return nil
	case p.HTTPGet != nil:
		g := p.HTTPGet
		port, err := probePort(c, g.Port)
		if err != nil {
			return err
		}
		if g.Host != "" {
			host = g.Host
		}
		scheme := "http"
		if g.Scheme == corev1.URISchemeHTTPS {
			scheme = "https"
		}
		u := url.URL{Scheme: scheme, Host: net.JoinHostPort(host, strconv.Itoa(port)), Path: g.Path}
		if u.Path == "" {
			u.Path = "/"
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return err
		}
		req.Header.Set("User-Agent", "kube-probe/1.34")
		for _, h := range g.HTTPHeaders {
			if h.Name == "Host" {
				req.Host = h.Value
			} else {
				req.Header.Set(h.Name, h.Value)
			}
		}
		// Upstream's prober skips certificate checks and follows no
		// redirects to other hosts; redirects count as success here.
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("HTTP probe failed with statuscode: %d", resp.StatusCode)
		}
		return nil
	case p.TCPSocket != nil:
		port, err := probePort(c, p.TCPSocket.Port)
		if err != nil {
			return err
		}
		if p.TCPSocket.Host != "" {
			host = p.TCPSocket.Host
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return err
		}
		return conn.Close()
	case p.GRPC != nil:
		conn, err := grpc.NewClient(net.JoinHostPort(host, strconv.Itoa(int(p.GRPC.Port))), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer conn.Close()
		svc := ""
		if p.GRPC.Service != nil {
			svc = *p.GRPC.Service
		}
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil {
			return err
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("service unhealthy (responded with %q)", resp.GetStatus())
		}
		return nil
	}
	return fmt.Errorf("probe has no handler")
}

// probePort resolves a probe's port, by number or by the name of one of
// the container's ports.
func probePort(c *corev1.Container, port intstr.IntOrString) (int, error) {
	if port.Type == intstr.Int {
		return port.IntValue(), nil
	}
	for _, p := range c.Ports {
		if p.Name == port.StrVal {
			return int(p.ContainerPort), nil
		}
	}
	if n, err := strconv.Atoi(port.StrVal); err == nil {
		return n, nil
	}
	return 0, fmt.Errorf("port %q is not a port of container %s", port.StrVal, c.Name)
}

// runHook runs a postStart or preStop handler within timeout.
func (k *Kubelet) runHook(ctx context.Context, pod *corev1.Pod, c *corev1.Container, id, podIP string, h *corev1.LifecycleHandler, timeout time.Duration) error {
	switch {
	case h.Sleep != nil:
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(time.Duration(h.Sleep.Seconds)*time.Second, timeout)):
			return nil
		}
	case h.Exec != nil, h.HTTPGet != nil:
		p := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: h.Exec, HTTPGet: h.HTTPGet}}
		return k.runProbe(ctx, pod, c, id, podIP, p, timeout)
	}
	// tcpSocket handlers are accepted and not run, as upstream.
	return nil
}
