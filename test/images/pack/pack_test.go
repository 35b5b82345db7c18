package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/navarch/navarch/node/images"
)

// buildTestserver builds the test server as make images does.
func buildTestserver(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "testserver")
	cmd := exec.Command("go", "build", "-o", bin, "../testserver")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build testserver: %v\n%s", err, out)
	}
	return bin
}

func TestPackImportsAndRuns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("unpacking image layers needs root")
	}
	busybox := "/bin/busybox"
	if _, err := os.Stat(busybox); err != nil {
		t.Skip("no /bin/busybox (install busybox-static)")
	}
	out := t.TempDir()
	if err := pack(out, buildTestserver(t), busybox); err != nil {
		t.Fatal(err)
	}
	store, err := images.Open(filepath.Join(t.TempDir(), "images"))
	if err != nil {
		t.Fatal(err)
	}
	for file, ref := range map[string]string{"testserver.tar": TestserverRef, "busybox.tar": BusyboxRef} {
		refs, err := store.ImportFile(filepath.Join(out, file))
		if err != nil || len(refs) != 1 || refs[0] != ref {
			t.Fatalf("import %s = %v, %v; want [%s]", file, refs, err, ref)
		}
	}

	_, layers, cfg, err := store.Resolve(TestserverRef)
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 || len(cfg.Config.Entrypoint) != 1 || cfg.Config.Entrypoint[0] != "/testserver" {
		t.Fatalf("testserver image: layers %v, config %+v", layers, cfg.Config)
	}
	if fi, err := os.Stat(filepath.Join(layers[0], "testserver")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("/testserver: %v, %v", fi, err)
	}
	if fi, err := os.Stat(filepath.Join(layers[0], "tmp")); err != nil || fi.Mode()&os.ModeSticky == 0 {
		t.Errorf("/tmp is not sticky: %v, %v", fi, err)
	}
	// The binary runs from its layer alone: it is static.
	code, output := chrootRun(t, layers[0], "/testserver", "-addr", "127.0.0.1:0", "-exit-code", "4", "-exit-after", "100ms")
	if code != 4 || !strings.Contains(output, "listening on 127.0.0.1:") {
		t.Errorf("testserver in its image: exit %d, output %q", code, output)
	}

	_, layers, cfg, err = store.Resolve(BusyboxRef)
	if err != nil {
		t.Fatal(err)
	}
	if target, err := os.Readlink(filepath.Join(layers[0], "bin", "sh")); err != nil || target != "/bin/busybox" {
		t.Fatalf("/bin/sh -> %q, %v", target, err)
	}
	if len(cfg.Config.Cmd) != 1 || cfg.Config.Cmd[0] != "sh" {
		t.Errorf("busybox config: %+v", cfg.Config)
	}
	code, output = chrootRun(t, layers[0], "/bin/sh", "-c", "echo hello from $(cat /etc/passwd | head -1 | cut -d: -f1); ls /bin/busybox")
	if code != 0 || output != "hello from root\n/bin/busybox\n" {
		t.Errorf("sh in the busybox image: exit %d, output %q", code, output)
	}

}

func TestPackIsReproducible(t *testing.T) {
	server := buildTestserver(t)
	a, b := t.TempDir(), t.TempDir()
	for _, out := range []string{a, b} {
		if err := pack(out, server, ""); err != nil {
			t.Fatal(err)
		}
	}
	x, _ := os.ReadFile(filepath.Join(a, "testserver.tar"))
	y, _ := os.ReadFile(filepath.Join(b, "testserver.tar"))
	if len(x) == 0 || !bytes.Equal(x, y) {
		t.Errorf("two packs of the same binary differ (%d and %d bytes)", len(x), len(y))
	}
}

func TestPackRefusesDynamicBinaries(t *testing.T) {
	dynamic := "/bin/ls"
	if _, err := os.Stat(dynamic); err != nil {
		t.Skip("no /bin/ls")
	}
	err := pack(t.TempDir(), dynamic, "")
	if err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("pack of a dynamic binary: %v", err)
	}
}

// chrootRun runs a command with root as its root directory.
func chrootRun(t *testing.T, root string, name string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/bin:/usr/bin:/sbin:/usr/sbin"}
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return 0, string(out)
}
