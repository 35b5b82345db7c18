package streaming

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// portForwardProtocol is the one SPDY port-forward subprotocol.
const portForwardProtocol = "portforward.k8s.io"

// streamPair is one forwarded connection: its error and data streams.
type streamPair struct {
	port       int32
	data, errs streamAndReply
	timer      *time.Timer
}

// portForward serves a port-forward session: every error and data stream
// pair the client opens is one connection to a port of the sandbox. The
// session lasts until the client closes it.
func (s *Server) portForward(w http.ResponseWriter, r *http.Request, req *runtimeapi.PortForwardRequest) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	pairs := map[string]*streamPair{}
	onStream := func(st streamAndReply) error {
		h := st.Headers()
		id, typ := h.Get(corev1.PortForwardRequestIDHeader), h.Get(corev1.StreamType)
		port, err := strconv.ParseUint(h.Get(corev1.PortHeader), 10, 16)
		switch {
		case id == "":
			return fmt.Errorf("%q header is required", corev1.PortForwardRequestIDHeader)
		case err != nil || port == 0:
			return fmt.Errorf("invalid port %q", h.Get(corev1.PortHeader))
		case typ != corev1.StreamTypeError && typ != corev1.StreamTypeData:
			return fmt.Errorf("invalid stream type %q", typ)
		}
		mu.Lock()
		defer mu.Unlock()
		p := pairs[id]
		if p == nil {
			p = &streamPair{port: int32(port)}
			pairs[id] = p
			// A half of a pair whose other half never comes is dropped.
			p.timer = time.AfterFunc(s.cfg.StreamCreationTimeout, func() {
				mu.Lock()
				defer mu.Unlock()
				if pairs[id] == p {
					delete(pairs, id)
					for _, half := range []streamAndReply{p.data, p.errs} {
						if half.Stream != nil {
							_ = half.Reset()
						}
					}
				}
			})
		}
		half := &p.data
		if typ == corev1.StreamTypeError {
			half = &p.errs
		}
		if half.Stream != nil {
			return fmt.Errorf("request %s has a second %s stream", id, typ)
		}
		*half = st
		if p.data.Stream != nil && p.errs.Stream != nil {
			p.timer.Stop()
			delete(pairs, id)
			go s.forward(ctx, req.GetPodSandboxId(), p)
		}
		return nil
	}
	conn, _, ok := upgrade(w, r, []string{portForwardProtocol}, onStream)
	if !ok {
		return
	}
	defer conn.Close()
	if s.track(conn) {
		<-conn.CloseChan()
	}
}

// forward runs one connection; a failure is reported on its error stream,
// which is closed at the end either way (the client waits for that).
func (s *Server) forward(ctx context.Context, sandboxID string, p *streamPair) {
	<-p.data.replySent
	<-p.errs.replySent
	if err := s.rt.PortForward(ctx, sandboxID, p.port, p.data); err != nil {
		slog.Debug("streaming port forward failed", "sandbox", sandboxID, "port", p.port, "err", err)
		fmt.Fprintf(p.errs, "error forwarding port %d to pod %s: %v", p.port, sandboxID, err)
	}
	_ = p.data.Close()
	_ = p.errs.Close()
}
