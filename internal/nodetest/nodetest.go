// Package nodetest holds the host-side support that the node agent's tests
// (node/kubelet, test/e2e) and bench/node share: building the pause image a
// private containerd needs, the configuration that confines such a
// containerd to a temporary directory, and the clean-up of what a node run
// can leave on the host (mounts, cgroup trees, nftables tables). It is not
// a _test package because bench/node, a main program, uses it too; so its
// functions return errors instead of failing a test.
package nodetest

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/nftables"

	"github.com/navarch/navarch/node/images"
)

// PauseImage builds the pause program in pauseDir (node/kubelet/testdata/pause,
// as a path from the caller's working directory) statically and writes it
// into dir as an OCI layout tarball of ref, which ctr imports: a test's
// containerd has no registry to pull registry.k8s.io/pause from.
func PauseImage(pauseDir, dir, ref string) (string, error) {
	bin := filepath.Join(dir, "pause")
	abs, err := filepath.Abs(bin)
	if err != nil {
		return "", err
	}
	build := exec.Command("go", "build", "-o", abs, ".")
	build.Dir = pauseDir
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pauseDir, err, out)
	}
	body, err := os.ReadFile(bin)
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range []string{"dev/", "proc/", "sys/", "etc/"} {
		if err := tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755}); err != nil {
			return "", err
		}
	}
	if err := tw.WriteHeader(&tar.Header{Name: "pause", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(body))}); err != nil {
		return "", err
	}
	if _, err := tw.Write(body); err != nil {
		return "", err
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return "", err
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	im, err := mutate.AppendLayers(base, layer)
	if err != nil {
		return "", err
	}
	cf, err := im.ConfigFile()
	if err != nil {
		return "", err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config = v1.Config{Entrypoint: []string{"/pause"}, WorkingDir: "/"}
	if im, err = mutate.ConfigFile(im, cf); err != nil {
		return "", err
	}
	p := filepath.Join(dir, "pause.tar")
	f, err := os.Create(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if err := images.WriteOCIArchive(f, []images.Named{{Ref: ref, Image: im}}); err != nil {
		return "", fmt.Errorf("write %s: %w", p, err)
	}
	return p, f.Close()
}

// ContainerdConfig is a containerd configuration that keeps everything
// below dir (root, state, runc roots) with its sockets at sock and
// sock+".ttrpc", CRI's sandbox image sandboxImage and CNI configuration
// read from cniDir.
func ContainerdConfig(dir, sock, sandboxImage, cniDir string) string {
	return fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
# Plugins that would write outside the temporary directory or are not used.
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[debug]
  address = ""
[metrics]
  address = ""

# The tasks service needs the v1 runtime loaded, though CRI uses runc.v2.
[plugins."io.containerd.runtime.v1.linux"]
  runtime_root = %[8]q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[5]q
  # containerd gives sandboxes oom_score_adj -998; on this VM runc cannot
  # set a value below its own and fails ("can't get final child's PID from
  # pipe"): keep it no lower than containerd's.
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = %[6]q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %[7]q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc", sandboxImage,
		filepath.Join(dir, "runc"), cniDir, filepath.Join(dir, "runc-v1"))
}

// Mounts lists the mount points below dir.
func Mounts(dir string) []string {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			out = append(out, f[4])
		}
	}
	return out
}

// Unmount detaches every mount below dir, deepest first so that a mount
// on top of another goes before it; it returns the failures.
func Unmount(dir string) []error {
	mounts := Mounts(dir)
	sort.Sort(sort.Reverse(sort.StringSlice(mounts)))
	var errs []error
	for _, m := range mounts {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
		}
	}
	return errs
}

// RemoveCgroupTree removes the cgroup dir and the cgroups below it,
// deepest first; a cgroup that still has processes stays.
func RemoveCgroupTree(dir string) {
	var dirs []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	for _, d := range dirs {
		_ = syscall.Rmdir(d)
	}
}

// NFTTable returns the IPv4 nftables table name, or an error if there is
// none: callers look before a run to know whether the run made it.
func NFTTable(name string) (*nftables.Table, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, err
	}
	return c.ListTableOfFamily(name, nftables.TableFamilyIPv4)
}

// DeleteNFTTable deletes the IPv4 nftables table name.
func DeleteNFTTable(name string) error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	c.DelTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: name})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("delete nftables table %s: %w", name, err)
	}
	return nil
}
