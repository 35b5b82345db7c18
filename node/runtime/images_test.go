package runtime

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// dirImages is an Images backed by plain directories, one layer per image,
// standing in for node/images in these tests.
type dirImages map[string]string

func (d dirImages) Resolve(ref string) (string, []string, *v1.ConfigFile, error) {
	// "<name>-entrypoint" is the same rootfs with an entrypoint and a cmd,
	// for the command/args merge rules.
	base, withEntrypoint := strings.CutSuffix(ref, "-entrypoint")
	dir, ok := d[base]
	if !ok {
		return "", nil, nil, fmt.Errorf("image %q not found", ref)
	}
	sum := sha256.Sum256([]byte(ref))
	cfg := &v1.ConfigFile{OS: "linux", Architecture: "amd64", Config: v1.Config{
		Env: []string{"PATH=/bin", "FROM_IMAGE=yes"}, Cmd: []string{"sh"},
	}}
	if withEntrypoint {
		cfg.Config.Entrypoint, cfg.Config.Cmd = []string{"sh", "-c"}, []string{"exit 5"}
	}
	return "sha256:" + hex.EncodeToString(sum[:]), []string{dir}, cfg, nil
}

var busyboxApplets = []string{
	"sh", "sleep", "cat", "echo", "ls", "id", "hostname", "wget", "httpd", "readlink",
	"true", "false", "ps", "head", "tail", "dd", "env", "mkdir", "touch", "kill", "pwd", "grep", "wc",
}

// makeBusyboxRootfs builds a one-layer rootfs with a static busybox and its
// applet links, plus /etc/passwd and /etc/group for user lookups.
func makeBusyboxRootfs(dir string) error {
	for _, d := range []string{"bin", "etc", "tmp", "proc", "sys", "dev", "root", "www"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	// MkdirTemp made the root 0700; a non-root container user must traverse it.
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	if err := os.Chmod(filepath.Join(dir, "tmp"), 0o1777); err != nil {
		return err
	}
	src, err := os.Open("/bin/busybox")
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(filepath.Join(dir, "bin", "busybox"), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	if err := dst.Close(); err != nil {
		return err
	}
	for _, a := range busyboxApplets {
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", a)); err != nil {
			return err
		}
	}
	files := map[string]string{
		"etc/passwd":     "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\napp:x:1000:1001:app:/:/bin/sh\n",
		"etc/group":      "root:x:0:\nnogroup:x:65534:\napp:x:1001:\n",
		"www/index.html": "hello from the pod\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}
