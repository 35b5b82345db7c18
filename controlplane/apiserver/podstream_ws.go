package apiserver

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/websocket"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/httpstream/spdy"
	"k8s.io/apimachinery/pkg/util/httpstream/wsstream"
	portforwardconst "k8s.io/apimachinery/pkg/util/portforward"
	remotecommandconst "k8s.io/apimachinery/pkg/util/remotecommand"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/util/exec"
)

// spdyPingPeriod keeps idle SPDY sessions to kubelets alive through NATs
// and idle timeouts, as kubectl's own pings do.
const spdyPingPeriod = 5 * time.Second

// translateStream serves exec and attach over a WebSocket (the v5 and v4
// channel protocols: one leading byte names the stream of each message) by
// opening a SPDY session to the kubelet with client-go's executor and
// copying the streams between the two. The exit status goes back on the
// error channel as a Status, as v4 and v5 clients read it; v5's close
// signal for stdin ends the kubelet's stdin (kubectl cp waits for that EOF).
// A client offering neither protocol fails the handshake (403), so kubectl
// falls back to SPDY.
func (s *Server) translateStream(w http.ResponseWriter, r *http.Request, target *url.URL, opts streamOptions) {
	tc, err := s.kubeletTLSConfig()
	if err != nil {
		writeStatus(w, apierrors.NewInternalError(err))
		return
	}
	rt, err := spdy.NewRoundTripperWithConfig(spdy.RoundTripperConfig{TLS: tc, Proxier: noProxy, PingPeriod: spdyPingPeriod})
	if err != nil {
		writeStatus(w, apierrors.NewInternalError(err))
		return
	}
	executor, err := remotecommand.NewSPDYExecutorForTransports(rt, rt, http.MethodPost, target)
	if err != nil {
		writeStatus(w, apierrors.NewInternalError(err))
		return
	}
	// Unused streams are ignored; the resize stream is read only with a
	// terminal (an unread stream would stall the WebSocket's reader).
	channels := make([]wsstream.ChannelType, remotecommandconst.StreamResize+1)
	use := func(i int, on bool, t wsstream.ChannelType) {
		if on {
			channels[i] = t
		}
	}
	use(remotecommandconst.StreamStdIn, opts.stdin, wsstream.ReadChannel)
	use(remotecommandconst.StreamStdOut, opts.stdout, wsstream.WriteChannel)
	use(remotecommandconst.StreamStdErr, opts.stderr && !opts.tty, wsstream.WriteChannel)
	use(remotecommandconst.StreamErr, true, wsstream.WriteChannel)
	use(remotecommandconst.StreamResize, opts.tty, wsstream.ReadChannel)
	proto := wsstream.ChannelProtocolConfig{Binary: true, Channels: channels}
	conn := wsstream.NewConn(map[string]wsstream.ChannelProtocolConfig{
		remotecommandconst.StreamProtocolV5Name: proto,
		remotecommandconst.StreamProtocolV4Name: proto,
	})
	hijacker, ok := w.(http.Hijacker)
	if !ok {
		writeStatus(w, apierrors.NewBadRequest("a WebSocket needs an HTTP/1.1 connection"))
		return
	}
	// The kubelet session ends when the client goes away, so that an
	// abandoned shell does not keep running.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	_, streams, err := conn.Open(&streamWriter{ResponseWriter: w, hijacker: hijacker, gone: cancel}, r)
	if err != nil {
		// The handshake failed and was answered.
		return
	}
	defer conn.Close()
	so := remotecommand.StreamOptions{Tty: opts.tty}
	if opts.stdin {
		so.Stdin = streams[remotecommandconst.StreamStdIn]
	}
	if opts.stdout {
		so.Stdout = streams[remotecommandconst.StreamStdOut]
	}
	if opts.stderr && !opts.tty {
		so.Stderr = streams[remotecommandconst.StreamStdErr]
	}
	if opts.tty {
		so.TerminalSizeQueue = &resizeQueue{dec: json.NewDecoder(streams[remotecommandconst.StreamResize])}
	}
	err = executor.StreamWithContext(ctx, so)
	if err != nil {
		slog.Debug("websocket stream ended", "target", target.Path, "err", err)
	}
	b, merr := json.Marshal(streamStatus(err))
	if merr != nil {
		return
	}
	_, _ = streams[remotecommandconst.StreamErr].Write(b)
}

// streamStatus is the Status of a finished stream on the error channel.
func streamStatus(err error) metav1.Status {
	tm := metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}
	var exitErr exec.ExitError
	switch {
	case err == nil:
		return metav1.Status{TypeMeta: tm, Status: metav1.StatusSuccess}
	case errors.As(err, &exitErr) && exitErr.Exited():
		return metav1.Status{TypeMeta: tm, Status: metav1.StatusFailure,
			Reason:  remotecommandconst.NonZeroExitCodeReason,
			Message: fmt.Sprintf("command terminated with non-zero exit code: %v", err),
			Details: &metav1.StatusDetails{Causes: []metav1.StatusCause{
				{Type: remotecommandconst.ExitCodeCauseType, Message: strconv.Itoa(exitErr.ExitStatus())}}}}
	default:
		st := apierrors.NewInternalError(err).Status()
		st.TypeMeta = tm
		return st
	}
}

// resizeQueue reads the terminal sizes a WebSocket client sends (JSON, one
// per message) for the executor; nil ends the resizing when the stream ends.
type resizeQueue struct{ dec *json.Decoder }

func (q *resizeQueue) Next() *remotecommand.TerminalSize {
	var size remotecommand.TerminalSize
	if err := q.dec.Decode(&size); err != nil {
		return nil
	}
	return &size
}

// streamWriter hands the WebSocket server a hijacked connection that reads
// through streamConn rather than net/http's buffered reader, so that the
// end of the WebSocket is seen here.
type streamWriter struct {
	http.ResponseWriter
	hijacker http.Hijacker
	gone     func()
}

func (w *streamWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := w.hijacker.Hijack()
	if err != nil {
		return nil, nil, err
	}
	sc := &streamConn{Conn: c, gone: w.gone}
	// Bytes the HTTP server read ahead come first.
	ahead, _ := rw.Reader.Peek(rw.Reader.Buffered())
	r := bufio.NewReader(io.MultiReader(bytes.NewReader(bytes.Clone(ahead)), sc))
	return sc, bufio.NewReadWriter(r, bufio.NewWriter(sc)), nil
}

// streamConn reports a failed read (the client went away) through gone,
// and makes reads after its own Close a plain EOF, which wsstream's reader
// takes as the end rather than logging an error for every stream.
type streamConn struct {
	net.Conn
	gone   func()
	closed atomic.Bool
}

func (c *streamConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.gone()
		if c.closed.Load() {
			err = io.EOF
		}
	}
	return n, err
}

func (c *streamConn) Close() error {
	c.closed.Store(true)
	return c.Conn.Close()
}

func noProxy(*http.Request) (*url.URL, error) { return nil, nil }

// tunnelProtocol is the WebSocket subprotocol of port-forward (kubectl
// 1.31+): the SPDY session runs inside binary WebSocket messages.
const tunnelProtocol = portforwardconst.WebsocketsSPDYTunnelingPortForwardV1

// tunnelPortForward serves port-forward over a WebSocket: it opens a SPDY
// upgrade to the kubelet first (so that the kubelet's refusal reaches the
// client as a Status), then accepts the WebSocket and copies bytes: the
// payload of each message one way, the upgraded connection's reads as
// messages the other way. The SPDY frames are the client's and the kubelet's.
func (s *Server) tunnelPortForward(w http.ResponseWriter, r *http.Request, target *url.URL) {
	if !offersProtocol(r, tunnelProtocol) {
		writeStatus(w, apierrors.NewBadRequest(fmt.Sprintf("port-forward over a WebSocket needs the subprotocol %s", tunnelProtocol)))
		return
	}
	if _, ok := w.(http.Hijacker); !ok {
		writeStatus(w, apierrors.NewBadRequest("a WebSocket needs an HTTP/1.1 connection"))
		return
	}
	t, err := s.kubeletTransport()
	if err != nil {
		writeStatus(w, apierrors.NewInternalError(err))
		return
	}
	kreq, err := http.NewRequestWithContext(r.Context(), http.MethodPost, target.String(), nil)
	if err != nil {
		writeStatus(w, apierrors.NewInternalError(err))
		return
	}
	kreq.Header.Set("Connection", "Upgrade")
	kreq.Header.Set("Upgrade", "SPDY/3.1")
	kreq.Header.Set("X-Stream-Protocol-Version", portforwardconst.PortForwardV1Name)
	resp, err := t.RoundTrip(kreq)
	if err != nil {
		writeStatus(w, kubeletError(http.StatusInternalServerError, fmt.Sprintf("error dialing backend: %v", err)))
		return
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		writeStatus(w, kubeletError(resp.StatusCode, strings.TrimSpace(string(body))))
		return
	}
	backend, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		resp.Body.Close()
		writeStatus(w, apierrors.NewInternalError(fmt.Errorf("kubelet upgrade of %s is not writable", target.Path)))
		return
	}
	defer backend.Close()
	websocket.Server{
		Handshake: func(cfg *websocket.Config, _ *http.Request) error {
			cfg.Protocol = []string{tunnelProtocol}
			return nil
		},
		Handler: func(ws *websocket.Conn) {
			ws.PayloadType = websocket.BinaryFrame
			done := make(chan struct{}, 2)
			go func() { _, _ = io.Copy(backend, ws); done <- struct{}{} }()
			go func() { _, _ = io.Copy(ws, backend); done <- struct{}{} }()
			<-done
			// Either side ending ends both.
			ws.Close()
			backend.Close()
			<-done
		},
	}.ServeHTTP(w, r)
}

// offersProtocol reports whether the WebSocket request offers subprotocol p.
func offersProtocol(r *http.Request, p string) bool {
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, offered := range strings.Split(h, ",") {
			if strings.TrimSpace(offered) == p {
				return true
			}
		}
	}
	return false
}
