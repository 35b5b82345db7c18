package streaming

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/util/remotecommand"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	clientremotecommand "k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
	utilexec "k8s.io/client-go/util/exec"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// fakeRuntime echoes stdin to stdout in upper case, writes the command to
// stderr and exits with len(cmd); port-forward answers "<port>:" and the
// data in upper case.
type fakeRuntime struct{}

func (fakeRuntime) Exec(ctx context.Context, id string, cmd []string, s Streams) error {
	if s.Stderr != nil {
		fmt.Fprint(s.Stderr, strings.Join(cmd, " "))
	}
	if s.Stdin != nil && s.Stdout != nil {
		b, _ := io.ReadAll(s.Stdin)
		_, _ = s.Stdout.Write(bytes.ToUpper(b))
	}
	if len(cmd) == 1 {
		return nil
	}
	return ExitError{Code: len(cmd)}
}

func (fakeRuntime) Attach(ctx context.Context, id string, s Streams) error {
	return errors.New("attach is not faked")
}

func (fakeRuntime) PortForward(ctx context.Context, sandbox string, port int32, stream io.ReadWriteCloser) error {
	b := make([]byte, 64)
	n, err := stream.Read(b)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stream, "%d:%s", port, bytes.ToUpper(b[:n]))
	return err
}

func startServer(t *testing.T, cfg Config) *Server {
	s, err := New(cfg, fakeRuntime{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return s
}

func execSession(u string, stdin string, protocols ...string) (string, string, error) {
	parsed, err := url.Parse(u)
	if err != nil {
		return "", "", err
	}
	tr, up, err := spdy.RoundTripperFor(&rest.Config{})
	if err != nil {
		return "", "", err
	}
	if len(protocols) == 0 {
		protocols = remotecommand.SupportedStreamingProtocols
	}
	ex, err := clientremotecommand.NewSPDYExecutorForProtocols(tr, up, http.MethodPost, parsed, protocols...)
	if err != nil {
		return "", "", err
	}
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = ex.StreamWithContext(ctx, clientremotecommand.StreamOptions{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errOut})
	return out.String(), errOut.String(), err
}

func TestExecProtocols(t *testing.T) {
	s := startServer(t, Config{})
	url := func(cmd ...string) string {
		r, err := s.GetExec(&runtimeapi.ExecRequest{ContainerId: "c", Cmd: cmd, Stdin: true, Stdout: true, Stderr: true})
		if err != nil {
			t.Fatal(err)
		}
		return r.Url
	}
	// v4: the exit code arrives as a Status kubectl turns into its own.
	out, errOut, err := execSession(url("a", "b", "c"), "hello")
	var ce utilexec.CodeExitError
	if !errors.As(err, &ce) || ce.Code != 3 || out != "HELLO" || errOut != "a b c" {
		t.Errorf("v4: %v, %q, %q", err, out, errOut)
	}
	if _, _, err := execSession(url("ok"), ""); err != nil {
		t.Errorf("v4 success: %v", err)
	}
	// v2: errors are text.
	_, _, err = execSession(url("a", "b"), "", remotecommand.StreamProtocolV2Name)
	if err == nil || !strings.Contains(err.Error(), "command terminated with non-zero exit code: 2") {
		t.Errorf("v2: %v", err)
	}
	// A protocol the server does not speak is refused before the upgrade.
	if _, _, err := execSession(url("x"), "", "v9.channel.k8s.io"); err == nil {
		t.Error("an unknown protocol was accepted")
	}
}

func TestTokens(t *testing.T) {
	s := startServer(t, Config{TokenTTL: time.Nanosecond})
	r, err := s.GetExec(&runtimeapi.ExecRequest{ContainerId: "c", Cmd: []string{"x"}, Stdout: true})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(r.Url, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("expired token: %s, want 404", resp.Status)
	}
	for _, req := range []*runtimeapi.ExecRequest{
		{ContainerId: "c", Stdout: true},
		{ContainerId: "c", Cmd: []string{"x"}},
		{ContainerId: "c", Cmd: []string{"x"}, Stdout: true, Stderr: true, Tty: true},
	} {
		if _, err := s.GetExec(req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("GetExec(%v): %v, want InvalidArgument", req, err)
		}
	}
}

func TestPortForwardPairs(t *testing.T) {
	s := startServer(t, Config{})
	r, err := s.GetPortForward(&runtimeapi.PortForwardRequest{PodSandboxId: "sb"})
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(r.Url)
	tr, up, err := spdy.RoundTripperFor(&rest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	dialer := spdy.NewDialer(up, &http.Client{Transport: tr}, http.MethodPost, u)
	stop, ready := make(chan struct{}), make(chan struct{})
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{"0:80"}, stop, ready, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- fw.ForwardPorts() }()
	defer func() { close(stop); <-done }()
	<-ready
	ports, err := fw.GetPorts()
	if err != nil {
		t.Fatal(err)
	}
	// Two connections on one session, each its own stream pair.
	for i := range 2 {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", ports[0].Local))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "hi %d", i)
		b, err := io.ReadAll(c)
		c.Close()
		if want := fmt.Sprintf("80:HI %d", i); err != nil || string(b) != want {
			t.Errorf("connection %d: %q, %v; want %q", i, b, err, want)
		}
	}
}
