package runtime

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/navarch/navarch/node/streaming"
)

// Attach goes through the container's shim, which alone holds its stdio:
// the shim listens on attachSocket in the container's directory, and each
// connection is one attach session. Both ways the connection carries
// frames of [type byte][length uint32, big-endian][payload]; the client's
// first frame (frameOpen) says which streams it wants (attachStdin,
// attachStdout, attachStderr bits). The shim sends output as it is read
// (before it is cut into log lines) and closes the connections once the
// container has ended and its output is written.

const attachSocket = "attach.sock"

const (
	frameOpen       byte = 'o' // payload: one byte of attach* bits
	frameStdin      byte = '0'
	frameStdout     byte = '1'
	frameStderr     byte = '2'
	frameStdinClose byte = 'c' // the client's stdin ended
	frameResize     byte = 'r' // payload: width, height (uint16 each)
)

const (
	attachStdin  = 1 << 0
	attachStdout = 1 << 1
	attachStderr = 1 << 2
)

// maxFrame bounds a frame's payload (the copies use 32 KiB buffers).
const maxFrame = 1 << 20

func writeFrame(w io.Writer, typ byte, p []byte) error {
	b := make([]byte, 5+len(p))
	b[0] = typ
	binary.BigEndian.PutUint32(b[1:5], uint32(len(p)))
	copy(b[5:], p)
	_, err := w.Write(b)
	return err
}

func readFrame(r io.Reader) (byte, []byte, error) {
	var h [5]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(h[1:])
	if n > maxFrame {
		return 0, nil, fmt.Errorf("attach frame of %d bytes", n)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		return 0, nil, err
	}
	return h[0], p, nil
}

// dialUnixIn connects to the socket name in dir, through /proc/self/fd
// when the full path is longer than a socket address may be.
func dialUnixIn(dir, name string) (net.Conn, error) {
	full := filepath.Join(dir, name)
	if len(full) < 100 {
		return net.Dial("unix", full)
	}
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return net.Dial("unix", "/proc/self/fd/"+strconv.Itoa(int(d.Fd()))+"/"+name)
}

// attachShim runs an attach session against the shim socket in dir.
func attachShim(ctx context.Context, dir string, st streaming.Streams) error {
	conn, err := dialUnixIn(dir, attachSocket)
	if err != nil {
		return fmt.Errorf("attach: the container's shim does not answer (it predates attach, or the container ended): %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	var bits byte
	if st.Stdin != nil {
		bits |= attachStdin
	}
	if st.Stdout != nil {
		bits |= attachStdout
	}
	if st.Stderr != nil {
		bits |= attachStderr
	}
	var wmu sync.Mutex
	send := func(typ byte, p []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		return writeFrame(conn, typ, p)
	}
	if err := send(frameOpen, []byte{bits}); err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	if st.Stdin != nil {
		go func() {
			buf := make([]byte, 32*1024)
			for {
				n, err := st.Stdin.Read(buf)
				if n > 0 && send(frameStdin, buf[:n]) != nil {
					return
				}
				if err != nil {
					_ = send(frameStdinClose, nil)
					return
				}
			}
		}()
	}
	if st.Resize != nil {
		go func() {
			for size := range st.Resize {
				var p [4]byte
				binary.BigEndian.PutUint16(p[0:], size.Width)
				binary.BigEndian.PutUint16(p[2:], size.Height)
				if send(frameResize, p[:]) != nil {
					return
				}
			}
		}()
	}
	for {
		typ, p, err := readFrame(conn)
		if err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("attach: %w", err)
		}
		var w io.Writer
		switch typ {
		case frameStdout:
			w = st.Stdout
		case frameStderr:
			w = st.Stderr
		}
		if w != nil {
			if _, err := w.Write(p); err != nil {
				return nil // the client went away
			}
		}
	}
}

// attachHub is the shim's side: the sessions and the container's stdin.
type attachHub struct {
	mu      sync.Mutex
	clients map[*attachClient]bool
	// stdin is the container's stdin (a pipe, or the pty master); nil when
	// the container has none.
	stdin     io.Writer
	stdinPipe *os.File // closed on stdinOnce; nil for a tty
	stdinOnce bool
	tty       *os.File
	ln        net.Listener
	closed    bool
}

type attachClient struct {
	out            chan []byte // encoded frames
	stdout, stderr bool
}

// serve accepts sessions until close.
func (h *attachHub) serve() {
	for {
		conn, err := h.ln.Accept()
		if err != nil {
			return
		}
		go h.session(conn)
	}
}

func (h *attachHub) session(conn net.Conn) {
	typ, p, err := readFrame(conn)
	if err != nil || typ != frameOpen || len(p) != 1 {
		conn.Close()
		return
	}
	c := &attachClient{out: make(chan []byte, 256), stdout: p[0]&attachStdout != 0, stderr: p[0]&attachStderr != 0}
	withStdin := p[0]&attachStdin != 0
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		conn.Close()
		return
	}
	h.clients[c] = true
	h.mu.Unlock()
	go func() {
		for f := range c.out {
			if _, err := conn.Write(f); err != nil {
				break
			}
		}
		conn.Close()
		for range c.out { // drain until the hub lets go
		}
	}()
	stdinOpen := withStdin
	for {
		typ, p, err := readFrame(conn)
		if err != nil {
			break
		}
		switch typ {
		case frameStdin:
			if stdinOpen {
				h.writeStdin(p)
			}
		case frameStdinClose:
			if stdinOpen {
				stdinOpen = false
				h.stdinEnded()
			}
		case frameResize:
			if len(p) == 4 && h.tty != nil {
				setWinsize(h.tty, streaming.TerminalSize{Width: binary.BigEndian.Uint16(p[0:]), Height: binary.BigEndian.Uint16(p[2:])})
			}
		}
	}
	if stdinOpen {
		h.stdinEnded()
	}
	h.drop(c)
}

func (h *attachHub) writeStdin(p []byte) {
	h.mu.Lock()
	w := h.stdin
	h.mu.Unlock()
	if w != nil {
		_, _ = w.Write(p)
	}
}

// stdinEnded closes the container's stdin after the first session's stdin
// with StdinOnce, as upstream; otherwise stdin stays open for the next.
func (h *attachHub) stdinEnded() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.stdinOnce || h.stdin == nil {
		return
	}
	h.stdin = nil
	if h.stdinPipe != nil {
		h.stdinPipe.Close()
	}
}

func (h *attachHub) drop(c *attachClient) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.clients[c] {
		delete(h.clients, c)
		close(c.out)
	}
}

// tee hands output to the sessions that want it; one that cannot keep up
// is dropped rather than holding back the log.
func (h *attachHub) tee(stream string, p []byte) {
	typ := frameStdout
	if stream == "stderr" {
		typ = frameStderr
	}
	var f []byte
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.clients {
		if (typ == frameStdout && !c.stdout) || (typ == frameStderr && !c.stderr) {
			continue
		}
		if f == nil {
			f = make([]byte, 5+len(p))
			f[0] = typ
			binary.BigEndian.PutUint32(f[1:5], uint32(len(p)))
			copy(f[5:], p)
		}
		select {
		case c.out <- f:
		default:
			delete(h.clients, c)
			close(c.out)
		}
	}
}

// close ends every session (the container has ended) and stops listening.
func (h *attachHub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	_ = h.ln.Close()
	for c := range h.clients {
		delete(h.clients, c)
		close(c.out)
	}
	if h.stdinPipe != nil {
		h.stdinPipe.Close()
	}
}

// setWinsize applies a terminal size to a pty master.
func setWinsize(f *os.File, size streaming.TerminalSize) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: size.Height, Col: size.Width})
	})
}
