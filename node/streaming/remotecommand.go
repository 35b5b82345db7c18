package streaming

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/apimachinery/pkg/util/httpstream/spdy"
	"k8s.io/apimachinery/pkg/util/remotecommand"
)

// remoteCommandProtocols are the exec and attach subprotocols spoken over
// SPDY, newest first: v4 reports the exit status as a metav1.Status, v3
// added the resize stream, v2 and v1 report errors as text.
var remoteCommandProtocols = []string{
	remotecommand.StreamProtocolV4Name, remotecommand.StreamProtocolV3Name,
	remotecommand.StreamProtocolV2Name, remotecommand.StreamProtocolV1Name,
}

// idleTimeout ends a session on which nothing moved for this long, as
// upstream's default streaming-connection-idle-timeout.
const idleTimeout = 4 * time.Hour

// opts are the channels a request asked for.
type opts struct{ stdin, stdout, stderr, tty bool }

type streamAndReply struct {
	httpstream.Stream
	replySent <-chan struct{}
}

// upgrade negotiates one of protocols and upgrades to SPDY, handing each
// stream the client opens to onStream (which must not block). It answers
// the client itself when it fails.
func upgrade(w http.ResponseWriter, r *http.Request, protocols []string, onStream func(streamAndReply) error) (httpstream.Connection, string, bool) {
	if r.Header.Get(httpstream.HeaderProtocolVersion) == "" {
		http.Error(w, fmt.Sprintf("unable to upgrade: %s is required", httpstream.HeaderProtocolVersion), http.StatusBadRequest)
		return nil, "", false
	}
	protocol, err := httpstream.Handshake(r, w, protocols)
	if err != nil {
		return nil, "", false // Handshake answered 403 with the protocols it accepts
	}
	conn := spdy.NewResponseUpgrader().UpgradeResponse(w, r, func(s httpstream.Stream, replySent <-chan struct{}) error {
		return onStream(streamAndReply{Stream: s, replySent: replySent})
	})
	if conn == nil {
		return nil, "", false // UpgradeResponse answered
	}
	conn.SetIdleTimeout(idleTimeout)
	return conn, protocol, true
}

// serveRemoteCommand runs an exec or attach session: it upgrades, waits for
// the streams o calls for, runs run, and reports how it ended on the error
// stream in the negotiated protocol's form.
func (s *Server) serveRemoteCommand(w http.ResponseWriter, r *http.Request, o opts, run func(context.Context, Streams) error) {
	// Five streams at most are wanted; a client opening more gets them
	// refused rather than blocking the connection's frame loop.
	arrived := make(chan streamAndReply, 8)
	conn, protocol, ok := upgrade(w, r, remoteCommandProtocols, func(s streamAndReply) error {
		select {
		case arrived <- s:
			return nil
		default:
			return errors.New("too many streams")
		}
	})
	if !ok {
		return
	}
	defer conn.Close()
	if !s.track(conn) {
		return
	}

	resizable := protocol != remotecommand.StreamProtocolV1Name && protocol != remotecommand.StreamProtocolV2Name
	want := 1 // the error stream
	for _, b := range []bool{o.stdin, o.stdout, o.stderr && !o.tty, o.tty && resizable} {
		if b {
			want++
		}
	}
	var errStream, stdin, stdout, stderr, resize httpstream.Stream
	var replies []<-chan struct{}
	timeout := time.NewTimer(s.cfg.StreamCreationTimeout)
	defer timeout.Stop()
	for got := 0; got < want; {
		select {
		case st := <-arrived:
			typ := st.Headers().Get(corev1.StreamType)
			slot := map[string]*httpstream.Stream{corev1.StreamTypeError: &errStream, corev1.StreamTypeStdin: &stdin,
				corev1.StreamTypeStdout: &stdout, corev1.StreamTypeStderr: &stderr, corev1.StreamTypeResize: &resize}[typ]
			if slot == nil || *slot != nil {
				slog.Debug("streaming ignores stream", "type", typ)
				_ = st.Reset()
				continue
			}
			*slot = st.Stream
			replies = append(replies, st.replySent)
			got++
		case <-timeout.C:
			slog.Debug("streaming client opened too few streams", "want", want)
			return
		case <-conn.CloseChan():
			return
		}
	}
	for _, sent := range replies {
		<-sent
	}
	if errStream == nil {
		return // the client asked for streams it did not open
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-conn.CloseChan():
			cancel()
		case <-ctx.Done():
		}
	}()
	st := Streams{Tty: o.tty}
	if stdin != nil {
		st.Stdin = stdin
	}
	if stdout != nil {
		st.Stdout = stdout
	}
	if stderr != nil {
		st.Stderr = stderr
	}
	if resize != nil {
		ch := make(chan TerminalSize, 1)
		st.Resize = ch
		go func() {
			defer close(ch)
			dec := json.NewDecoder(resize)
			for {
				var size TerminalSize
				if err := dec.Decode(&size); err != nil {
					return
				}
				select {
				case ch <- size:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	err := run(ctx, st)
	for _, out := range []httpstream.Stream{stdout, stderr} {
		if out != nil {
			_ = out.Close()
		}
	}
	if msg := statusMessage(protocol, err); msg != nil {
		_, _ = errStream.Write(msg)
	}
	_ = errStream.Close()
}

// statusMessage is what the error stream carries for err: a metav1.Status
// in v4, the error's text before (nothing for success).
func statusMessage(protocol string, err error) []byte {
	var exit ExitError
	if protocol != remotecommand.StreamProtocolV4Name {
		if err == nil {
			return nil
		}
		return []byte(err.Error())
	}
	st := metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusSuccess}
	switch {
	case err == nil:
	case errors.As(err, &exit):
		st.Status, st.Reason, st.Message = metav1.StatusFailure, remotecommand.NonZeroExitCodeReason, exit.Error()
		st.Details = &metav1.StatusDetails{Causes: []metav1.StatusCause{{Type: remotecommand.ExitCodeCauseType, Message: strconv.Itoa(exit.Code)}}}
	default:
		st.Status, st.Reason, st.Code, st.Message = metav1.StatusFailure, metav1.StatusReasonInternalError, http.StatusInternalServerError, err.Error()
	}
	b, _ := json.Marshal(&st)
	return b
}
