package runtime

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
	utilexec "k8s.io/client-go/util/exec"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// syncBuffer is an output a test polls while a session writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// sizeQueue hands the client's terminal sizes to the executor.
type sizeQueue chan remotecommand.TerminalSize

func (q sizeQueue) Next() *remotecommand.TerminalSize {
	s, ok := <-q
	if !ok {
		return nil
	}
	return &s
}

func stream(t *testing.T, u string, o remotecommand.StreamOptions) error {
	t.Helper()
	parsed, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	ex, err := remotecommand.NewSPDYExecutor(&rest.Config{}, http.MethodPost, parsed)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return ex.StreamWithContext(ctx, o)
}

func exitCode(err error) int {
	var ce utilexec.CodeExitError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return -1
}

func TestStreamingExecAttachPortForward(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cfg := e.podConfig("stream")
	sb := e.runPod(cfg)
	id := e.run(sb, cfg, ctrConfig("main", "sh", "-c", "mkdir /www; echo hello from the pod > /www/index.html; exec httpd -f -p 8080 -h /www"))

	execURL := func(tty, stdin bool, cmd ...string) string {
		t.Helper()
		resp, err := e.rt.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: id, Cmd: cmd, Tty: tty, Stdin: stdin, Stdout: true, Stderr: !tty})
		if err != nil {
			t.Fatalf("Exec %q: %v", cmd, err)
		}
		return resp.Url
	}

	// Stdout, stderr and the exit code.
	var out, errOut bytes.Buffer
	u := execURL(false, false, "sh", "-c", "echo out; echo err >&2; exit 7")
	err := stream(t, u, remotecommand.StreamOptions{Stdout: &out, Stderr: &errOut})
	if exitCode(err) != 7 || out.String() != "out\n" || errOut.String() != "err\n" {
		t.Errorf("exec: err %v, stdout %q, stderr %q", err, out.String(), errOut.String())
	}
	// A command that cannot start is an error of the exec, as upstream's.
	err = stream(t, execURL(false, false, "nosuch"), remotecommand.StreamOptions{Stdout: &out, Stderr: &errOut})
	if err == nil || exitCode(err) != -1 || !strings.Contains(err.Error(), `exec: "nosuch": executable file not found`) {
		t.Errorf("exec of a missing command: %v", err)
	}
	// The URL was single-use.
	if err := stream(t, u, remotecommand.StreamOptions{Stdout: &out}); err == nil {
		t.Error("a used URL served a second session")
	}

	// Stdin's end reaches the command (cat ends).
	out.Reset()
	err = stream(t, execURL(false, true, "cat"), remotecommand.StreamOptions{Stdin: strings.NewReader("piped\n"), Stdout: &out, Stderr: &errOut})
	if err != nil || out.String() != "piped\n" {
		t.Errorf("exec with stdin: err %v, stdout %q", err, out.String())
	}

	// A command that ends without reading stdin ends the session, though
	// the client's stdin stays open.
	out.Reset()
	openR, openW := io.Pipe()
	defer openW.Close()
	err = stream(t, execURL(false, true, "echo", "done"), remotecommand.StreamOptions{Stdin: openR, Stdout: &out, Stderr: &errOut})
	if err != nil || out.String() != "done\n" {
		t.Errorf("exec not reading stdin: err %v, stdout %q", err, out.String())
	}

	// A terminal: the first size applies from the start, resizes follow.
	sizes := make(sizeQueue, 2)
	sizes <- remotecommand.TerminalSize{Width: 100, Height: 40}
	inR, inW := io.Pipe()
	var tout syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- stream(t, execURL(true, true, "sh", "-c", `stty size; while read l; do [ "$l" = q ] && exit 3; stty size; done`),
			remotecommand.StreamOptions{Stdin: inR, Stdout: &tout, Tty: true, TerminalSizeQueue: sizes})
	}()
	eventually(t, 10*time.Second, func() error {
		if !strings.Contains(tout.String(), "40 100") {
			select {
			case err := <-done:
				t.Fatalf("tty exec ended: %v, output %q", err, tout.String())
			default:
			}
			return fmt.Errorf("tty output %q", tout.String())
		}
		return nil
	})
	sizes <- remotecommand.TerminalSize{Width: 120, Height: 50}
	eventually(t, 10*time.Second, func() error {
		if _, err := inW.Write([]byte("x\n")); err != nil {
			return err
		}
		if !strings.Contains(tout.String(), "50 120") {
			return fmt.Errorf("tty output after resize %q", tout.String())
		}
		return nil
	})
	if _, err := inW.Write([]byte("q\n")); err != nil {
		t.Fatal(err)
	}
	if err := <-done; exitCode(err) != 3 {
		t.Errorf("tty exec: %v, want exit code 3", err)
	}
	close(sizes)
	inW.Close()

	// Port-forward to the pod's loopback.
	pf, err := e.rt.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: sb, Port: []int32{8080}})
	if err != nil {
		t.Fatal(err)
	}
	body := portForwardGet(t, pf.Url, 8080, "/index.html")
	if body != "hello from the pod\n" {
		t.Errorf("through port-forward: %q", body)
	}

	// Attach to a container with stdin, and to one without.
	att := ctrConfig("echoer", "sh", "-c", `echo ready; while read l; do echo got $l; done; echo stdin closed`)
	att.Stdin, att.StdinOnce = true, true
	aid := e.run(sb, cfg, att)
	resp, err := e.rt.Attach(ctx, &runtimeapi.AttachRequest{ContainerId: aid, Stdin: true, Stdout: true, Stderr: true})
	if err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := stream(t, resp.Url, remotecommand.StreamOptions{Stdin: strings.NewReader("one\ntwo\n"), Stdout: &out, Stderr: &errOut}); err != nil {
		t.Errorf("attach: %v", err)
	}
	// StdinOnce: the session's stdin end closed the container's, so it
	// ended, and the session with it.
	if got := out.String(); !strings.Contains(got, "got one\ngot two\nstdin closed\n") {
		t.Errorf("attach output %q", got)
	}
	e.waitExited(aid)

	// A tty container (kubectl run -it): attach types into its shell.
	tc := ctrConfig("shell", "sh")
	tc.Stdin, tc.Tty = true, true
	tid := e.run(sb, cfg, tc)
	resp, err = e.rt.Attach(ctx, &runtimeapi.AttachRequest{ContainerId: tid, Stdin: true, Stdout: true, Tty: true})
	if err != nil {
		t.Fatal(err)
	}
	inR, inW = io.Pipe()
	tout = syncBuffer{}
	sizes = make(sizeQueue, 1)
	sizes <- remotecommand.TerminalSize{Width: 91, Height: 33}
	go func() {
		done <- stream(t, resp.Url, remotecommand.StreamOptions{Stdin: inR, Stdout: &tout, Tty: true, TerminalSizeQueue: sizes})
	}()
	eventually(t, 10*time.Second, func() error {
		if _, err := inW.Write([]byte("echo a$((6*7))b; stty size\n")); err != nil {
			return err
		}
		if got := tout.String(); !strings.Contains(got, "a42b") || !strings.Contains(got, "33 91") {
			return fmt.Errorf("tty attach output %q", got)
		}
		return nil
	})
	if _, err := inW.Write([]byte("exit 0\n")); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Errorf("tty attach: %v", err)
	}
	close(sizes)
	if st := e.waitExited(tid); st.ExitCode != 0 {
		t.Errorf("tty container exit code %d", st.ExitCode)
	}
}

// portForwardGet sends one HTTP GET through a port-forward session.
func portForwardGet(t *testing.T, u string, port int, path string) string {
	t.Helper()
	parsed, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	transport, upgrader, err := spdy.RoundTripperFor(&rest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, parsed)
	stop, ready := make(chan struct{}), make(chan struct{})
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", port)}, stop, ready, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	fwDone := make(chan error, 1)
	go func() { fwDone <- fw.ForwardPorts() }()
	defer func() {
		close(stop)
		<-fwDone
	}()
	select {
	case <-ready:
	case err := <-fwDone:
		t.Fatalf("port-forward: %v", err)
	}
	ports, err := fw.GetPorts()
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 10 * time.Second}
	r, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d%s", ports[0].Local, path))
	if err != nil {
		t.Fatalf("GET through port-forward: %v", err)
	}
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
